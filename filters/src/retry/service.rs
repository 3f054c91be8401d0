//! `RetryLayer`, `Retry<S>` and the policy they share.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{header, Method, StatusCode};
use tower::{Layer, Service};

use super::{
    budget::Budget,
    config::{RetryConfig, RetryOn},
    future::ResponseFuture,
    replay::{replayable_len, Replay},
};
use crate::{
    classify::{RequestTimeout, UpstreamError, UpstreamErrorKind},
    Request, Response,
};

/// Applies [`Retry`] to a service. Clones share one budget.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    policy: Arc<Policy>,
}

/// Sends a failed request again when the policy, the request and the budget
/// all allow it; otherwise returns the last outcome unchanged.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    policy: Arc<Policy>,
}

/// The config, prepared for the request path.
#[derive(Debug)]
pub(super) struct Policy {
    pub(super) retries: u32,
    on_connect: bool,
    on_reset: bool,
    on_timeout: bool,
    /// Bit `s - 400` is set when status `s` is retried.
    statuses: [u64; 4],
    pub(super) backoff: Duration,
    max_replay_bytes: u64,
    pub(super) budget: Budget,
    /// Retries sent.
    pub(super) attempts: metrics::Counter,
    /// Retries the budget refused.
    pub(super) exhausted: metrics::Counter,
}

/// Why an attempt failed in a way the policy may retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failed {
    Connect,
    Reset,
    Timeout,
    Status(StatusCode),
}

// === impl RetryLayer ===

impl RetryLayer {
    /// A layer with its own budget. The config should have passed validation;
    /// out-of-range values are clamped.
    pub fn new(config: &RetryConfig) -> Self {
        Self::counting(config, metrics::Counter::noop(), metrics::Counter::noop())
    }

    /// [`new`](Self::new), counting the retries it sends in `attempts` and
    /// those its budget refused in `exhausted`.
    pub fn counting(
        config: &RetryConfig,
        attempts: metrics::Counter,
        exhausted: metrics::Counter,
    ) -> Self {
        let mut policy = Policy::new(config);
        policy.attempts = attempts;
        policy.exhausted = exhausted;
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            policy: self.policy.clone(),
        }
    }
}

// === impl Retry ===

impl<S> Service<Request> for Retry<S>
where
    S: Service<Request, Response = Response, Error = crate::Error> + Clone,
{
    type Response = Response;
    type Error = crate::Error;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        self.policy.budget.deposit();
        let Some((idempotent, len)) = self.policy.plan(&req) else {
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        // The ready service makes the first attempt; its clone stays here.
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        ResponseFuture::retrying(
            svc,
            parts,
            Replay::new(body, len),
            self.policy.clone(),
            idempotent,
        )
    }
}

// === impl Policy ===

impl Policy {
    fn new(c: &RetryConfig) -> Self {
        let mut statuses = [0u64; 4];
        for on in &c.on {
            if let RetryOn::Status(s) = on {
                if let Some(bit) = s.as_u16().checked_sub(400).filter(|b| *b < 200) {
                    statuses[usize::from(bit / 64)] |= 1 << (bit % 64);
                }
            }
        }
        Self {
            retries: c.attempts.clamp(1, super::config::MAX_ATTEMPTS) - 1,
            on_connect: c.on.contains(&RetryOn::ConnectError),
            on_reset: c.on.contains(&RetryOn::Reset),
            on_timeout: c.on.contains(&RetryOn::Timeout),
            statuses,
            backoff: c.backoff,
            max_replay_bytes: c.max_replay_bytes.min(super::config::MAX_REPLAY_BYTES),
            budget: Budget::new(c.budget_percent, c.min_per_second),
            attempts: metrics::Counter::noop(),
            exhausted: metrics::Counter::noop(),
        }
    }

    fn retries_idempotent(&self) -> bool {
        self.on_reset || self.on_timeout || self.statuses != [0; 4]
    }

    /// Whether `req` may be retried at all: `Some((idempotent, body length))`.
    ///
    /// Upgrades are never retried; non-idempotent methods only when the
    /// policy retries connect errors; bodies only when they are replayable.
    fn plan(&self, req: &Request) -> Option<(bool, usize)> {
        if self.retries == 0 || req.headers().contains_key(header::UPGRADE) {
            return None;
        }
        let idempotent = is_idempotent(req.method());
        if !(self.on_connect || idempotent && self.retries_idempotent()) {
            return None;
        }
        let len = replayable_len(req.body(), self.max_replay_bytes)?;
        Some((idempotent, len))
    }

    /// Whether this failure of a request is one the policy retries.
    pub(super) fn retries_on(&self, failed: Failed, idempotent: bool) -> bool {
        match failed {
            Failed::Connect => self.on_connect,
            Failed::Reset => idempotent && self.on_reset,
            Failed::Timeout => idempotent && self.on_timeout,
            Failed::Status(s) => {
                idempotent
                    && s.as_u16()
                        .checked_sub(400)
                        .filter(|b| *b < 200)
                        .is_some_and(|bit| {
                            self.statuses[usize::from(bit / 64)] & (1 << (bit % 64)) != 0
                        })
            }
        }
    }

    /// The wait before retry number `n` (1-based): `backoff · 2^(n-1)`, with
    /// jitter down to half of it so that clients failing together spread out.
    pub(super) fn delay(&self, n: u32) -> Duration {
        let full = self
            .backoff
            .saturating_mul(1 << n.saturating_sub(1).min(16));
        if full.is_zero() {
            return full;
        }
        let nanos = u64::try_from(full.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::random_range(nanos / 2..=nanos))
    }
}

/// RFC 9110 section 9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

// === impl Failed ===

impl Failed {
    /// What an error says about the attempt, walking the source chain.
    pub(super) fn from_error(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut cause = Some(error);
        while let Some(e) = cause {
            if let Some(up) = e.downcast_ref::<UpstreamError>() {
                return Some(match up.kind {
                    // Nothing was sent: a failed handshake is as safe to
                    // retry as a refused connection.
                    UpstreamErrorKind::Connect | UpstreamErrorKind::TlsHandshake => Self::Connect,
                    UpstreamErrorKind::Reset => Self::Reset,
                    UpstreamErrorKind::ResponseHeadTimeout => Self::Timeout,
                    // Shed because the upstream is saturated: another
                    // attempt would only add to the queue; a refused
                    // certificate will be refused again.
                    UpstreamErrorKind::Protocol
                    | UpstreamErrorKind::Saturated
                    | UpstreamErrorKind::TlsCertificate => return None,
                });
            }
            if e.is::<RequestTimeout>() {
                return Some(Self::Timeout);
            }
            cause = e.source();
        }
        None
    }
}
