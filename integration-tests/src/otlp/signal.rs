//! What the receiver does the same way for traces, logs and metrics: keep
//! each export request with how it came, count the calls, answer as the
//! mode says, over gRPC or OTLP/HTTP, and read what it took back. A signal
//! differs only in its messages and where [`Shared`] keeps what it took
//! ([`Signal`]); spans and log records come in resource and scope batches
//! alike ([`Batched`]).

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{
            logs_service_server::{LogsService, LogsServiceServer},
            ExportLogsServiceRequest, ExportLogsServiceResponse,
        },
        metrics::v1::{
            metrics_service_server::{MetricsService, MetricsServiceServer},
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        },
        trace::v1::{
            trace_service_server::{TraceService, TraceServiceServer},
            ExportTraceServiceRequest, ExportTraceServiceResponse,
        },
    },
    common::v1::{InstrumentationScope, KeyValue},
    logs::v1::LogRecord,
    resource::v1::Resource,
    trace::v1::Span,
};
use tokio::sync::watch;

use super::Shared;

/// One export request as received.
#[derive(Clone, Debug)]
pub struct Export<R> {
    /// The decoded request.
    pub request: R,
    /// The body came gzipped (`content-encoding` or `grpc-encoding`).
    pub gzip: bool,
    /// The request's headers (gRPC: its metadata as HTTP headers).
    pub headers: http::HeaderMap,
}

/// One signal's exports taken so far and its export calls, taken or not.
pub(super) struct Taken<R> {
    pub(super) exports: watch::Sender<Vec<Export<R>>>,
    pub(super) attempts: AtomicUsize,
}

/// An export request message: its answer, and where the receiver keeps it.
pub(super) trait Signal: prost::Message + Default + Send + Sync + 'static {
    /// The empty answer to a taken export.
    type Response: prost::Message + Default;
    /// Names the signal in a decode error (`""` for traces).
    const NAME: &'static str;
    /// What the receiver took of this signal.
    fn taken(shared: &Shared) -> &Taken<Self>;
}

/// An export request whose items come in resource and scope batches.
pub(super) trait Batched: Signal {
    /// A span or a log record.
    type Item: Clone;
    /// Every scope batch of the request.
    fn batches(&self) -> impl Iterator<Item = Batch<'_, Self::Item>>;
}

/// A resource, a scope and the items sent under both.
pub(super) type Batch<'a, T> = (
    Option<&'a Resource>,
    Option<&'a InstrumentationScope>,
    &'a [T],
);

/// Every item of `exports`, made by `item` from its resource's attributes,
/// its scope's name and itself.
pub(super) fn flatten<R: Batched, T>(
    exports: &[Export<R>],
    item: impl Fn(Vec<KeyValue>, String, R::Item) -> T,
) -> Vec<T> {
    let mut out = Vec::new();
    for export in exports {
        for (resource, scope, items) in export.request.batches() {
            let resource = resource.map(|r| r.attributes.clone()).unwrap_or_default();
            let scope = scope.map(|s| s.name.clone()).unwrap_or_default();
            for i in items {
                out.push(item(resource.clone(), scope.clone(), i.clone()));
            }
        }
    }
    out
}

/// The receiver's gRPC services, routed by path as a collector does.
pub(super) fn grpc_routes(shared: &Arc<Shared>) -> tonic::service::Routes {
    tonic::service::Routes::new(TraceServiceServer::new(GrpcReceiver(shared.clone())))
        .add_service(LogsServiceServer::new(GrpcReceiver(shared.clone())))
        .add_service(MetricsServiceServer::new(GrpcReceiver(shared.clone())))
}

/// One gRPC export call, answered as the mode says.
async fn grpc_export<R: Signal>(
    shared: &Shared,
    request: tonic::Request<R>,
) -> Result<tonic::Response<R::Response>, tonic::Status> {
    let headers = request.metadata().clone().into_headers();
    let gzip = headers
        .get("grpc-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let export = Export {
        request: request.into_inner(),
        gzip,
        headers,
    };
    if shared.take(export).await {
        Ok(tonic::Response::new(R::Response::default()))
    } else {
        Err(tonic::Status::unavailable("the test collector is down"))
    }
}

