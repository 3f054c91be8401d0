//! Exemplars: for each bucket of each request-duration series, the trace
//! and span of a recent sampled request that fell in it, so a latency spike
//! on a dashboard leads to a trace of one of the slow requests.
//!
//! Recording never waits: a slot another thread is writing at that instant
//! keeps its previous exemplar. Readers (the OpenMetrics rendering of
//! `/metrics`, the OTLP push) take a copy of each slot.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::trace::{SpanId, TraceId};

use super::DURATION_BUCKETS;

/// One request in a bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Exemplar {
    /// The request's trace.
    pub trace_id: TraceId,
    /// The request's span.
    pub span_id: SpanId,
    /// Its duration, in seconds.
    pub value: f64,
    /// When it ended, in milliseconds since the Unix epoch.
    pub unix_millis: u64,
}

/// The latest exemplar of each bucket of one series: one slot per bucket
/// bound and one for `+Inf`.
#[derive(Debug)]
pub struct Exemplars {
    bounds: Arc<[f64]>,
    slots: Box<[Mutex<Option<Exemplar>>]>,
}

/// A series' labels and exemplars, as renderers find them.
#[derive(Clone, Debug)]
pub struct ExemplarSeries {
    /// The metric name (`http_server_request_duration_seconds`, ...).
    pub name: &'static str,
    /// Its labels, as registered.
    pub labels: Arc<[(String, String)]>,
    /// Its exemplars.
    pub exemplars: Arc<Exemplars>,
}

/// Every duration series that has exemplars, registered once per series.
#[derive(Debug, Default)]
pub(crate) struct ExemplarIndex {
    series: RwLock<Vec<ExemplarSeries>>,
}

// === impl Exemplars ===

impl Default for Exemplars {
    /// Slots for the default [`DURATION_BUCKETS`].
    fn default() -> Self {
        Self::new(DURATION_BUCKETS.into())
    }
}

impl Exemplars {
    /// Slots for the histogram bucket `bounds` (ascending) and `+Inf`.
    pub fn new(bounds: Arc<[f64]>) -> Self {
        Self {
            slots: (0..=bounds.len()).map(|_| Mutex::new(None)).collect(),
            bounds,
        }
    }

    /// The bucket bounds, ascending (`+Inf` is the slot after the last).
    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    /// The slot of the bucket `value` (seconds) falls in: the first bound
    /// it does not exceed, as Prometheus' `le` counts it.
    pub fn bucket_of(&self, value: f64) -> usize {
        self.bounds.partition_point(|bound| *bound < value)
    }

    /// Keeps `exemplar` for its bucket, unless that slot is being written
    /// by another request at this instant.
    pub fn offer(&self, exemplar: Exemplar) {
        let Some(slot) = self.slots.get(self.bucket_of(exemplar.value)) else {
            return;
        };
        if let Some(mut slot) = slot.try_lock() {
            *slot = Some(exemplar);
        }
    }

    /// The exemplar of bucket `index` (`DURATION_BUCKETS.len()` is `+Inf`).
    pub fn get(&self, index: usize) -> Option<Exemplar> {
        *self.slots.get(index)?.lock()
    }
}

// === impl ExemplarIndex ===

impl ExemplarIndex {
    pub(crate) fn register(&self, series: ExemplarSeries) {
        self.series.write().push(series);
    }

    pub(crate) fn all(&self) -> Vec<ExemplarSeries> {
        self.series.read().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(value: f64) -> Exemplar {
        Exemplar {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([2; 8]),
            value,
            unix_millis: 1,
        }
    }

    #[test]
    fn a_value_lands_in_the_bucket_prometheus_counts_it_in() {
        let e = Exemplars::default();
        assert_eq!(e.bucket_of(0.001), 0);
        assert_eq!(e.bucket_of(0.005), 0, "le is inclusive");
        assert_eq!(e.bucket_of(0.0051), 1);
        assert_eq!(e.bucket_of(10.0), DURATION_BUCKETS.len() - 1);
        assert_eq!(e.bucket_of(11.0), DURATION_BUCKETS.len(), "+Inf");
        e.offer(at(0.2));
        e.offer(at(0.21));
        assert_eq!(e.get(e.bucket_of(0.2)).unwrap().value, 0.21, "the latest");
        assert_eq!(e.get(0), None);
        e.offer(at(30.0));
        assert!(e.get(DURATION_BUCKETS.len()).is_some());
        // Configured buckets (`metrics.duration_buckets`).
        let custom = Exemplars::new(vec![0.1, 1.0].into());
        assert_eq!(custom.bucket_of(0.5), 1);
        assert_eq!(custom.bucket_of(2.0), 2, "+Inf");
        custom.offer(at(2.0));
        assert!(custom.get(2).is_some());
    }
}
