//! What the configured filters do, as metrics: retries and exhausted
//! budgets, circuit-breaker state and transitions, requests turned away by
//! the rate and concurrency limits, bodies over a max_body limit, timeouts
//! fired. Each series is labelled by the filter (`filters[2].retry`), the
//! listener (`inbound`, `outbound`) and the route whose chain it belongs to
//! (`""` for the default chain, which serves every request).
//!
//! Handles are registered when the chain is built, never per request.
//!
//! ```
//! use std::sync::Arc;
//! use filters::filter_metrics::FilterMetrics;
//!
//! let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
//! let handle = recorder.handle();
//! let chain = FilterMetrics::new(Arc::new(recorder), "inbound", "");
//! chain.for_filter("filters[0].timeout").counter(filters::filter_metrics::TIMEOUTS).increment(1);
//! assert!(handle.render().contains(
//!     r#"sidetrace_filter_timeouts_total{filter="filters[0].timeout",listener="inbound",route=""} 1"#
//! ));
//! ```

use std::{fmt, sync::Arc};

use metrics::{Counter, Gauge, Key, Label, Recorder};

/// Requests a timeout filter ended.
pub const TIMEOUTS: &str = "sidetrace_filter_timeouts_total";
/// Requests a rate-limit filter turned away (429).
pub const RATE_LIMITED: &str = "sidetrace_filter_rate_limited_total";
/// Requests a concurrency-limit filter shed (503).
pub const CONCURRENCY_REJECTED: &str = "sidetrace_filter_concurrency_rejected_total";
/// Requests a max-body filter answered 413: declared or streamed past its limit.
pub const BODY_TOO_LARGE: &str = "sidetrace_filter_body_too_large_total";
/// Requests a retry filter sent again.
pub const RETRY_ATTEMPTS: &str = "sidetrace_filter_retry_attempts_total";
/// Retries a retry filter would have made but its budget refused.
pub const RETRY_BUDGET_EXHAUSTED: &str = "sidetrace_filter_retry_budget_exhausted_total";
/// A circuit breaker's state: 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "sidetrace_filter_circuit_breaker_state";
/// A circuit breaker's transitions, by the state entered (`to`).
pub const BREAKER_TRANSITIONS: &str = "sidetrace_filter_circuit_breaker_transitions_total";
/// Requests an open circuit breaker answered without calling the upstream.
pub const BREAKER_REJECTED: &str = "sidetrace_filter_circuit_breaker_rejected_total";

/// Where a chain's filters record, with the labels of the chain and, after
/// [`for_filter`](Self::for_filter), of one filter. The default records
/// nothing.
#[derive(Clone, Default)]
pub struct FilterMetrics {
    recorder: Option<Arc<dyn Recorder + Send + Sync>>,
    labels: Vec<Label>,
}

impl fmt::Debug for FilterMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilterMetrics")
            .field("recording", &self.recorder.is_some())
            .field("labels", &self.labels)
            .finish()
    }
}

impl FilterMetrics {
    /// The metrics of the chain of `route` (`""`: the default chain) on
    /// `listener`.
    pub fn new(
        recorder: Arc<dyn Recorder + Send + Sync>,
        listener: &'static str,
        route: &str,
    ) -> Self {
        Self {
            recorder: Some(recorder),
            labels: vec![
                Label::new("listener", listener),
                Label::new("route", route.to_owned()),
            ],
        }
    }

    /// The metrics of the chain of `route` on the same listener.
    pub fn for_route(&self, route: &str) -> Self {
        let mut labels = self.labels.clone();
        match labels.iter_mut().find(|l| l.key() == "route") {
            Some(label) => *label = Label::new("route", route.to_owned()),
            None => labels.push(Label::new("route", route.to_owned())),
        }
        Self {
            recorder: self.recorder.clone(),
            labels,
        }
    }

    /// The metrics of the filter at config path `path` in this chain.
    pub fn for_filter(&self, path: &str) -> Self {
        let mut labels = Vec::with_capacity(self.labels.len() + 1);
        labels.push(Label::new("filter", path.to_owned()));
        labels.extend(self.labels.iter().cloned());
        Self {
            recorder: self.recorder.clone(),
            labels,
        }
    }

    /// The counter `name` with this filter's labels (and `extra`).
    pub fn counter(&self, name: &'static str) -> Counter {
        self.counter_with(name, None)
    }

    /// The counter `name` with this filter's labels and one more.
    pub fn counter_with(&self, name: &'static str, extra: Option<Label>) -> Counter {
        match &self.recorder {
            Some(r) => {
                let mut labels = self.labels.clone();
                labels.extend(extra);
                r.register_counter(&Key::from_parts(name, labels), &metadata())
            }
            None => Counter::noop(),
        }
    }

    /// The gauge `name` with this filter's labels.
    pub fn gauge(&self, name: &'static str) -> Gauge {
        match &self.recorder {
            Some(r) => r.register_gauge(&Key::from_parts(name, self.labels.clone()), &metadata()),
            None => Gauge::noop(),
        }
    }
}

fn metadata() -> metrics::Metadata<'static> {
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
}
