//! The breaker's state machine in one atomic word, and its failure counts.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use super::{
    window::{Clock, Window},
    CircuitBreakerConfig,
};

/// Shared by every clone of one breaker.
#[derive(Debug)]
pub(super) struct Breaker {
    clock: Clock,
    /// See [`Phase`]: tag in the low 2 bits, a time in ns in the rest.
    state: AtomicU64,
    /// `a`: requests, `b`: failures.
    window: Window,
    failure_ratio: f64,
    min_requests: u64,
    open_for_ns: u64,
    pub(super) metrics: BreakerMetrics,
}

/// What the breaker records: its state (0 closed, 1 half-open, 2 open),
/// the transitions into each state, and the requests it answered itself.
#[derive(Debug)]
pub(super) struct BreakerMetrics {
    state: metrics::Gauge,
    to_closed: metrics::Counter,
    to_half_open: metrics::Counter,
    to_open: metrics::Counter,
    rejected: metrics::Counter,
}

impl Default for BreakerMetrics {
    fn default() -> Self {
        Self {
            state: metrics::Gauge::noop(),
            to_closed: metrics::Counter::noop(),
            to_half_open: metrics::Counter::noop(),
            to_open: metrics::Counter::noop(),
            rejected: metrics::Counter::noop(),
        }
    }
}

impl BreakerMetrics {
    pub(super) fn new(m: &crate::filter_metrics::FilterMetrics) -> Self {
        use crate::filter_metrics::{BREAKER_REJECTED, BREAKER_STATE, BREAKER_TRANSITIONS};
        let to = |state: &'static str| {
            m.counter_with(BREAKER_TRANSITIONS, Some(metrics::Label::new("to", state)))
        };
        let state = m.gauge(BREAKER_STATE);
        state.set(0.0);
        Self {
            state,
            to_closed: to("closed"),
            to_half_open: to("half_open"),
            to_open: to("open"),
            rejected: m.counter(BREAKER_REJECTED),
        }
    }

    fn entered(&self, phase: Phase) {
        let (counter, value) = match phase {
            Phase::Closed => (&self.to_closed, 0.0),
            Phase::HalfOpen { .. } => (&self.to_half_open, 1.0),
            Phase::Open { .. } => (&self.to_open, 2.0),
        };
        counter.increment(1);
        self.state.set(value);
    }
}

/// The decoded state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Closed,
    /// Rejecting until the time, then the next request becomes the probe.
    Open {
        until: u64,
    },
    /// One probe in flight since the time; everyone else is rejected.
    HalfOpen {
        since: u64,
    },
}

/// What the gate said to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Closed: go ahead; the outcome is counted.
    Pass,
    /// The one request allowed through a half-open breaker; `since` names it.
    Probe { since: u64 },
    /// Open: answer without calling the upstream.
    Reject { retry_after: Duration },
}

/// How a request ended, as far as the upstream's health is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Success,
    Failure,
    /// Says nothing about the upstream (cancelled, or turned away locally).
    Ignore,
}

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;

// === impl Phase ===

impl Phase {
    fn decode(word: u64) -> Self {
        let t = word >> 2;
        match word & 0b11 {
            OPEN => Self::Open { until: t },
            HALF_OPEN => Self::HalfOpen { since: t },
            _ => Self::Closed,
        }
    }

    fn encode(self) -> u64 {
        match self {
            Self::Closed => CLOSED,
            Self::Open { until } => (until << 2) | OPEN,
            Self::HalfOpen { since } => (since << 2) | HALF_OPEN,
        }
    }
}

// === impl Breaker ===

impl Breaker {
    pub(super) fn new(config: &CircuitBreakerConfig) -> Self {
        Self {
            clock: Clock::new(),
            state: AtomicU64::new(CLOSED),
            window: Window::new(config.window),
            failure_ratio: config.failure_ratio,
            min_requests: u64::from(config.min_requests.max(1)),
            // Times are kept in 62 bits; validation caps `open_for` at a
            // day, and this keeps `now + open_for` in range regardless.
            open_for_ns: u64::try_from(config.open_for.as_nanos())
                .unwrap_or(u64::MAX)
                .min(1 << 56),
            metrics: BreakerMetrics::default(),
        }
    }

    fn now(&self) -> u64 {
        // 62 bits of nanoseconds: 146 years of uptime.
        self.clock.now_ns() & (u64::MAX >> 2)
    }

    /// The gate: one load when closed, a compare-and-swap only at the
    /// open → half-open edge.
    pub(super) fn admit(&self) -> Admit {
        let mut word = self.state.load(Ordering::Acquire);
        loop {
            let now = self.now();
            let next = match Phase::decode(word) {
                Phase::Closed => return Admit::Pass,
                Phase::Open { until } if now < until => {
                    self.metrics.rejected.increment(1);
                    return Admit::Reject {
                        retry_after: Duration::from_nanos(until - now),
                    };
                }
                // A probe that never reported (hung, leaked) is replaced
                // after another `open_for`.
                Phase::HalfOpen { since } if now.saturating_sub(since) < self.open_for_ns => {
                    self.metrics.rejected.increment(1);
                    return Admit::Reject {
                        retry_after: Duration::from_nanos(
                            self.open_for_ns - now.saturating_sub(since),
                        ),
                    };
                }
                Phase::Open { .. } | Phase::HalfOpen { .. } => Phase::HalfOpen { since: now },
            };
            match self.state.compare_exchange(
                word,
                next.encode(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.metrics.entered(next);
                    return Admit::Probe { since: now };
                }
                Err(current) => word = current,
            }
        }
    }

    /// Records how an admitted request ended.
    pub(super) fn record(&self, admit: Admit, outcome: Outcome) {
        match admit {
            Admit::Reject { .. } => {}
            Admit::Pass => self.record_closed(outcome),
            Admit::Probe { since } => {
                let now = self.now();
                let next = match outcome {
                    Outcome::Success => Phase::Closed,
                    Outcome::Failure => Phase::Open {
                        until: now + self.open_for_ns,
                    },
                    // No verdict: let the next request probe at once.
                    Outcome::Ignore => Phase::Open { until: now },
                };
                let probing = Phase::HalfOpen { since }.encode();
                let swapped = self
                    .state
                    .compare_exchange(probing, next.encode(), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if swapped {
                    self.metrics.entered(next);
                    if next == Phase::Closed {
                        self.window.reset();
                    }
                }
            }
        }
    }

    fn record_closed(&self, outcome: Outcome) {
        let failed = match outcome {
            Outcome::Ignore => return,
            Outcome::Success => 0,
            Outcome::Failure => 1,
        };
        let now = self.now();
        self.window.add(now, 1, failed);
        if failed == 0 {
            return;
        }
        let (requests, failures) = self.window.sum(now);
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let tripped = requests >= self.min_requests
            && failures as f64 >= self.failure_ratio * requests as f64;
        if tripped {
            let open = Phase::Open {
                until: now + self.open_for_ns,
            };
            // Only the closed breaker opens; a racing opener already did it.
            if self
                .state
                .compare_exchange(CLOSED, open.encode(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.metrics.entered(open);
            }
        }
    }

    /// Whether the breaker is closed (lets every request through).
    #[cfg(test)]
    pub(super) fn is_closed(&self) -> bool {
        Phase::decode(self.state.load(Ordering::Acquire)) == Phase::Closed
    }
}
