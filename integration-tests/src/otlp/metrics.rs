//! The receiver's metrics side: tonic's `MetricsService` from
//! opentelemetry-proto and what it (or `POST /v1/metrics`) took.

use std::sync::{atomic::Ordering, Arc};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::{
        metrics_service_server::{MetricsService, MetricsServiceServer},
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    },
    common::v1::KeyValue,
    metrics::v1::{metric::Data, HistogramDataPoint, Metric},
};

use super::{Otlp, Shared};

/// One metrics export request as received.
#[derive(Clone, Debug)]
pub struct ReceivedMetrics {
    /// The decoded request.
    pub request: ExportMetricsServiceRequest,
    /// The body came gzipped.
    pub gzip: bool,
    /// The request's headers (gRPC: its metadata as HTTP headers).
    pub headers: http::HeaderMap,
}

pub(super) struct MetricsReceiver(Arc<Shared>);

/// The gRPC service, beside the trace and logs services.
pub(super) fn service(shared: &Arc<Shared>) -> MetricsServiceServer<MetricsReceiver> {
    MetricsServiceServer::new(MetricsReceiver(shared.clone()))
}

// === impl Otlp ===

impl Otlp {
    /// Metrics export calls received so far, taken or not.
    pub fn metric_attempts(&self) -> usize {
        self.shared.metric_attempts.load(Ordering::SeqCst)
    }

    /// Metrics pushes taken so far, in order.
    pub fn metric_pushes(&self) -> Vec<ReceivedMetrics> {
        self.shared.metrics.borrow().clone()
    }

    /// Waits until `f` holds of the pushes taken so far, within
    /// [`crate::PATIENCE`]; returns them.
    pub async fn wait_for_metrics(
        &self,
        what: &str,
        f: impl Fn(&[ReceivedMetrics]) -> bool,
    ) -> Vec<ReceivedMetrics> {
        let mut rx = self.shared.metrics.subscribe();
        let waited = tokio::time::timeout(crate::PATIENCE, rx.wait_for(|r| f(r))).await;
        match waited {
            Ok(Ok(_)) => self.metric_pushes(),
            _ => panic!(
                "waited for {what}; {} metrics export calls, {} taken, decode errors: {:?}",
                self.metric_attempts(),
                self.metric_pushes().len(),
                self.shared.decode_errors.borrow()
            ),
        }
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

// === impl Shared ===

impl Shared {
    /// Applies the mode to one metrics export: `true` when it was taken.
    pub(super) async fn answer_metrics(&self, received: ReceivedMetrics) -> bool {
        self.metric_attempts.fetch_add(1, Ordering::SeqCst);
        if !self.admit().await {
            return false;
        }
        self.metrics.send_modify(|r| r.push(received));
        true
    }
}

// === impl MetricsReceiver ===

#[tonic::async_trait]
impl MetricsService for MetricsReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let headers = request.metadata().clone().into_headers();
        let gzip = headers
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes() == b"gzip");
        let received = ReceivedMetrics {
            request: request.into_inner(),
            gzip,
            headers,
        };
        if self.0.answer_metrics(received).await {
            Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
        } else {
            Err(tonic::Status::unavailable("the test collector is down"))
        }
    }
}
