//! The OTLP exporter: one transport, bounded retries with backoff, a
//! timeout per attempt, and the export self-metrics.

use std::{io::Write, sync::Arc, time::Duration};

use bytes::Bytes;
use filters::trace::ExportProtocol;
use metrics::{Counter, Key, Label, Metadata, Recorder};

use super::{
    grpc::GrpcTransport,
    http::HttpTransport,
    settings::{ExportSettings, Signal},
    RetryPolicy,
};
use crate::tls::client::ClientTls;

/// The log target of the logs exporter's own warnings.
pub const LOGS_EXPORT_TARGET: &str = "sidetrace::export::logs";

/// Sends encoded batches to a collector.
#[derive(Clone, Debug)]
pub struct Exporter {
    transport: Transport,
    retry: RetryPolicy,
    timeout: Duration,
    gzip: bool,
    metrics: ExportMetrics,
    signal: Signal,
}

#[derive(Clone, Debug)]
enum Transport {
    Http(HttpTransport),
    Grpc(GrpcTransport),
}

/// The outcome of one attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The collector took the batch.
    Done,
    /// A transient failure; retry after the backoff (or the collector's
    /// `Retry-After`, capped by the policy).
    Retry(String, Option<Duration>),
    /// A permanent failure; the batch is dropped.
    Fail(String),
}

/// A batch that could not be exported.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("export of {spans} {items} failed after {attempts} attempt(s): {reason}")]
pub struct ExportError {
    /// Items (spans, log records) in the batch.
    pub spans: usize,
    /// What they are: `spans`, `log records`.
    pub items: &'static str,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    pub reason: String,
}

/// Export self-metrics (named here for spans; a signal's own names in
/// [`Signal::metrics`]).
#[derive(Clone, Debug)]
pub struct ExportMetrics {
    /// `sidetrace_spans_exported_total`.
    pub exported: Counter,
    /// `sidetrace_export_errors_total`: failed batches.
    pub errors: Counter,
    /// `sidetrace_spans_dropped_total{reason="export_failed"}`.
    pub dropped_failed: Counter,
    /// `sidetrace_spans_dropped_total{reason="shutdown"}`: left in the queue
    /// when the shutdown deadline passed.
    pub dropped_shutdown: Counter,
}

// === impl ExportMetrics ===

impl ExportMetrics {
    /// Registers the span export handles with `recorder`.
    pub fn register(recorder: &dyn Recorder) -> Self {
        Self::register_for(recorder, &Signal::TRACES)
    }

    /// Registers `signal`'s handles with `recorder`.
    pub fn register_for(recorder: &dyn Recorder, signal: &Signal) -> Self {
        let md = Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        let c = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &md)
        };
        let names = &signal.metrics;
        Self {
            exported: c(names.exported, vec![]),
            errors: c(names.errors, vec![]),
            dropped_failed: c(names.dropped, vec![Label::new("reason", "export_failed")]),
            dropped_shutdown: c(names.dropped, vec![Label::new("reason", "shutdown")]),
        }
    }

    /// Handles that record nothing.
    pub fn noop() -> Self {
        Self {
            exported: Counter::noop(),
            errors: Counter::noop(),
            dropped_failed: Counter::noop(),
            dropped_shutdown: Counter::noop(),
        }
    }
}

// === impl Exporter ===

impl Exporter {
    /// The exporter for `settings`; `None` when no endpoint is set (spans go
    /// to the embedded store). `tls` ([`ExportSettings::client_tls`])
    /// reaches an `https://` endpoint.
    pub fn new(
        settings: &ExportSettings,
        tls: Option<Arc<ClientTls>>,
        metrics: ExportMetrics,
    ) -> Option<Self> {
        let target = settings.target.clone()?;
        let headers = settings.headers.clone();
        let gzip = settings.gzip;
        let transport = match settings.protocol {
            ExportProtocol::HttpProtobuf => {
                Transport::Http(HttpTransport::new(target, headers, gzip, tls))
            }
            ExportProtocol::Grpc => Transport::Grpc(GrpcTransport::new(target, headers, gzip, tls)),
        };
        Some(Self {
            transport,
            retry: settings.retry,
            timeout: settings.timeout,
            gzip: settings.gzip,
            metrics,
            signal: settings.signal,
        })
    }

    /// Exports one encoded batch of `spans` spans (or other items),
    /// retrying transient failures with backoff. Counts exported items, or
    /// the failed batch and its items as dropped.
    pub async fn export(&self, encoded: Bytes, spans: usize) -> Result<(), ExportError> {
        let body = if self.gzip {
            match gzip(&encoded) {
                Ok(b) => b,
                Err(e) => return Err(self.failed(spans, 0, format!("gzip failed: {e}"))),
            }
        } else {
            encoded
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = tokio::time::timeout(self.timeout, self.send(body.clone())).await;
            let (reason, retry_after) = match result {
                Ok(Attempt::Done) => {
                    self.metrics.exported.increment(spans as u64);
                    return Ok(());
                }
                Ok(Attempt::Fail(reason)) => return Err(self.failed(spans, attempt, reason)),
                Ok(Attempt::Retry(reason, after)) => (reason, after),
                Err(_) => (format!("no answer within {:?}", self.timeout), None),
            };
            if attempt >= self.retry.max_attempts {
                return Err(self.failed(spans, attempt, reason));
            }
            let backoff = retry_after
                .unwrap_or_else(|| self.retry.backoff(attempt, rand::random::<f64>()))
                .min(self.retry.max_backoff);
            tracing::debug!(
                target: "sidetrace::export",
                signal = self.signal.name,
                attempt,
                reason,
                backoff_ms = backoff.as_millis() as u64,
                "export attempt failed; retrying"
            );
            tokio::time::sleep(backoff).await;
        }
    }

    async fn send(&self, body: Bytes) -> Attempt {
        match &self.transport {
            Transport::Http(t) => t.send(body).await,
            Transport::Grpc(t) => t.send(body).await,
        }
    }

    fn failed(&self, spans: usize, attempts: u32, reason: String) -> ExportError {
        self.metrics.errors.increment(1);
        self.metrics.dropped_failed.increment(spans as u64);
        let e = ExportError {
            spans,
            items: self.signal.items,
            attempts,
            reason,
        };
        if self.signal == Signal::LOGS {
            // Under its own target, which the logs pipeline does not take
            // in: a failing logs export must not feed itself.
            tracing::warn!(target: LOGS_EXPORT_TARGET, error = %e, "log record batch dropped");
        } else if self.signal == Signal::METRICS {
            tracing::warn!(target: "sidetrace::export", error = %e, "metrics push failed");
        } else {
            tracing::warn!(target: "sidetrace::export", error = %e, "span batch dropped");
        }
        e
    }
}

/// gzip of `data`.
pub fn gzip(data: &[u8]) -> std::io::Result<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(data)?;
    Ok(enc.finish()?.into())
}
