#![doc = include_str!("../../docs/filters/rate_limit.md")]

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::{
    classify::RateLimited,
    registry::{BuildContext, ConfigError, Filter},
    HttpLayer,
};

/// Config of the `rate_limit` filter.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained rate: requests admitted per second.
    pub per_second: u32,
    /// Requests admitted at once after a quiet period; defaults to `per_second`.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Applies a [`RateLimit`] to a service. Clones share one bucket.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    bucket: Arc<Bucket>,
}

/// Turns away requests above the configured rate with [`RateLimited`].
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    bucket: Arc<Bucket>,
}

/// A token bucket kept as one atomic: the generic cell rate algorithm.
///
/// `tat` (theoretical arrival time) is when the bucket would be full again,
/// in nanoseconds since `base`. Admitting a request moves it one emission
/// interval later; a request is admitted while `tat` stays within `burst`
/// intervals of now. One compare-and-swap per request, no lock, no task.
#[derive(Debug)]
struct Bucket {
    base: Instant,
    tat: AtomicU64,
    interval_ns: u64,
    tolerance_ns: u64,
    per_second: u32,
    limited: metrics::Counter,
}

pin_project! {
    /// Response future of [`RateLimit`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Limited { per_second: u32 },
        Inner { #[pin] fut: F },
    }
}

// === impl RateLimitConfig ===

impl RateLimitConfig {
    fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.per_second)
    }
}

impl Filter for RateLimitConfig {
    const NAME: &'static str = "rate_limit";

    fn validate(&self) -> Result<(), ConfigError> {
        if self.per_second == 0 {
            return Err(ConfigError {
                field: "per_second",
                message: "must be at least 1".into(),
            });
        }
        if self.burst() == 0 {
            return Err(ConfigError {
                field: "burst",
                message: "must be at least 1 (or left out to equal per_second)".into(),
            });
        }
        Ok(())
    }

    fn layer(&self, cx: &BuildContext) -> Result<HttpLayer, ConfigError> {
        self.validate()?;
        Ok(HttpLayer::new(RateLimitLayer::counting(
            self.per_second,
            self.burst(),
            cx.metrics.counter(crate::filter_metrics::RATE_LIMITED),
        )))
    }
}

// === impl RateLimitLayer ===

impl RateLimitLayer {
    /// A layer admitting `per_second` requests per second with bursts of
    /// up to `burst`. Both are clamped to at least 1.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self::counting(per_second, burst, metrics::Counter::noop())
    }

    /// [`new`](Self::new), counting the requests it turns away in `limited`.
    pub fn counting(per_second: u32, burst: u32, limited: metrics::Counter) -> Self {
        let per_second = per_second.max(1);
        let interval_ns = 1_000_000_000 / u64::from(per_second);
        Self {
            bucket: Arc::new(Bucket {
                base: Instant::now(),
                tat: AtomicU64::new(0),
                interval_ns,
                tolerance_ns: interval_ns.saturating_mul(u64::from(burst.max(1))),
                per_second,
                limited,
            }),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            bucket: self.bucket.clone(),
        }
    }
}

// === impl Bucket ===

impl Bucket {
    fn try_acquire(&self) -> bool {
        let now = nanos_since(self.base);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(self.interval_ns);
            if next - now > self.tolerance_ns {
                return false;
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(current) => tat = current,
            }
        }
    }
}

fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

// === impl RateLimit ===

impl<S, R> Service<R> for RateLimit<S>
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
        let kind = if self.bucket.try_acquire() {
            Kind::Inner {
                fut: self.inner.call(req),
            }
        } else {
            self.bucket.limited.increment(1);
            Kind::Limited {
                per_second: self.bucket.per_second,
            }
        };
        ResponseFuture { kind }
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
        match self.project().kind.project() {
            KindProj::Limited { per_second } => Poll::Ready(Err(RateLimited {
                per_second: *per_second,
            }
            .into())),
            KindProj::Inner { fut } => fut.poll(cx).map_err(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify_error;
    use std::time::Duration;
    use tower::{service_fn, ServiceExt};

    /// The interval between two admitted requests at the sustained rate.
    fn interval(per_second: u32) -> Duration {
        Duration::from_nanos(1_000_000_000 / u64::from(per_second))
    }

    fn svc(
        per_second: u32,
        burst: u32,
    ) -> RateLimit<impl Service<(), Response = &'static str, Error = crate::Error> + Clone> {
        RateLimitLayer::new(per_second, burst)
            .layer(service_fn(|()| async { Ok::<_, crate::Error>("ok") }))
    }

    async fn admitted(
        svc: &RateLimit<impl Service<(), Response = &'static str, Error = crate::Error> + Clone>,
        n: usize,
    ) -> usize {
        let mut ok = 0;
        for _ in 0..n {
            match svc.clone().oneshot(()).await {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(e.is::<RateLimited>());
                    assert_eq!(
                        classify_error(&*e).status,
                        http::StatusCode::TOO_MANY_REQUESTS
                    );
                }
            }
        }
        ok
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_sustained_rate() {
        let svc = svc(10, 5);
        assert_eq!(admitted(&svc, 8).await, 5, "a full bucket admits the burst");
        tokio::time::advance(interval(10)).await;
        assert_eq!(admitted(&svc, 3).await, 1, "one interval refills one token");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(admitted(&svc, 20).await, 5, "refill stops at the burst");
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_the_bucket() {
        let a = svc(1, 1);
        let b = a.clone();
        assert_eq!(admitted(&a, 1).await, 1);
        assert_eq!(admitted(&b, 1).await, 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(admitted(&b, 1).await, 1);
    }

    #[test]
    fn validation() {
        let c: RateLimitConfig = serde_saphyr::from_str("{ per_second: 0 }").unwrap();
        assert_eq!(c.validate().unwrap_err().field, "per_second");
        let c: RateLimitConfig = serde_saphyr::from_str("{ per_second: 5, burst: 0 }").unwrap();
        assert_eq!(c.validate().unwrap_err().field, "burst");
        let c: RateLimitConfig = serde_saphyr::from_str("{ per_second: 5 }").unwrap();
        c.validate().unwrap();
        assert_eq!(c.burst(), 5);
    }
}
