//! Where and how a signal is exported: spans from the `tracing.export`
//! block, log records from `logs.export`, each overlaid with the standard
//! `OTEL_EXPORTER_OTLP_*` variables (env beats file; the signal's own
//! `_TRACES_` / `_LOGS_` / `_METRICS_` form beats the generic one). Metric
//! pushes come from `metrics.export`, converted by [`crate::metrics_export`].
//!
//! URL rules follow the OpenTelemetry specification:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used as-is; a base endpoint
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `tracing.export.endpoint`) gets
//! `/v1/traces` appended for OTLP/HTTP; for OTLP/gRPC only the scheme and
//! authority matter and the path is the `TraceService/Export` method (for
//! logs: `/v1/logs` and `LogsService/Export`). An `https://` endpoint is
//! reached over verified TLS (see [`super::tls`] for the certificate
//! settings).

use std::{collections::HashMap, sync::Arc, time::Duration};

use filters::trace::{ExportConfig, ExportProtocol};
use http::{header::HeaderName, uri::Scheme, HeaderMap, HeaderValue, Uri};

use super::tls::ExportTls;
use crate::tls::client::ClientTls;

/// The gRPC method of the OTLP trace service.
pub const GRPC_EXPORT_PATH: &str = Signal::TRACES.grpc_path;

/// An OTLP signal: where its batches go and the names of its settings,
/// metrics and messages, all fixed at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal {
    /// `traces` or `logs`.
    pub name: &'static str,
    /// What its items are called in messages: `spans`, `log records`.
    pub items: &'static str,
    /// The gRPC method, e.g. `/opentelemetry.proto.collector.trace.v1.TraceService/Export`.
    pub grpc_path: &'static str,
    /// Appended to a base endpoint for OTLP/HTTP, e.g. `/v1/traces`.
    pub http_path: &'static str,
    /// Environment variables.
    pub vars: SignalVars,
    /// Config fields, as errors name them.
    pub fields: SignalFields,
    /// Self-metric names.
    pub metrics: SignalMetrics,
}

