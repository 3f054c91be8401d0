//! Turns a panic inside the chain into a typed [`Panicked`] error.
//!
//! A sidecar must outlive its bugs: a panicking filter becomes one more
//! INTERNAL failure (500, or gRPC `INTERNAL`) answered by the rescue layer,
//! and the connection and the process keep serving. Both `call` and the
//! polling of the response future are guarded.

use std::{
    any::Any,
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::classify::Panicked;

/// Applies [`CatchPanic`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CatchPanicLayer;

/// Catches panics of the inner service.
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
}

pin_project! {
    /// Response future of [`CatchPanic`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running { #[pin] future: F },
        Panicked { message: Option<String> },
    }
}

/// The message of a panic payload, when it has one.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

// === impl CatchPanicLayer ===

impl CatchPanicLayer {
    /// A new layer.
    pub const fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

// === impl CatchPanic ===

impl<S, R> Service<R> for CatchPanic<S>
where
    S: Service<R>,
    S::Error: Into<crate::Error>,
{
    type Response = S::Response;
    type Error = crate::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let state = match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(future) => State::Running { future },
            Err(payload) => State::Panicked {
                message: Some(panic_message(&*payload)),
            },
        };
        ResponseFuture { state }
    }
}

// === impl ResponseFuture ===

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<crate::Error>,
{
    type Output = Result<T, crate::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => Poll::Pending,
                    Ok(Poll::Ready(out)) => Poll::Ready(out.map_err(Into::into)),
                    Err(payload) => Poll::Ready(Err(Panicked {
                        message: panic_message(&*payload),
                    }
                    .into())),
                }
            }
            StateProj::Panicked { message } => Poll::Ready(Err(Panicked {
                message: message.take().unwrap_or_default(),
            }
            .into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{service_fn, ServiceExt};

    #[tokio::test]
    async fn panic_in_future_becomes_error() {
        let svc = CatchPanicLayer::new().layer(service_fn(|fail: bool| async move {
            if fail {
                panic!("filter bug");
            }
            Ok::<_, crate::Error>("ok")
        }));
        assert_eq!(svc.clone().oneshot(false).await.unwrap(), "ok");
        let err = svc.oneshot(true).await.unwrap_err();
        let panicked = err.downcast_ref::<Panicked>().unwrap();
        assert_eq!(panicked.message, "filter bug");
    }

    #[derive(Clone)]
    struct PanicsInCall;

    impl Service<()> for PanicsInCall {
        type Response = ();
        type Error = crate::Error;
        type Future = std::future::Ready<Result<(), crate::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: ()) -> Self::Future {
            panic!("{}", String::from("in call"))
        }
    }

    #[tokio::test]
    async fn panic_in_call_becomes_error() {
        let err = CatchPanicLayer::new()
            .layer(PanicsInCall)
            .oneshot(())
            .await
            .unwrap_err();
        assert_eq!(err.downcast_ref::<Panicked>().unwrap().message, "in call");
    }
}
