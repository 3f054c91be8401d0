//! Sampling: which requests get a recorded and exported span.
//!
//! In order: the caller's decision (parent-based samplers), then the route's
//! override (`always`/`never`/ratio), then the ratio, deterministic by trace
//! id like OpenTelemetry's `TraceIdRatioBased` so every hop of a trace agrees,
//! then an optional `max_per_second` cap (a lock-free token bucket). With
//! `keep_errors`, an unsampled span that ends in a NETWORK or INTERNAL
//! failure is kept anyway (a tail decision on the proxy's own span).
//!
//! Unsampled requests still propagate context (with the sampled flag off)
//! and still count in metrics. Every decision is counted by reason in
//! `sidetrace_sampling_decisions_total{reason,decision}`, and kept spans
//! carry `sidetrace.sampling.reason`.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::Counter;
use tokio::time::Instant;

use super::{
    config::{RouteSample, SamplerConfig, SamplerKind},
    context::TraceId,
};
use crate::classify::{Failure, FailureCategory};

/// Why a span was (not) sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SamplingReason {
    /// The caller's sampled flag decided.
    #[default]
    Parent,
    /// The route says `always`.
    RouteAlways,
    /// The route says `never`.
    RouteNever,
    /// The ratio (of the route or the sampler) decided; `always_on` and
    /// `always_off` are ratios of 1 and 0.
    Ratio,
    /// Selected by the ratio but over `max_per_second`.
    RateCapped,
    /// Unsampled, then kept because it failed (`keep_errors`).
    ErrorKept,
}

/// A sampling decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Record and export the span.
    pub sampled: bool,
    /// Why.
    pub reason: SamplingReason,
}

/// The sampler of one listener, built from config; shared behind an `Arc`.
#[derive(Debug)]
pub struct Sampler {
    kind: SamplerKind,
    threshold: u64,
    limiter: Option<RateLimiter>,
    keep_errors: bool,
    counters: SamplingCounters,
}

/// `sidetrace_sampling_decisions_total` handles, by reason and decision.
#[derive(Clone, Debug)]
pub struct SamplingCounters {
    /// Indexed by `SamplingReason::index()`, then `[dropped, sampled]`.
    pub by_reason: [[Counter; 2]; 6],
}

/// A token bucket over one atomic (GCRA): the theoretical arrival time of
/// the next token, in nanoseconds since `origin`.
#[derive(Debug)]
struct RateLimiter {
    origin: Instant,
    tat: AtomicU64,
    interval_ns: u64,
    burst_ns: u64,
}

// === impl SamplingCounters ===

impl Default for SamplingCounters {
    /// No-op handles.
    fn default() -> Self {
        Self {
            by_reason: std::array::from_fn(|_| [Counter::noop(), Counter::noop()]),
        }
    }
}

// === impl SamplingReason ===

impl SamplingReason {
    /// All reasons, in `index` order.
    pub const ALL: [Self; 6] = [
        Self::Parent,
        Self::RouteAlways,
        Self::RouteNever,
        Self::Ratio,
        Self::RateCapped,
        Self::ErrorKept,
    ];

    /// The attribute and label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Parent => "parent",
            Self::RouteAlways => "route_always",
            Self::RouteNever => "route_never",
            Self::Ratio => "ratio",
            Self::RateCapped => "rate_capped",
            Self::ErrorKept => "error_kept",
        }
    }

    /// Position in [`Self::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Self::Parent => 0,
            Self::RouteAlways => 1,
            Self::RouteNever => 2,
            Self::Ratio => 3,
            Self::RateCapped => 4,
            Self::ErrorKept => 5,
        }
    }
}

// === impl Sampler ===

impl Sampler {
    /// A sampler from config; `counters` may be `SamplingCounters::default()`
    /// (no-op handles).
    pub fn new(config: &SamplerConfig, counters: SamplingCounters) -> Self {
        let ratio = match config.kind {
            SamplerKind::AlwaysOn | SamplerKind::ParentAlwaysOn => 1.0,
            SamplerKind::AlwaysOff => 0.0,
            SamplerKind::Ratio | SamplerKind::ParentRatio => config.ratio,
        };
        Self {
            kind: config.kind,
            threshold: ratio_threshold(ratio),
            limiter: config.max_per_second.map(RateLimiter::new),
            keep_errors: config.keep_errors,
            counters,
        }
    }

    /// The head decision for a request, counted.
    ///
    /// `parent_sampled` is the caller's flag when it sent one; `route` the
    /// matched route's override.
    pub fn decide(
        &self,
        trace_id: TraceId,
        parent_sampled: Option<bool>,
        route: Option<RouteSample>,
    ) -> Decision {
        let d = self.decide_uncounted(trace_id, parent_sampled, route);
        self.count(d);
        d
    }