// === impl Taken ===

impl<R> Default for Taken<R> {
    fn default() -> Self {
        Self {
            exports: watch::channel(Vec::new()).0,
            attempts: AtomicUsize::new(0),
        }
    }
}

impl<R: Clone> Taken<R> {
    /// The export requests taken so far, in order.
    pub(super) fn exports(&self) -> Vec<Export<R>> {
        self.exports.borrow().clone()
    }

    /// Export calls so far, taken or not.
    pub(super) fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Waits until `f` holds of the exports taken so far, within
    /// [`crate::PATIENCE`]; whether it did.
    pub(super) async fn wait_for(&self, f: impl Fn(&[Export<R>]) -> bool) -> bool {
        let mut rx = self.exports.subscribe();
        let waited = tokio::time::timeout(crate::PATIENCE, rx.wait_for(|r| f(r))).await;
        matches!(waited, Ok(Ok(_)))
    }
}

// === impl Shared ===

impl Shared {
    /// Applies the mode to one export: `true` when it was taken, `false`
    /// when refused.
    pub(super) async fn take<R: Signal>(&self, export: Export<R>) -> bool {
        let taken = R::taken(self);
        taken.attempts.fetch_add(1, Ordering::SeqCst);
        if !self.admit().await {
            return false;
        }
        taken.exports.send_modify(|r| r.push(export));
        true
    }
}

// === impl Signal ===

impl Signal for ExportTraceServiceRequest {
    type Response = ExportTraceServiceResponse;
    const NAME: &'static str = "";
    fn taken(shared: &Shared) -> &Taken<Self> {
        &shared.traces
    }
}

impl Signal for ExportLogsServiceRequest {
    type Response = ExportLogsServiceResponse;
    const NAME: &'static str = "logs ";
    fn taken(shared: &Shared) -> &Taken<Self> {
        &shared.logs
    }
}

impl Signal for ExportMetricsServiceRequest {
    type Response = ExportMetricsServiceResponse;
    const NAME: &'static str = "metrics ";
    fn taken(shared: &Shared) -> &Taken<Self> {
        &shared.metrics
    }
}

// === impl Batched ===

impl Batched for ExportTraceServiceRequest {
    type Item = Span;
    fn batches(&self) -> impl Iterator<Item = Batch<'_, Span>> {
        self.resource_spans.iter().flat_map(|rs| {
            (rs.scope_spans.iter())
                .map(|ss| (rs.resource.as_ref(), ss.scope.as_ref(), &ss.spans[..]))
        })
    }
}

impl Batched for ExportLogsServiceRequest {
    type Item = LogRecord;
    fn batches(&self) -> impl Iterator<Item = Batch<'_, LogRecord>> {
        self.resource_logs.iter().flat_map(|rl| {
            (rl.scope_logs.iter())
                .map(|sl| (rl.resource.as_ref(), sl.scope.as_ref(), &sl.log_records[..]))
        })
    }
}

// === gRPC ===

/// tonic's generated services, one per signal, over the same [`Shared`].
struct GrpcReceiver(Arc<Shared>);

// tonic generates a trait per service; every one's export is the same call.
macro_rules! grpc_service {
    ($($service:ident for $request:ty),*) => {$(
        #[tonic::async_trait]
        impl $service for GrpcReceiver {
            async fn export(
                &self,
                request: tonic::Request<$request>,
            ) -> Result<tonic::Response<<$request as Signal>::Response>, tonic::Status> {
                grpc_export(&self.0, request).await
            }
        }
    )*};
}

grpc_service!(
    TraceService for ExportTraceServiceRequest,
    LogsService for ExportLogsServiceRequest,
    MetricsService for ExportMetricsServiceRequest
);
