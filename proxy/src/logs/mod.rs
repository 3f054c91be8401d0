//! The third signal: access records and the proxy's own warnings and errors
//! as OpenTelemetry log records, exported over OTLP with the spans' resource
//! and, for access records, the request span's trace and span ids, so a
//! backend joins logs, traces and metrics.
//!
//! ```text
//! TraceLayer (body end) ──try_send AccessRecord──┐
//!                                                ├─► bounded queue ──► batches ──► Exporter ──► collector
//! tracing WARN/ERROR ──EventLayer──try_send──────┘   (full: drop + count)       (/v1/logs, LogsService/Export)
//! ```
//!
//! The pipeline has the span pipeline's shape and pieces: the same batching
//! task, settings resolution (`logs.export` and the `_LOGS_` variables,
//! [`Signal::LOGS`](crate::export::Signal::LOGS)), transports, TLS and retry.
//! Stdout logging is separate: `logs.stdout` and `tracing.access_log` say
//! what is written there; `logs.access` which requests get an entry at all.
//!
//! Wiring, at start-up (inside the runtime):
//!
//! ```no_run
//! # async fn wire(config: sidetrace::logs::LogsConfig, env: std::collections::HashMap<String, String>,
//! #               recorder: metrics_exporter_prometheus::PrometheusRecorder,
//! #               layer: filters::trace::TraceLayer, resource: filters::trace::Resource) {
//! use std::time::Duration;
//! use sidetrace::logs::Logs;
//!
//! let logs = Logs::start(&config, &env, &resource, &recorder).expect("valid logs settings");
//! let layer = layer.logging_to(logs.sink.clone());
//! // ... serve; at the end of the drain, after the spans:
//! logs.shutdown(Duration::from_secs(1)).await;
//! # }
//! ```

mod config;
pub mod events;
pub mod otlp;
mod pipeline;

pub use self::{
    config::{LogsConfig, EXPORT_FIELDS},
    pipeline::Logs,
};