    fn decide_uncounted(
        &self,
        trace_id: TraceId,
        parent_sampled: Option<bool>,
        route: Option<RouteSample>,
    ) -> Decision {
        let parent_based = matches!(
            self.kind,
            SamplerKind::ParentRatio | SamplerKind::ParentAlwaysOn
        );
        if let (true, Some(sampled)) = (parent_based, parent_sampled) {
            return Decision {
                sampled,
                reason: SamplingReason::Parent,
            };
        }
        let threshold = match route {
            Some(RouteSample::Always) => {
                return Decision {
                    sampled: true,
                    reason: SamplingReason::RouteAlways,
                }
            }
            Some(RouteSample::Never) => {
                return Decision {
                    sampled: false,
                    reason: SamplingReason::RouteNever,
                }
            }
            Some(RouteSample::Ratio(r)) => ratio_threshold(r),
            None => self.threshold,
        };
        if !ratio_selects(trace_id, threshold) {
            return Decision {
                sampled: false,
                reason: SamplingReason::Ratio,
            };
        }
        if let Some(limiter) = &self.limiter {
            if !limiter.try_acquire() {
                return Decision {
                    sampled: false,
                    reason: SamplingReason::RateCapped,
                };
            }
        }
        Decision {
            sampled: true,
            reason: SamplingReason::Ratio,
        }
    }

    /// The tail decision at the end of the span: an unsampled span that
    /// failed with NETWORK or INTERNAL is kept when `keep_errors` is on.
    pub fn tail(&self, head: Decision, failure: Option<&Failure>) -> Decision {
        if head.sampled || !self.keep_errors {
            return head;
        }
        match failure.map(|f| f.category) {
            Some(FailureCategory::Network | FailureCategory::Internal) => {
                let d = Decision {
                    sampled: true,
                    reason: SamplingReason::ErrorKept,
                };
                self.count(d);
                d
            }
            _ => head,
        }
    }

    fn count(&self, d: Decision) {
        self.counters.by_reason[d.reason.index()][usize::from(d.sampled)].increment(1);
    }
}

/// The OpenTelemetry `TraceIdRatioBased` bound for `ratio`.
fn ratio_threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else if ratio > 0.0 {
        (ratio * (1u64 << 63) as f64) as u64
    } else {
        0
    }
}

/// OpenTelemetry's rule: the low 8 bytes of the trace id, shifted right by
/// one, compared with the bound, so all hops of a trace decide alike.
fn ratio_selects(trace_id: TraceId, threshold: u64) -> bool {
    if threshold == u64::MAX {
        return true;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id.0[8..16]);
    (u64::from_be_bytes(low) >> 1) < threshold
}

// === impl RateLimiter ===

impl RateLimiter {
    fn new(per_second: u32) -> Self {
        let per_second = u64::from(per_second.max(1));
        let interval_ns = 1_000_000_000 / per_second;
        Self {
            origin: Instant::now(),
            tat: AtomicU64::new(0),
            interval_ns,
            // A burst of one second's worth of tokens.
            burst_ns: interval_ns * per_second,
        }
    }

