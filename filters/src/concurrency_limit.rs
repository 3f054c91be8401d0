#![doc = include_str!("../../docs/filters/concurrency_limit.md")]

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use tower::{layer::util::Stack, util::MapResponseLayer, Layer, Service};

use crate::{
    classify::Overloaded,
    registry::{BuildContext, ConfigError, Filter},
    HttpLayer,
};

/// Config of the `concurrency_limit` filter.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyLimitConfig {
    /// Most requests in flight at once; the next one is turned away.
    pub max: usize,
}

/// Applies a [`ConcurrencyLimit`] to a service. Clones share one counter.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitLayer {
    state: Arc<State>,
}

/// Sheds requests with [`Overloaded`] while `max` are in flight.
///
/// A request is in flight from `call` until its response body ends (or is
/// dropped), so long downloads and gRPC streams count for as long as they run.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    in_flight: AtomicUsize,
    max: usize,
    shed: metrics::Counter,
}

/// One request's place in the limit; given back on drop.
#[derive(Debug)]
struct Permit(Arc<State>);

pin_project! {
    /// Response future of [`ConcurrencyLimit`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Shed { max: usize },
        Inner { #[pin] fut: F, permit: Option<Permit> },
    }
}

pin_project! {
    /// A response body that holds the request's permit until it ends.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
    }
}

// === impl ConcurrencyLimitConfig ===

impl Filter for ConcurrencyLimitConfig {
    const NAME: &'static str = "concurrency_limit";

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max == 0 {
            return Err(ConfigError {
                field: "max",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    fn layer(&self, cx: &BuildContext) -> Result<HttpLayer, ConfigError> {
        self.validate()?;
        // The chain carries one body type, so the permit-holding body is boxed
        // again: one allocation per response, the price of counting streams.
        let rebox: fn(http::Response<ResponseBody<crate::HttpBody>>) -> crate::Response =
            |res| res.map(BodyExt::boxed_unsync);
        Ok(HttpLayer::new(Stack::new(
            ConcurrencyLimitLayer::counting(
                self.max,
                cx.metrics
                    .counter(crate::filter_metrics::CONCURRENCY_REJECTED),
            ),
            MapResponseLayer::new(rebox),
        )))
    }
}

// === impl ConcurrencyLimitLayer ===

impl ConcurrencyLimitLayer {
    /// A layer admitting at most `max` requests at once (clamped to at least 1).
    pub fn new(max: usize) -> Self {
        Self::counting(max, metrics::Counter::noop())
    }

    /// [`new`](Self::new), counting the requests it sheds in `shed`.
    pub fn counting(max: usize, shed: metrics::Counter) -> Self {
        Self {
            state: Arc::new(State {
                in_flight: AtomicUsize::new(0),
                max: max.max(1),
                shed,
            }),
        }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit {
            inner,
            state: self.state.clone(),
        }
    }
}

// === impl ConcurrencyLimit ===

impl<S> ConcurrencyLimit<S> {
    /// Requests in flight now, across all clones.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::Relaxed)
    }
}

impl<S, R, B> Service<R> for ConcurrencyLimit<S>
where
    S: Service<R, Response = http::Response<B>>,
    S::Error: Into<crate::Error>,
    B: Body,
{
    type Response = http::Response<ResponseBody<B>>;
    type Error = crate::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let state = &self.state;
        let admitted = state
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < state.max).then_some(n + 1)
            })
            .is_ok();
        let kind = if admitted {
            Kind::Inner {
                permit: Some(Permit(state.clone())),
                fut: self.inner.call(req),
            }
        } else {
            state.shed.increment(1);
            Kind::Shed { max: state.max }
        };
        ResponseFuture { kind }
    }
}

// === impl Permit ===

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl ResponseFuture ===

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<crate::Error>,
    B: Body,
{
    type Output = Result<http::Response<ResponseBody<B>>, crate::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Shed { max } => Poll::Ready(Err(Overloaded { max: *max }.into())),
            KindProj::Inner { fut, permit } => {
                // An error drops the permit with the future.
                let res = std::task::ready!(fut.poll(cx)).map_err(Into::into)?;
                let permit = permit.take();
                Poll::Ready(Ok(res.map(|inner| ResponseBody::new(inner, permit))))
            }
        }
    }
}

// === impl ResponseBody ===

impl<B: Body> ResponseBody<B> {
    fn new(inner: B, permit: Option<Permit>) -> Self {
        // A body that is already over (a 204, a HEAD) frees its place now.
        let permit = permit.filter(|_| !inner.is_end_stream());
        Self { inner, permit }
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        // Free the place as soon as the end is known: the peer may not poll again.
        if frame.is_none() || matches!(frame, Some(Err(_))) || this.inner.is_end_stream() {
            this.permit.take();
        }
        Poll::Ready(frame)
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
    use super::*;
    use crate::classify::classify_error;
    use bytes::Bytes;
    use std::time::Duration;
    use tower::{service_fn, ServiceExt};

    type Res = http::Response<crate::HttpBody>;

    fn slow_service(
    ) -> impl Service<(), Response = Res, Error = crate::Error, Future = impl Send> + Clone {
        service_fn(|()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, crate::Error>(http::Response::new(crate::full_body("done")))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn sheds_when_full_and_recovers() {
        let svc = ConcurrencyLimitLayer::new(2).layer(slow_service());
        let a = tokio::spawn(svc.clone().oneshot(()));
        let b = tokio::spawn(svc.clone().oneshot(()));
        tokio::task::yield_now().await;
        assert_eq!(svc.in_flight(), 2);

        let err = svc.clone().oneshot(()).await.unwrap_err();
        assert!(err.is::<Overloaded>());
        assert_eq!(
            classify_error(&*err).status,
            http::StatusCode::SERVICE_UNAVAILABLE
        );

        // Headers arrived, bodies not read yet: both still count.
        let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
        assert_eq!(svc.in_flight(), 2);
        let body = a.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, Bytes::from_static(b"done"));
        assert_eq!(svc.in_flight(), 1, "a read body frees its place");
        drop(b);
        assert_eq!(svc.in_flight(), 0, "a dropped body frees its place");
        svc.clone().oneshot(()).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn errors_and_cancellation_free_the_place() {
        let failing = service_fn(|()| async { Err::<Res, crate::Error>("boom".into()) });
        let svc = ConcurrencyLimitLayer::new(1).layer(failing);
        assert!(svc.clone().oneshot(()).await.is_err());
        assert_eq!(svc.in_flight(), 0);

        let svc = ConcurrencyLimitLayer::new(1).layer(slow_service());
        let pending = tokio::spawn(svc.clone().oneshot(()));
        tokio::task::yield_now().await;
        assert_eq!(svc.in_flight(), 1);
        pending.abort();
        let _ = pending.await;
        assert_eq!(svc.in_flight(), 0);
    }

    #[tokio::test]
    async fn empty_body_frees_at_once() {
        let svc = ConcurrencyLimitLayer::new(1).layer(service_fn(|()| async {
            Ok::<_, crate::Error>(http::Response::new(crate::empty_body()))
        }));
        let res = svc.clone().oneshot(()).await.unwrap();
        assert_eq!(svc.in_flight(), 0);
        assert!(res.body().is_end_stream());
    }

    #[test]
    fn zero_is_rejected() {
        let c = ConcurrencyLimitConfig { max: 0 };
        assert_eq!(c.validate().unwrap_err().field, "max");
    }
}
