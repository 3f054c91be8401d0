//! `CircuitBreakerLayer` and `CircuitBreaker<S>`.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tower::{Layer, Service};

use super::{
    future::ResponseFuture,
    state::{Admit, Breaker},
    CircuitBreakerConfig,
};

/// Applies a [`CircuitBreaker`] to a service. Clones share one breaker.
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer {
    breaker: Arc<Breaker>,
}

/// Answers [`CircuitOpen`](crate::classify::CircuitOpen) while the upstream
/// is failing, without calling it.
#[derive(Clone, Debug)]
pub struct CircuitBreaker<S> {
    inner: S,
    breaker: Arc<Breaker>,
}

// === impl CircuitBreakerLayer ===

impl CircuitBreakerLayer {
    /// A layer with one new, closed breaker. The config should have passed
    /// validation; out-of-range values are clamped.
    pub fn new(config: &CircuitBreakerConfig) -> Self {
        Self {
            breaker: Arc::new(Breaker::new(config)),
        }
    }

    /// [`new`](Self::new), recording its state, transitions and rejections
    /// into `metrics` (the filter's).
    pub fn recording(
        config: &CircuitBreakerConfig,
        metrics: &crate::filter_metrics::FilterMetrics,
    ) -> Self {
        let mut breaker = Breaker::new(config);
        breaker.metrics = super::state::BreakerMetrics::new(metrics);
        Self {
            breaker: Arc::new(breaker),
        }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

// === impl CircuitBreaker ===

impl<S, R, B> Service<R> for CircuitBreaker<S>
where
    S: Service<R, Response = http::Response<B>>,
    S::Error: Into<crate::Error>,
{
    type Response = S::Response;
    type Error = crate::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        match self.breaker.admit() {
            Admit::Reject { retry_after } => ResponseFuture::open(retry_after),
            admit => ResponseFuture::inner(self.inner.call(req), self.breaker.clone(), admit),
        }
    }
}

#[cfg(test)]
impl<S> CircuitBreaker<S> {
    pub(super) fn is_closed(&self) -> bool {
        self.breaker.is_closed()
    }
}
