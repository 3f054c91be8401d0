//! The logs pipeline: the span pipeline's batching task
//! ([`PipelineHandle`]) over the logs queue, the OTLP exporter for
//! [`Signal::LOGS`], and the registration that brings the proxy's own
//! warnings in.

use std::{collections::HashMap, sync::Arc, time::Duration};

use filters::trace::{LogRecord, LogSink, Resource};
use metrics::{Key, Label, Metadata, Recorder};

use super::{events, otlp::Encoder, LogsConfig};
use crate::{
    export::{
        otlp, BatchSink, ExportConfigError, ExportMetrics, ExportSettings, Exporter,
        PipelineHandle, Signal,
    },
    tls::client::ClientTls,
};

/// The logs pipeline of a proxy: the sink the trace layers queue access
/// records into, and, when log records are exported, the running export.
#[derive(Debug)]
pub struct Logs {
    /// Give it to every trace layer ([`TraceLayer::logging_to`](filters::trace::TraceLayer::logging_to));
    /// it discards everything when logs are not exported.
    pub sink: LogSink,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    handle: PipelineHandle,
    events: events::Registration,
    tls: Option<Arc<ClientTls>>,
}

/// Where batches of log records go.
struct Destination {
    exporter: Exporter,
    encoder: Encoder,
}

// === impl Logs ===

impl Logs {
    /// Starts the pipeline on the current runtime when `config.export` (or
    /// `OTEL_EXPORTER_OTLP_[LOGS_]*` in `env`) names a collector. The
    /// records carry `resource`, the spans' own. The self-metrics are
    /// registered with `recorder` either way.
    pub fn start(
        config: &LogsConfig,
        env: &HashMap<String, String>,
        resource: &Resource,
        recorder: &dyn Recorder,
    ) -> Result<Self, ExportConfigError> {
        let settings = ExportSettings::resolve_signal(Signal::LOGS, &config.export, env)?;
        let tls = settings.client_tls()?;
        let metrics = ExportMetrics::register_for(recorder, &Signal::LOGS);
        let md = Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        let queue_full = recorder.register_counter(
            &Key::from_parts(
                Signal::LOGS.metrics.dropped,
                vec![Label::new("reason", "queue_full")],
            ),
            &md,
        );
        let dropped_shutdown = metrics.dropped_shutdown.clone();
        let Some(exporter) = Exporter::new(&settings, tls.clone(), metrics) else {
            return Ok(Self {
                sink: LogSink::discard(),
                running: None,
            });
        };
        let (sink, rx) = LogSink::channel(settings.queue_size, queue_full);
        let destination = Destination {
            exporter,
            encoder: Encoder::new(&otlp::resource(resource)),
        };
        let handle = PipelineHandle::spawn(
            rx,
            destination,
            settings.batch_size,
            settings.batch_timeout,
            dropped_shutdown,
        );
        Ok(Self {
            running: Some(Running {
                handle,
                events: events::register(sink.clone()),
                tls,
            }),
            sink,
        })
    }

    /// Whether log records are exported.
    pub fn is_exporting(&self) -> bool {
        self.running.is_some()
    }

    /// The TLS client of an `https://` collector, to watch its files.
    pub fn tls(&self) -> Option<&Arc<ClientTls>> {
        self.running.as_ref().and_then(|r| r.tls.as_ref())
    }

    /// Sends everything queued so far.
    pub async fn flush(&self) {
        if let Some(r) = &self.running {
            r.handle.flush().await;
        }
    }

    /// Stops taking the proxy's events, sends what is queued and stops,
    /// giving up at `deadline`; whether everything was sent in time.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        let Some(Running { handle, events, .. }) = self.running else {
            return true;
        };
        drop(events);
        handle.shutdown(deadline).await
    }
}

// === impl Destination ===

impl BatchSink<LogRecord> for Destination {
    const ITEMS: &'static str = "log records";

    async fn send(&mut self, batch: Vec<LogRecord>) {
        let encoded = self.encoder.encode(&batch);
        let n = batch.len();
        drop(batch);
        // Failures are counted and logged (not fed back) by the exporter.
        let _ = self.exporter.export(encoded, n).await;
    }
}

#[cfg(test)]
mod tests;
