//! The client's request body as the stack sees it: hyper's body with its
//! errors typed as the client's fault ([`ClientBodyError`]: 400 or 408,
//! VALIDATION, never a 502 blamed on the upstream) and an idle timeout for
//! bodies that stop arriving.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use filters::classify::{ClientBodyError, ClientBodyErrorKind};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// A request body from a client.
pub struct ClientBody<B> {
    inner: B,
    /// Where the body says how it failed, for a reader that gets its error
    /// back only as a stream reset (hyper's HTTP/2 client).
    failure: Option<BodyFailure>,
    /// `None`: the body may pause for as long as it likes.
    idle_timeout: Option<Duration>,
    /// Created the first time the body makes the reader wait, so bodies that
    /// arrive whole (nearly all) never touch the timer wheel.
    idle: Option<Pin<Box<Sleep>>>,
}

/// How a client's request body failed, once it has: shared between the
/// body and the request's extensions. hyper's HTTP/2 client keeps a request
/// body's error to itself and fails the call with the stream reset it sent,
/// so the forwarder reads the cause here.
#[derive(Clone, Debug, Default)]
pub struct BodyFailure(Arc<OnceLock<ClientBodyErrorKind>>);

// === impl BodyFailure ===

impl BodyFailure {
    /// How the body failed, if it has.
    pub fn get(&self) -> Option<ClientBodyErrorKind> {
        self.0.get().copied()
    }

    fn set(&self, kind: ClientBodyErrorKind) -> filters::Error {
        let _ = self.0.set(kind);
        ClientBodyError { kind }.into()
    }
}

// === impl ClientBody ===

impl<B> ClientBody<B> {
    /// Wraps `inner`; a wait for data longer than `idle_timeout` fails the
    /// body (`None`: never).
    pub fn new(inner: B, idle_timeout: Option<Duration>) -> Self {
        Self {
            inner,
            failure: None,
            idle_timeout,
            idle: None,
        }
    }

    /// Also records how the body fails in `failure`.
    pub fn reporting(mut self, failure: BodyFailure) -> Self {
        self.failure = Some(failure);
        self
    }

    fn fail(&self, kind: ClientBodyErrorKind) -> filters::Error {
        match &self.failure {
            Some(failure) => failure.set(kind),
            None => ClientBodyError { kind }.into(),
        }
    }
}

impl<B> Body for ClientBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Data = Bytes;
    type Error = filters::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let (Some(idle), Some(timeout)) = (&mut this.idle, this.idle_timeout) {
                    idle.as_mut().reset(Instant::now() + timeout);
                }
                Poll::Ready(frame.map(|f| {
                    f.map_err(|e| {
                        tracing::debug!(error = %e, "request body from the client failed");
                        this.fail(ClientBodyErrorKind::Framing)
                    })
                }))
            }
            Poll::Pending => {
                let Some(timeout) = this.idle_timeout else {
                    return Poll::Pending;
                };
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(idle.as_mut().poll(cx));
                Poll::Ready(Some(Err(this.fail(ClientBodyErrorKind::Idle(timeout)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_fails_with_idle() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        tx.send(Ok(Frame::data(Bytes::from_static(b"part"))))
            .await
            .unwrap();
        let stream = tokio_stream_from(rx);
        let mut body = ClientBody::new(StreamBody::new(stream), Some(Duration::from_secs(30)));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "part");
        let err = body.frame().await.unwrap().unwrap_err();
        let err = err.downcast_ref::<ClientBodyError>().unwrap();
        assert_eq!(err.kind, ClientBodyErrorKind::Idle(Duration::from_secs(30)));
        drop(tx);
    }

    #[tokio::test]
    async fn body_errors_are_the_clients_fault() {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ok"))),
            Err(std::io::Error::other("bad chunk size")),
        ];
        let stream = futures_util::stream::iter(frames);
        let mut body = ClientBody::new(StreamBody::new(stream), Some(Duration::from_secs(30)));
        assert!(body.frame().await.unwrap().is_ok());
        let err = body.frame().await.unwrap().unwrap_err();
        let classified = filters::classify::classify_error(&*err);
        assert_eq!(classified.status, http::StatusCode::BAD_REQUEST);
        assert_eq!(
            classified.failure.category,
            filters::classify::FailureCategory::Validation
        );
    }

    fn tokio_stream_from<T>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
