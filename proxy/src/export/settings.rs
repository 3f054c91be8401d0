//! Where and how spans are exported: the `tracing.export` block overlaid
//! with the standard `OTEL_EXPORTER_OTLP_*` variables (env beats file).
//!
//! URL rules follow the OpenTelemetry specification:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used as-is; a base endpoint
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `tracing.export.endpoint`) gets
//! `/v1/traces` appended for OTLP/HTTP; for OTLP/gRPC only the scheme and
//! authority matter and the path is the `TraceService/Export` method.
//! An `https://` endpoint is reached over verified TLS (see [`super::tls`]
//! for the certificate settings).

use std::{collections::HashMap, sync::Arc, time::Duration};

use filters::trace::{ExportConfig, ExportProtocol};
use http::{header::HeaderName, uri::Scheme, HeaderMap, HeaderValue, Uri};

use super::tls::ExportTls;
use crate::tls::client::ClientTls;

/// The gRPC method of the OTLP trace service.
pub const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Resolved export settings; `None` endpoint means the embedded store.
#[derive(Clone, Debug)]
pub struct ExportSettings {
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
    /// Resolves `config` and `env`.
    pub fn resolve(
        config: &ExportConfig,
        env: &HashMap<String, String>,
    ) -> Result<Self, ExportConfigError> {
        let var = |names: &[&'static str]| {
            names.iter().find_map(|n| {
                env.get(*n)
                    .map(|v| v.trim())
                    .filter(|v| !v.is_empty())
                    .map(|v| (*n, v))
            })
        };
        let protocol = match var(&[
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]) {
            Some((name, v)) => ExportProtocol::from_otel(v).ok_or_else(|| ExportConfigError {
                source_name: name,
                message: format!("{v:?} is not grpc or http/protobuf"),
            })?,
            None => config.protocol,
        };
        let disabled = var(&["OTEL_TRACES_EXPORTER"]).is_some_and(|(_, v)| v == "none");
        let tls = ExportTls::resolve(var, config.tls.as_ref())?;
        let target = if disabled {
            None
        } else if let Some((name, url)) = var(&["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]) {
            Some(target(name, url, protocol, false)?)
        } else if let Some((name, url)) = var(&["OTEL_EXPORTER_OTLP_ENDPOINT"]) {
            Some(target(name, url, protocol, true)?)
        } else if let Some(url) = &config.endpoint {
            Some(target("tracing.export.endpoint", url, protocol, true)?)
        } else {
            None
        };
        if !disabled {
            tls.check_target(target.as_ref())?;
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            insert_header(&mut headers, "tracing.export.headers", k, v)?;
        }
        if let Some((name, list)) = var(&[
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ]) {
            for member in list.split(',').filter(|m| !m.trim().is_empty()) {
                let (k, v) = member.split_once('=').ok_or_else(|| ExportConfigError {
                    source_name: name,
                    message: format!("{member:?} is not key=value"),
                })?;
                insert_header(&mut headers, name, k.trim(), &percent_decode(v.trim()))?;
            }
        }
        let timeout = match var(&[
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ]) {
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
        let gzip = match var(&[
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ]) {
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
            Some(uri) if uri.scheme() == Some(&Scheme::HTTPS) => self.tls.client().map(Some),
            _ => Ok(None),
        }
    }
}

fn target(
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
        ExportProtocol::Grpc => GRPC_EXPORT_PATH.to_string(),
        ExportProtocol::HttpProtobuf if base => {
            format!("{}/v1/traces", uri.path().trim_end_matches('/'))
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
