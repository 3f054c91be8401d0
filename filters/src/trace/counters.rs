//! The tracing self-metrics the request path bumps, as `metrics::Counter`
//! handles resolved once at build time (no global recorder, no lookups per
//! request).

use metrics::{Counter, Key, Label, Metadata, Recorder};

use super::{propagation::Propagator, sampler::SamplingCounters, sampler::SamplingReason};

/// Counter handles of the trace layer.
#[derive(Clone, Debug)]
pub struct TraceMetrics {
    /// `sidetrace_spans_dropped_total{reason="queue_full"}`.
    pub spans_dropped_queue_full: Counter,
    /// `sidetrace_propagation_errors_total{format}`, by [`Propagator::index`].
    pub propagation_errors: [Counter; Propagator::COUNT],
    /// `sidetrace_sampling_decisions_total{reason,decision}`.
    pub sampling: SamplingCounters,
}

/// Metric names, for docs and tests.
pub mod names {
    /// Spans dropped before export, by reason.
    pub const SPANS_DROPPED: &str = "sidetrace_spans_dropped_total";
    /// Malformed propagation headers, by format.
    pub const PROPAGATION_ERRORS: &str = "sidetrace_propagation_errors_total";
    /// Sampling decisions, by reason and decision.
    pub const SAMPLING_DECISIONS: &str = "sidetrace_sampling_decisions_total";
}

// === impl TraceMetrics ===

impl TraceMetrics {
    /// Registers every handle with `recorder` (e.g. the proxy's
    /// `PrometheusRecorder`), so all series exist from the start.
    pub fn register(recorder: &dyn Recorder) -> Self {
        let md = Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &md)
        };
        Self {
            spans_dropped_queue_full: counter(
                names::SPANS_DROPPED,
                vec![Label::new("reason", "queue_full")],
            ),
            propagation_errors: Propagator::ALL.map(|p| {
                counter(
                    names::PROPAGATION_ERRORS,
                    vec![Label::new("format", p.as_str())],
                )
            }),
            sampling: SamplingCounters {
                by_reason: SamplingReason::ALL.map(|r| {
                    ["dropped", "sampled"].map(|d| {
                        counter(
                            names::SAMPLING_DECISIONS,
                            vec![Label::new("reason", r.as_str()), Label::new("decision", d)],
                        )
                    })
                }),
            },
        }
    }

    /// Handles that record nothing (tests, benches).
    pub fn noop() -> Self {
        Self {
            spans_dropped_queue_full: Counter::noop(),
            propagation_errors: std::array::from_fn(|_| Counter::noop()),
            sampling: SamplingCounters::default(),
        }
    }
}
