//! The receiver's metrics side: what its `MetricsService` (or
//! `POST /v1/metrics`) took.

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::KeyValue,
    metrics::v1::{metric::Data, HistogramDataPoint, Metric},
};

use super::{Export, Otlp};

/// One metrics export request as received.
pub type ReceivedMetrics = Export<ExportMetricsServiceRequest>;

// === impl Otlp ===

impl Otlp {
    /// Metrics export calls received so far, taken or not.
    pub fn metric_attempts(&self) -> usize {
        self.shared.metrics.attempts()
    }

    /// Metrics pushes taken so far, in order.
    pub fn metric_pushes(&self) -> Vec<ReceivedMetrics> {
        self.shared.metrics.exports()
    }

    /// Waits until `f` holds of the pushes taken so far, within
    /// [`crate::PATIENCE`]; returns them.
    pub async fn wait_for_metrics(
        &self,
        what: &str,
        f: impl Fn(&[ReceivedMetrics]) -> bool,
    ) -> Vec<ReceivedMetrics> {
        if !self.shared.metrics.wait_for(f).await {
            panic!(
                "waited for {what}; {} metrics export calls, {} taken, decode errors: {:?}",
                self.metric_attempts(),
                self.metric_pushes().len(),
                self.shared.decode_errors.borrow()
            );
        }
        self.metric_pushes()
    }
}

// === impl ReceivedMetrics ===

impl ReceivedMetrics {
    /// The resource attributes of the first `ResourceMetrics`.
    pub fn resource(&self) -> Vec<KeyValue> {
        self.request
            .resource_metrics
            .first()
            .and_then(|rm| rm.resource.as_ref())
            .map(|r| r.attributes.clone())
            .unwrap_or_default()
    }

    /// The metric named `name`, from any scope.
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.request
            .resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .find(|m| m.name == name)
    }

    /// The data points of histogram `name` and its temporality (none when
    /// the push has no such histogram).
    pub fn histogram(&self, name: &str) -> Option<(&[HistogramDataPoint], i32)> {
        match self.metric(name)?.data.as_ref()? {
            Data::Histogram(h) => Some((&h.data_points, h.aggregation_temporality)),
            _ => None,
        }
    }
}