/// A signal's environment variables: its own form first, then the generic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalVars {
    /// `OTEL_TRACES_EXPORTER`.
    pub exporter: &'static str,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as-is).
    pub endpoint: &'static str,
    /// `_PROTOCOL`, then the generic.
    pub protocol: [&'static str; 2],
    /// `_HEADERS`, then the generic.
    pub headers: [&'static str; 2],
    /// `_TIMEOUT`, then the generic.
    pub timeout: [&'static str; 2],
    /// `_COMPRESSION`, then the generic.
    pub compression: [&'static str; 2],
    /// `_CERTIFICATE`, then the generic.
    pub certificate: [&'static str; 2],
    /// `_CLIENT_CERTIFICATE`, then the generic.
    pub client_certificate: [&'static str; 2],
    /// `_CLIENT_KEY`, then the generic.
    pub client_key: [&'static str; 2],
}

/// A signal's config fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalFields {
    /// `tracing.export.endpoint`.
    pub endpoint: &'static str,
    /// `tracing.export.headers`.
    pub headers: &'static str,
    /// `tracing.export.tls`: the prefix of TLS errors.
    pub tls: &'static str,
    /// `tracing.export.tls.ca`.
    pub tls_ca: &'static str,
    /// `tracing.export.tls.cert`.
    pub tls_cert: &'static str,
    /// `tracing.export.tls.key`.
    pub tls_key: &'static str,
}

/// A signal's self-metric names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalMetrics {
    /// Items the collector took.
    pub exported: &'static str,
    /// Failed batches.
    pub errors: &'static str,
    /// Items lost, by `reason`.
    pub dropped: &'static str,
}

macro_rules! signal {
    ($name:literal, $upper:literal, $package:literal, $service:literal, $block:literal,
     $items:literal, $metric:literal, $errors:literal) => {
        Signal {
            name: $name,
            items: $items,
            grpc_path: concat!(
                "/opentelemetry.proto.collector.",
                $package,
                ".v1.",
                $service,
                "/Export"
            ),
            http_path: concat!("/v1/", $name),
            vars: SignalVars {
                exporter: concat!("OTEL_", $upper, "_EXPORTER"),
                endpoint: concat!("OTEL_EXPORTER_OTLP_", $upper, "_ENDPOINT"),
                protocol: [
                    concat!("OTEL_EXPORTER_OTLP_", $upper, "_PROTOCOL"),
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                ],
                headers: [
                    concat!("OTEL_EXPORTER_OTLP_", $upper, "_HEADERS"),
                    "OTEL_EXPORTER_OTLP_HEADERS",
                ],
                timeout: [
                    concat!("OTEL_EXPORTER_OTLP_", $upper, "_TIMEOUT"),
                    "OTEL_EXPORTER_OTLP_TIMEOUT",
                ],
                compression: [
                    concat!("OTEL_EXPORTER_OTLP_", $upper, "_COMPRESSION"),
                    "OTEL_EXPORTER_OTLP_COMPRESSION",
                ],
                certificate: [
                    concat!("OTEL_EXPORTER_OTLP_", $upper, "_CERTIFICATE"),
                    "OTEL_EXPORTER_OTLP_CERTIFICATE",
                ],
                client_certificate: [
                    concat!("OTEL_EXPORTER_OTLP_", $upper, "_CLIENT_CERTIFICATE"),
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                ],
                client_key: [
                    concat!("OTEL_EXPORTER_OTLP_", $upper, "_CLIENT_KEY"),
                    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                ],
            },
            fields: SignalFields {
                endpoint: concat!($block, ".endpoint"),
                headers: concat!($block, ".headers"),
                tls: concat!($block, ".tls"),
                tls_ca: concat!($block, ".tls.ca"),
                tls_cert: concat!($block, ".tls.cert"),
                tls_key: concat!($block, ".tls.key"),
            },
            metrics: SignalMetrics {
                exported: concat!("sidetrace_", $metric, "_exported_total"),
                errors: $errors,
                dropped: concat!("sidetrace_", $metric, "_dropped_total"),
            },
        }
    };
}

// === impl Signal ===

impl Signal {
    /// Spans, from `tracing.export`.
    pub const TRACES: Self = signal!(
        "traces",
        "TRACES",
        "trace",
        "TraceService",
        "tracing.export",
        "spans",
        "spans",
        "sidetrace_export_errors_total"
    );

    /// Log records, from `logs.export`.
    pub const LOGS: Self = signal!(
        "logs",
        "LOGS",
        "logs",
        "LogsService",
        "logs.export",
        "log records",
        "logs",
        "sidetrace_logs_export_errors_total"
    );

    /// Metric data points, from `metrics.export`, pushed periodically
    /// ([`crate::metrics_export`]). Named `sidetrace_metrics_export_*`: a
    /// failed push loses nothing while the proxy runs (the next push
    /// carries the totals, or the differences since the last push taken),
    /// so only a final push that fails at shutdown drops points.
    pub const METRICS: Self = Self {
        metrics: SignalMetrics {
            exported: "sidetrace_metrics_export_points_total",
            errors: "sidetrace_metrics_export_errors_total",
            dropped: "sidetrace_metrics_export_dropped_points_total",
        },
        ..signal!(
            "metrics",
            "METRICS",
            "metrics",
            "MetricsService",
            "metrics.export",
            "data points",
            "metrics",
            "sidetrace_metrics_export_errors_total"
        )
    };
}

/// Resolved export settings; `None` endpoint means the embedded store.
#[derive(Clone, Debug)]
pub struct ExportSettings {
    /// What is exported.
    pub signal: Signal,
    /// The full URL requests are sent to, when exporting.
    pub target: Option<Uri>,
    /// OTLP transport.
    pub protocol: ExportProtocol,
    /// Extra headers on every export request.
    pub headers: HeaderMap,
    /// Time allowed per attempt.
    pub timeout: Duration,
    /// gzip request bodies.
    pub gzip: bool,
    /// Spans per export request.
    pub batch_size: usize,
    /// Spans waiting before new ones are dropped.
    pub queue_size: usize,
    /// Longest a partial batch waits before it is sent.
    pub batch_timeout: Duration,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Certificate files for an `https://` target.
    pub tls: ExportTls,
}

/// Exponential backoff for retryable export failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

/// An export setting that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{source_name}: {message}")]
pub struct ExportConfigError {
    /// The config field or environment variable at fault.
    pub source_name: &'static str,
    /// What is wrong.
    pub message: String,
}

// === impl RetryPolicy ===

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt` (1-based retries), doubling each
    /// time and capped; `jitter` in `0.0..1.0` spreads it by up to half.
    pub fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        let base = exp.min(self.max_backoff);
        base.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
    }
}

// === impl ExportSettings ===

impl ExportSettings {
    /// Resolves `config` (`tracing.export`) and `env` for spans.
    pub fn resolve(
        config: &ExportConfig,
        env: &HashMap<String, String>,
    ) -> Result<Self, ExportConfigError> {
        Self::resolve_signal(Signal::TRACES, config, env)
    }

    /// Resolves `config` and `env` for `signal`.
    ///
    /// For logs and metrics, `OTEL_LOGS_EXPORTER=otlp` (`OTEL_METRICS_EXPORTER`) with no endpoint set anywhere
    /// exports to the specification's default (`http://localhost:4318`, or
    /// `:4317` for gRPC); spans without an endpoint go to the embedded store.
    pub fn resolve_signal(
        signal: Signal,
        config: &ExportConfig,
        env: &HashMap<String, String>,
    ) -> Result<Self, ExportConfigError> {
        let vars = &signal.vars;
        let var = |names: &[&'static str]| {
            names.iter().find_map(|n| {
                env.get(*n)
                    .map(|v| v.trim())
                    .filter(|v| !v.is_empty())
                    .map(|v| (*n, v))
            })
        };
        let protocol = match var(&vars.protocol) {
            Some((name, v)) => ExportProtocol::from_otel(v).ok_or_else(|| ExportConfigError {
                source_name: name,
                message: format!("{v:?} is not grpc or http/protobuf"),
            })?,
            None => config.protocol,
        };
        let exporter = var(&[vars.exporter]);
        let disabled = exporter.is_some_and(|(_, v)| v == "none");
        // Spans have always ignored values other than `none`; for logs and
        // metrics, which are new, anything but `otlp` or `none` is refused.
        let asked = match exporter {
            Some((_, "otlp")) => true,
            Some((name, other)) if signal != Signal::TRACES && other != "none" => {
                return Err(ExportConfigError {
                    source_name: name,
                    message: format!("{other:?} is not otlp or none"),
                })
            }
            _ => false,
        };
        let tls = ExportTls::resolve(&signal, var, config.tls.as_ref())?;
        let target = if disabled {
            None
        } else if let Some((name, url)) = var(&[vars.endpoint]) {
            Some(target(&signal, name, url, protocol, false)?)
        } else if let Some((name, url)) = var(&["OTEL_EXPORTER_OTLP_ENDPOINT"]) {
            Some(target(&signal, name, url, protocol, true)?)
        } else if let Some(url) = &config.endpoint {
            Some(target(
                &signal,
                signal.fields.endpoint,
                url,
                protocol,
                true,
            )?)
        } else if asked && signal != Signal::TRACES {
            let url = match protocol {
                ExportProtocol::Grpc => "http://localhost:4317",
                ExportProtocol::HttpProtobuf => "http://localhost:4318",
            };
            Some(target(&signal, vars.exporter, url, protocol, true)?)
        } else {
            None
        };
        if !disabled {
            tls.check_target(&signal, target.as_ref())?;
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            insert_header(&mut headers, signal.fields.headers, k, v)?;
        }
        if let Some((name, list)) = var(&vars.headers) {
            for member in list.split(',').filter(|m| !m.trim().is_empty()) {
                let (k, v) = member.split_once('=').ok_or_else(|| ExportConfigError {
                    source_name: name,
                    message: format!("{member:?} is not key=value"),
                })?;
                insert_header(&mut headers, name, k.trim(), &percent_decode(v.trim()))?;
            }
        }
        let timeout = match var(&vars.timeout) {
            Some((name, ms)) => match ms.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(ExportConfigError {
                        source_name: name,
                        message: format!("{ms:?} is not a number of milliseconds"),
                    })
                }
            },
            None => config.timeout,
        };
        let gzip = match var(&vars.compression) {
            Some((_, "gzip")) => true,
            Some((_, "none")) => false,
            Some((name, other)) => {
                return Err(ExportConfigError {
                    source_name: name,
                    message: format!("{other:?} is not gzip or none"),
                })
            }
            None => config.gzip,
        };
        Ok(Self {
            signal,
            target,
            protocol,
            headers,
            timeout,
            gzip,
            batch_size: config.batch_size.max(1),
            queue_size: config.queue_size.max(1),
            batch_timeout: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            tls,
        })
    }

    /// The TLS client for an `https://` target, its files read; `None`
    /// when spans are not exported over TLS.
    pub fn client_tls(&self) -> Result<Option<Arc<ClientTls>>, ExportConfigError> {
        match &self.target {
            Some(uri) if uri.scheme() == Some(&Scheme::HTTPS) => {
                self.tls.client_for(self.signal.fields.tls).map(Some)
            }
            _ => Ok(None),
        }
    }
}

fn target(
    signal: &Signal,
    name: &'static str,
    url: &str,
    protocol: ExportProtocol,
    base: bool,
) -> Result<Uri, ExportConfigError> {
    let err = |message: String| ExportConfigError {
        source_name: name,
        message,
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| err(format!("{url:?} is not a URL: {e}")))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => return Err(err(format!("{url:?} must start with http:// or https://"))),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| err(format!("{url:?} has no host")))?
        .clone();
    let path = match protocol {
        ExportProtocol::Grpc => signal.grpc_path.to_string(),
        ExportProtocol::HttpProtobuf if base => {
            format!("{}{}", uri.path().trim_end_matches('/'), signal.http_path)
        }
        ExportProtocol::HttpProtobuf => uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
    };
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| err(format!("{url:?}: {e}")))
}

fn insert_header(
    headers: &mut HeaderMap,
    source_name: &'static str,
    k: &str,
    v: &str,
) -> Result<(), ExportConfigError> {
    let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|_| {
        ExportConfigError {
            source_name,
            message: format!("{k:?} is not a header name"),
        }
    })?;
    let value = HeaderValue::from_str(v).map_err(|_| ExportConfigError {
        source_name,
        message: format!("the value of {k:?} is not a header value"),
    })?;
    headers.insert(name, value);
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(byte) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
