//! `ResponseFuture`: answers early when open, else waits for the inner
//! service and reports the outcome to the breaker.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::Response;
use pin_project_lite::pin_project;

use super::state::{Admit, Breaker, Outcome};
use crate::classify::{
    classify_error, classify_response, CircuitOpen, ErrorType, FailureCategory, GrpcCode,
};

pin_project! {
    /// Response future of [`CircuitBreaker`](super::CircuitBreaker).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Open { retry_after: Duration },
        Inner { #[pin] fut: F, report: Report },
    }
}

/// Reports an admitted request's outcome exactly once; a request dropped
/// before it ends reports "no verdict", which frees a half-open probe slot.
struct Report {
    breaker: Arc<Breaker>,
    admit: Option<Admit>,
}

// === impl ResponseFuture ===

impl<F> ResponseFuture<F> {
    pub(super) fn open(retry_after: Duration) -> Self {
        Self {
            kind: Kind::Open { retry_after },
        }
    }

    pub(super) fn inner(fut: F, breaker: Arc<Breaker>, admit: Admit) -> Self {
        Self {
            kind: Kind::Inner {
                fut,
                report: Report {
                    breaker,
                    admit: Some(admit),
                },
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<crate::Error>,
{
    type Output = Result<Response<B>, crate::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Open { retry_after } => Poll::Ready(Err(CircuitOpen {
                retry_after: *retry_after,
            }
            .into())),
            KindProj::Inner { fut, report } => {
                let out = std::task::ready!(fut.poll(cx)).map_err(Into::into);
                report.send(match &out {
                    Ok(res) => response_outcome(res),
                    Err(e) => error_outcome(&**e),
                });
                Poll::Ready(out)
            }
        }
    }
}

/// A response fails when it classifies as NETWORK or INTERNAL. The gRPC
/// status is read from the headers (trailers-only responses, how servers
/// answer calls that fail before any message); statuses sent in trailers
/// after messages are not seen, as the breaker does not wait for the body.
pub(super) fn response_outcome<B>(res: &Response<B>) -> Outcome {
    let grpc = GrpcCode::from_headers(res.headers());
    match classify_response(res.status(), grpc) {
        Ok(None) => Outcome::Success,
        Ok(Some(f)) => category_outcome(f.category),
        Err(_cancelled) => Outcome::Ignore,
    }
}

/// An error fails when it classifies as NETWORK or INTERNAL, except the
/// answers of local limits (rate limit, load shedding, another breaker),
/// which say nothing about the upstream.
pub(super) fn error_outcome(e: &(dyn std::error::Error + 'static)) -> Outcome {
    let failure = classify_error(e).failure;
    match failure.error_type {
        ErrorType::RateLimited | ErrorType::Overloaded | ErrorType::CircuitOpen => Outcome::Ignore,
        _ => category_outcome(failure.category),
    }
}

fn category_outcome(category: FailureCategory) -> Outcome {
    match category {
        // The upstream answered; the request was at fault.
        FailureCategory::Validation => Outcome::Success,
        FailureCategory::Network | FailureCategory::Internal => Outcome::Failure,
    }
}

// === impl Report ===

impl Report {
    fn send(&mut self, outcome: Outcome) {
        if let Some(admit) = self.admit.take() {
            self.breaker.record(admit, outcome);
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        self.send(Outcome::Ignore);
    }
}
