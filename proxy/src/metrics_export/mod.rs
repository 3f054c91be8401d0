//! OTLP push of the metrics `/metrics` shows: every instrument (RED,
//! upstream hop, service graph, self-metrics, process) goes to a collector
//! every `metrics.export.interval` (`OTEL_METRIC_EXPORT_INTERVAL`), with the
//! spans' resource, the same histogram bounds, cumulative or delta.
//!
//! ```text
//! recorder ──render──► Prometheus text ──┬─► GET /metrics
//!                      (+ process_*)     └─► parse ─► Converter ─► Exporter ─► collector
//!                                            (export runtime, every interval and at drain)
//! ```
//!
//! One registry, one rendering: the push reads the very text a scrape gets
//! ([`crate::admin::exposition`]) with the reader `/debug/red` uses
//! ([`crate::exposition`]), so the two channels cannot disagree on a
//! count, a bucket bound or a series limit. The
//! recorder keeps no readable registry of its own (histogram samples are
//! folded into buckets only when it renders) and the `process_*` families
//! exist only in the rendering, so the text is the one complete view. The
//! cost is a render and a parse per push, on the export thread, every 30 s
//! by default; nothing is added to the request path.
//!
//! Wiring, at start-up (inside the runtime):
//!
//! ```no_run
//! # async fn wire(config: sidetrace::metrics_export::MetricsExportConfig,
//! #               env: std::collections::HashMap<String, String>,
//! #               recorder: metrics_exporter_prometheus::PrometheusRecorder,
//! #               resource: filters::trace::Resource) {
//! use std::{sync::Arc, time::Duration};
//! use sidetrace::metrics_export::MetricsPush;
//!
//! let handle = recorder.handle();
//! let source = Arc::new(move || sidetrace::admin::exposition(&handle));
//! let push = MetricsPush::start(&config, &env, &resource, source, None, &recorder)
//!     .expect("valid metrics export settings");
//! // ... serve; at the end of the drain, after the spans:
//! push.shutdown(Duration::from_secs(1)).await;
//! # }
//! ```

mod config;
pub mod otlp;
mod push;

pub use self::{
    config::{
        MetricsExportConfig, Schedule, Temporality, EXPORT_FIELDS, INTERVAL_VAR, TEMPORALITY_VAR,
    },
    push::{resolve, ExemplarSource, MetricsPush, Source},
};
