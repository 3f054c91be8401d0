//! `ResponseFuture`: reads the replay buffer, makes attempts, waits between
//! them, and hands back the first outcome it does not retry.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::request::Parts;
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::Service;

use super::{
    replay::Replay,
    service::{Failed, Policy},
};
use crate::{HttpBody, Request, Response};

/// How much of a failed response's body is read (and thrown away) during the
/// backoff, so an HTTP/1 connection can go back to the pool.
const MAX_DRAIN_BYTES: usize = 64 * 1024;

pin_project! {
    /// Response future of [`Retry`](super::Retry).
    pub struct ResponseFuture<S>
    where
        S: Service<Request, Response = Response, Error = crate::Error>,
    {
        #[pin]
        state: State<S::Future>,
        // `None` for requests that are never retried: they only pass through.
        retry: Option<Retrying<S>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Reading the request body into the replay buffer.
        Reading,
        // An attempt is in flight.
        Calling { #[pin] fut: F },
        // Waiting before the next attempt, draining the failed response.
        Backoff {
            #[pin]
            sleep: Sleep,
            drain: Option<HttpBody>,
            drained: usize,
        },
        // Waiting for the service to be ready for the next attempt.
        Ready,
    }
}

/// What a retryable request keeps between attempts.
struct Retrying<S> {
    svc: S,
    parts: Parts,
    replay: Replay,
    policy: Arc<Policy>,
    idempotent: bool,
    retries: u32,
}

// === impl ResponseFuture ===

impl<S> ResponseFuture<S>
where
    S: Service<Request, Response = Response, Error = crate::Error>,
{
    pub(super) fn passthrough(fut: S::Future) -> Self {
        Self {
            state: State::Calling { fut },
            retry: None,
        }
    }

    /// `svc` must be ready: the first attempt calls it without `poll_ready`.
    pub(super) fn retrying(
        svc: S,
        parts: Parts,
        replay: Replay,
        policy: Arc<Policy>,
        idempotent: bool,
    ) -> Self {
        Self {
            state: State::Reading,
            retry: Some(Retrying {
                svc,
                parts,
                replay,
                policy,
                idempotent,
                retries: 0,
            }),
        }
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<Request, Response = Response, Error = crate::Error>,
{
    type Output = Result<Response, crate::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Reading => {
                    let r = this.retry.as_mut().expect("only retrying requests read");
                    std::task::ready!(r.replay.poll_read(cx))?;
                    let fut = r.svc.call(r.request());
                    this.state.set(State::Calling { fut });
                }
                StateProj::Calling { fut } => {
                    let out = std::task::ready!(fut.poll(cx));
                    let Some(delay) = this.retry.as_mut().and_then(|r| r.next(&out)) else {
                        return Poll::Ready(out);
                    };
                    this.state.set(State::Backoff {
                        sleep: tokio::time::sleep(delay),
                        drain: out.ok().map(http::Response::into_body),
                        drained: 0,
                    });
                }
                StateProj::Backoff {
                    sleep,
                    drain,
                    drained,
                } => {
                    poll_drain(drain, drained, cx);
                    std::task::ready!(sleep.poll(cx));
                    // Whatever is left of the failed body is dropped here.
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    let r = this
                        .retry
                        .as_mut()
                        .expect("only retrying requests back off");
                    std::task::ready!(r.svc.poll_ready(cx))?;
                    let fut = r.svc.call(r.request());
                    this.state.set(State::Calling { fut });
                }
            }
        }
    }
}

/// Reads and discards what is available of a failed response body.
fn poll_drain(drain: &mut Option<HttpBody>, drained: &mut usize, cx: &mut Context<'_>) {
    while let Some(body) = drain {
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *drained += frame.data_ref().map_or(0, bytes::Bytes::len);
                if *drained > MAX_DRAIN_BYTES {
                    *drain = None;
                }
            }
            Poll::Ready(None | Some(Err(_))) => *drain = None,
            Poll::Pending => return,
        }
    }
}

// === impl Retrying ===

impl<S> Retrying<S> {
    fn request(&self) -> Request {
        Request::from_parts(self.parts.clone(), self.replay.body())
    }

    /// The delay before the next attempt, or `None` to return `out`.
    fn next(&mut self, out: &Result<Response, crate::Error>) -> Option<Duration> {
        if self.retries >= self.policy.retries {
            return None;
        }
        let failed = match out {
            Ok(res) => Failed::Status(res.status()),
            Err(e) => Failed::from_error(&**e)?,
        };
        if !self.policy.retries_on(failed, self.idempotent) {
            return None;
        }
        if !self.policy.budget.withdraw() {
            self.policy.exhausted.increment(1);
            tracing::debug!(?failed, "retry budget exhausted");
            return None;
        }
        self.policy.attempts.increment(1);
        self.retries += 1;
        tracing::debug!(?failed, retry = self.retries, "retrying");
        Some(self.policy.delay(self.retries))
    }
}
