//! The span pipeline and its destinations: the receiving end of the trace
//! layers' bounded span queue, batching, OTLP export (gRPC or
//! HTTP/protobuf) with retry and backoff, and the embedded trace store
//! behind `/debug/traces` when no collector is configured. The logs
//! pipeline ([`crate::logs`]) reuses the batching ([`PipelineHandle`] over a
//! [`BatchSink`]), settings and transports for another [`Signal`].
//!
//! ```text
//! TraceLayer ──try_send──► bounded queue ──► Batcher (size or 1 s) ──► Exporter ──► collector
//!                 (full: drop + count)                              └─► TraceStore ──► /debug/traces
//! ```
//!
//! Everything right of the queue runs on the [`export_runtime`], a thread of
//! its own: batching, encoding and sending never hold a thread that serves
//! requests.
//!
//! Wiring, at start-up (inside the runtime):
//!
//! ```no_run
//! # async fn wire(cfg: filters::trace::TracingConfig, env: std::collections::HashMap<String, String>,
//! #               recorder: metrics_exporter_prometheus::PrometheusRecorder) {
//! use std::{sync::Arc, time::Duration};
//! use filters::trace::{Resource, ServiceInfo, TraceLayer, TraceMetrics, TraceOptions, TraceSettings};
//! use sidetrace::export::{ExportMetrics, ExportSettings, Pipeline, StoreBounds};
//!
//! let trace_metrics = TraceMetrics::register(&recorder);
//! let export = ExportSettings::resolve(&cfg.export, &env).expect("valid export settings");
//! // Reads the CA and client certificate files of an https:// collector.
//! let tls = export.client_tls().expect("readable TLS files");
//! let resource = Resource::new(ServiceInfo { name: Some("checkout"), ..Default::default() }, &env);
//! let pipeline = Pipeline::start(
//!     &export,
//!     tls,
//!     &resource,
//!     StoreBounds::of(&cfg),
//!     trace_metrics.spans_dropped_queue_full.clone(),
//!     ExportMetrics::register(&recorder),
//! );
//! let settings = Arc::new(TraceSettings::new(&cfg, &[], trace_metrics).expect("valid tracing config"));
//! let layer = TraceLayer::new(TraceOptions::server("http", None), settings, pipeline.sink.clone());
//! // ... serve; the admin server answers /debug/traces with pipeline.store.handle(path, query) ...
//! pipeline.handle.shutdown(Duration::from_secs(5)).await;
//! # }
//! ```

mod client;
mod exporter;
pub mod grpc;
pub mod http;
pub mod otlp;
mod queue;
mod settings;
pub mod store;
mod tls;

pub use self::{
    exporter::{gzip, Attempt, ExportError, ExportMetrics, Exporter, LOGS_EXPORT_TARGET},
    queue::{export_runtime, BatchSink, Destination, Pipeline, PipelineHandle, StoreBounds},
    settings::{
        ExportConfigError, ExportSettings, RetryPolicy, Signal, SignalFields, SignalMetrics,
        SignalVars, GRPC_EXPORT_PATH,
    },
    store::TraceStore,
    tls::{ExportTls, TlsFile, TLS_FIELD},
};

#[cfg(test)]
mod tests;
