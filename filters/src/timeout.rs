#![doc = include_str!("../../docs/filters/timeout.md")]

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use metrics::Counter;
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use tokio::time::Sleep;
use tower::{Layer, Service};

use crate::{
    classify::RequestTimeout,
    filter_metrics,
    registry::{BuildContext, ConfigError, Filter},
    HttpLayer,
};

/// Config of the `timeout` filter.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Time allowed from receiving the request to the upstream's response headers.
    #[serde(with = "crate::duration")]
    pub request: Duration,
}

/// Applies a [`Timeout`] to a service.
#[derive(Clone, Debug)]
pub struct TimeoutLayer {
    request: Duration,
    fired: Counter,
}

/// Fails requests that take longer than the deadline.
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    request: Duration,
    fired: Counter,
}

pin_project! {
    /// Response future of [`Timeout`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        request: Duration,
        fired: Counter,
    }
}

// === impl TimeoutConfig ===

impl Filter for TimeoutConfig {
    const NAME: &'static str = "timeout";

    fn validate(&self) -> Result<(), ConfigError> {
        if self.request.is_zero() {
            return Err(ConfigError {
                field: "request",
                message: "must be greater than 0".into(),
            });
        }
        Ok(())
    }

    fn layer(&self, cx: &BuildContext) -> Result<HttpLayer, ConfigError> {
        Ok(HttpLayer::new(
            TimeoutLayer::new(self.request).counting(cx.metrics.counter(filter_metrics::TIMEOUTS)),
        ))
    }
}

// === impl TimeoutLayer ===

impl TimeoutLayer {
    /// A layer with the given deadline.
    pub fn new(request: Duration) -> Self {
        Self {
            request,
            fired: Counter::noop(),
        }
    }

    /// Counts the requests it ends in `fired`.
    pub fn counting(mut self, fired: Counter) -> Self {
        self.fired = fired;
        self
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            request: self.request,
            fired: self.fired.clone(),
        }
    }
}

// === impl Timeout ===

impl<S, R> Service<R> for Timeout<S>
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
        ResponseFuture {
            inner: self.inner.call(req),
            sleep: tokio::time::sleep(self.request),
            request: self.request,
            fired: self.fired.clone(),
        }
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
        let this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out.map_err(Into::into));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => {
                this.fired.increment(1);
                Poll::Ready(Err(RequestTimeout(*this.request).into()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify_error;
    use tower::{service_fn, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn slow_inner_times_out_with_504() {
        let svc = TimeoutLayer::new(Duration::from_millis(100)).layer(service_fn(|()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, crate::Error>("late")
        }));
        let err = svc.oneshot(()).await.unwrap_err();
        assert!(err.is::<RequestTimeout>());
        assert_eq!(
            classify_error(&*err).status,
            http::StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fast_inner_passes() {
        let svc = TimeoutLayer::new(Duration::from_millis(100)).layer(service_fn(|()| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, crate::Error>("on time")
        }));
        assert_eq!(svc.oneshot(()).await.unwrap(), "on time");
    }

    #[test]
    fn zero_is_rejected() {
        let c = TimeoutConfig {
            request: Duration::ZERO,
        };
        assert_eq!(c.validate().unwrap_err().field, "request");
    }
}