    /// Takes a token if one is available; never waits, never locks.
    fn try_acquire(&self) -> bool {
        let now = self.origin.elapsed().as_nanos() as u64;
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            let next = start + self.interval_ns;
            if next > now + self.burst_ns {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::classify::ErrorType;

    fn sampler(kind: SamplerKind, ratio: f64) -> Sampler {
        Sampler::new(
            &SamplerConfig {
                kind,
                ratio,
                max_per_second: None,
                keep_errors: false,
            },
            SamplingCounters::default(),
        )
    }

    fn id(low: u64) -> TraceId {
        let mut b = [0u8; 16];
        b[0] = 1;
        b[8..].copy_from_slice(&low.to_be_bytes());
        TraceId(b)
    }

    #[test]
    fn decision_table() {
        use SamplerKind::{AlwaysOff, AlwaysOn, ParentAlwaysOn, ParentRatio};
        use SamplingReason::{Parent, Ratio, RouteAlways, RouteNever};
        let low = id(0); // selected by any ratio > 0
        let high = id(u64::MAX); // selected only by ratio 1
        type Row = (
            SamplerKind,
            f64,
            TraceId,
            Option<bool>,
            Option<RouteSample>,
            bool,
            SamplingReason,
        );
        let table: &[Row] = &[
            (ParentRatio, 0.0, low, Some(true), None, true, Parent),
            (ParentRatio, 1.0, low, Some(false), None, false, Parent),
            (
                ParentRatio,
                1.0,
                low,
                Some(false),
                Some(RouteSample::Always),
                false,
                Parent,
            ),
            (ParentRatio, 0.5, low, None, None, true, Ratio),
            (ParentRatio, 0.5, high, None, None, false, Ratio),
            (
                ParentRatio,
                0.0,
                high,
                None,
                Some(RouteSample::Always),
                true,
                RouteAlways,
            ),
            (
                ParentRatio,
                1.0,
                low,
                None,
                Some(RouteSample::Never),
                false,
                RouteNever,
            ),
            (
                ParentRatio,
                1.0,
                high,
                None,
                Some(RouteSample::Ratio(0.5)),
                false,
                Ratio,
            ),
            (
                ParentRatio,
                0.0,
                low,
                None,
                Some(RouteSample::Ratio(0.5)),
                true,
                Ratio,
            ),
            (ParentAlwaysOn, 0.0, high, None, None, true, Ratio),
            (ParentAlwaysOn, 0.0, high, Some(false), None, false, Parent),
            (AlwaysOn, 0.0, high, Some(false), None, true, Ratio),
            (AlwaysOff, 1.0, low, Some(true), None, false, Ratio),
            (SamplerKind::Ratio, 0.5, low, Some(false), None, true, Ratio),
        ];
        for (i, &(kind, ratio, trace, parent, route, sampled, reason)) in table.iter().enumerate() {
            let d = sampler(kind, ratio).decide(trace, parent, route);
            assert_eq!(d, Decision { sampled, reason }, "row {i}");
        }
    }

    #[test]
    fn ratio_is_deterministic_and_close() {
        let s = sampler(SamplerKind::Ratio, 0.25);
        let mut kept = 0;
        for _ in 0..20_000 {
            let t = TraceId::random();
            let a = s.decide(t, None, None).sampled;
            assert_eq!(
                a,
                s.decide(t, None, None).sampled,
                "same trace, same answer"
            );
            kept += usize::from(a);
        }
        let share = kept as f64 / 20_000.0;
        assert!((0.22..0.28).contains(&share), "{share}");
    }

    #[tokio::test(start_paused = true)]
    async fn cap_refills_with_time() {
        let s = Sampler::new(
            &SamplerConfig {
                kind: SamplerKind::AlwaysOn,
                ratio: 1.0,
                max_per_second: Some(10),
                keep_errors: false,
            },
            SamplingCounters::default(),
        );
        let t = id(0);
        let kept = (0..25).filter(|_| s.decide(t, None, None).sampled).count();
        assert_eq!(kept, 10, "a burst of one second's worth");
        assert_eq!(s.decide(t, None, None).reason, SamplingReason::RateCapped);
        tokio::time::advance(Duration::from_millis(300)).await;
        let kept = (0..25).filter(|_| s.decide(t, None, None).sampled).count();
        assert_eq!(kept, 3, "three tokens in 300 ms at 10/s");
        // Parent decisions are not capped.
        let p = Sampler::new(
            &SamplerConfig {
                kind: SamplerKind::ParentRatio,
                ratio: 1.0,
                max_per_second: Some(1),
                keep_errors: false,
            },
            SamplingCounters::default(),
        );
        assert!((0..5).all(|_| p.decide(t, Some(true), None).sampled));
    }

    #[test]
    fn keep_errors_is_a_tail_decision() {
        let mut cfg = SamplerConfig {
            kind: SamplerKind::AlwaysOff,
            ratio: 0.0,
            max_per_second: None,
            keep_errors: true,
        };
        let s = Sampler::new(&cfg, SamplingCounters::default());
        let head = s.decide(id(0), None, None);
        assert!(!head.sampled);
        let net = Failure::new(FailureCategory::Network, ErrorType::Timeout);
        let bad = Failure::new(FailureCategory::Validation, ErrorType::BadRequest);
        let int = Failure::new(FailureCategory::Internal, ErrorType::Panic);
        assert_eq!(s.tail(head, Some(&net)).reason, SamplingReason::ErrorKept);
        assert!(s.tail(head, Some(&int)).sampled);
        assert_eq!(s.tail(head, Some(&bad)), head);
        assert_eq!(s.tail(head, None), head);
        cfg.keep_errors = false;
        let off = Sampler::new(&cfg, SamplingCounters::default());
        assert_eq!(off.tail(head, Some(&net)), head);
    }

    #[test]
    fn decisions_are_counted() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let counters = crate::trace::TraceMetrics::register(&recorder).sampling;
        let s = Sampler::new(
            &SamplerConfig {
                kind: SamplerKind::ParentRatio,
                ratio: 1.0,
                max_per_second: None,
                keep_errors: false,
            },
            counters,
        );
        s.decide(id(0), Some(false), None);
        s.decide(id(0), None, None);
        let text = handle.render();
        assert!(
            text.contains(
                r#"sidetrace_sampling_decisions_total{reason="parent",decision="dropped"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"sidetrace_sampling_decisions_total{reason="ratio",decision="sampled"} 1"#
            ),
            "{text}"
        );
    }
}
