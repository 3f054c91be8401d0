//! Whether the upstream takes the request body. The response-head timeout
//! starts once the body is sent; an upstream that never reads it would keep
//! the request waiting forever, so the time it leaves a handed-over chunk
//! untaken is bounded by the same limit.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use filters::HttpBody;
use http_body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::connect::CaptureConnection;
use tokio::time::Instant;

/// Shared by the watched body and the request waiting on it.
pub(super) struct BodyTaken {
    started: Instant,
    /// Milliseconds from `started` (plus one) when a chunk was handed to the
    /// upstream connection that has not asked for the next one since; 0
    /// while the body is waiting on the client (its own idle timeout).
    handed_at: AtomicU64,
}

/// The request body, telling [`BodyTaken`] when the connection asks for more.
pub(super) struct Watched {
    inner: HttpBody,
    taken: Arc<BodyTaken>,
}

impl BodyTaken {
    /// Wraps `body`; the returned watch resolves through [`Self::stalled`].
    pub(super) fn watch(body: HttpBody) -> (Watched, Arc<Self>) {
        let taken = Arc::new(Self {
            started: Instant::now(),
            handed_at: AtomicU64::new(0),
        });
        let body = Watched {
            inner: body,
            taken: taken.clone(),
        };
        (body, taken)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Resolves once a chunk has stayed untaken for `limit`.
    pub(super) async fn stalled(&self, limit: Duration) {
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        loop {
            let handed = self.handed_at.load(Ordering::Acquire);
            let wait = if handed == 0 {
                limit_ms
            } else {
                let since = self.now_ms().saturating_sub(handed - 1);
                if since >= limit_ms {
                    return;
                }
                limit_ms - since
            };
            tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
        }
    }
}

/// The handle that closes the HTTP/1 connection `captured` holds; `None`
/// for HTTP/2, where dropping the request resets only its stream.
pub(super) fn http1_abort(
    captured: Option<&CaptureConnection>,
) -> Option<crate::connect::UpstreamAbort> {
    let metadata = captured?.connection_metadata();
    let connected = metadata.as_ref()?;
    if connected.is_negotiated_h2() {
        return None;
    }
    let mut extensions = http::Extensions::new();
    connected.get_extras(&mut extensions);
    extensions.get::<crate::connect::UpstreamAbort>().cloned()
}

impl Body for Watched {
    type Data = bytes::Bytes;
    type Error = filters::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.taken.handed_at.store(0, Ordering::Release);
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            let now = self.taken.now_ms().saturating_add(1);
            self.taken.handed_at.store(now, Ordering::Release);
        }
        polled
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
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_chunk_left_untaken_is_a_stall_a_slow_client_is_not() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<bytes::Bytes>, filters::Error>>(1);
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        });
        let inner = http_body_util::StreamBody::new(frames);
        let (mut body, taken) = BodyTaken::watch(inner.boxed_unsync());
        let limit = Duration::from_secs(1);
        // Waiting on the client: never a stall.
        let waiting = tokio::time::timeout(Duration::from_secs(5), taken.stalled(limit));
        let next = body.frame();
        tokio::pin!(next);
        tokio::select! {
            _ = &mut next => panic!("no frame was sent"),
            r = waiting => assert!(r.is_err(), "waiting on the client is not a stall"),
        }
        tx.send(Ok(Frame::data(bytes::Bytes::from_static(b"x"))))
            .await
            .unwrap();
        assert!(next.await.is_some());
        // Handed over and not asked for again.
        let started = Instant::now();
        taken.stalled(limit).await;
        assert_eq!(started.elapsed(), limit);
    }
}
