//! `tracing.export:` (and the proxy's `logs.export:`, which has the same
//! keys): where OTLP goes and how, and the checks serde cannot make.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{registry::ConfigError, secret::SecretHeaders};

/// `tracing.export:` and `logs.export:`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// Collector base URL (e.g. `http://otel-collector:4317`); none means
    /// the embedded store. Rendered without userinfo or query.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::secret::serialize_url"
    )]
    pub endpoint: Option<String>,
    /// OTLP transport.
    pub protocol: ExportProtocol,
    /// Spans (log records) per export request.
    pub batch_size: usize,
    /// Spans (log records) waiting for export before new ones are dropped.
    pub queue_size: usize,
    /// Extra request headers (e.g. an API key); rendered with every value
    /// `[REDACTED]`.
    pub headers: SecretHeaders,
    /// Time allowed per export attempt.
    #[serde(with = "crate::duration")]
    pub timeout: Duration,
    /// gzip the export body.
    pub gzip: bool,
    /// Trust and client certificate for an `https://` collector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ExportTlsConfig>,
}

/// `tracing.export.tls:`: files for an `https://` collector. The CA bundle
/// is trusted in addition to the system roots, as
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` is; the environment variables win.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExportTlsConfig {
    /// PEM CA bundle that verifies the collector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain, for a collector that requires mTLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// OTLP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum ExportProtocol {
    /// OTLP/gRPC (`TraceService/Export`), usually port 4317.
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`/v1/traces`), usually port 4318;
    /// the OpenTelemetry default.
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

// === impl ExportConfig ===

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: ExportProtocol::default(),
            batch_size: 512,
            queue_size: 8192,
            headers: SecretHeaders::default(),
            timeout: Duration::from_secs(10),
            gzip: false,
            tls: None,
        }
    }
}

/// The field names an export block's errors carry (`tracing.export.*`,
/// `logs.export.*`).
#[derive(Clone, Copy, Debug)]
pub struct ExportFields {
    /// `<block>.endpoint`.
    pub endpoint: &'static str,
    /// `<block>.queue_size`.
    pub queue_size: &'static str,
    /// `<block>.batch_size`.
    pub batch_size: &'static str,
    /// `<block>.timeout`.
    pub timeout: &'static str,
    /// `<block>.headers`.
    pub headers: &'static str,
}

impl ExportFields {
    /// `tracing.export`.
    pub const TRACING: Self = Self {
        endpoint: "tracing.export.endpoint",
        queue_size: "tracing.export.queue_size",
        batch_size: "tracing.export.batch_size",
        timeout: "tracing.export.timeout",
        headers: "tracing.export.headers",
    };
}

impl ExportConfig {
    /// Checks what serde cannot; the error names the field from `fields`.
    pub fn check(&self, fields: &ExportFields) -> Result<(), ConfigError> {
        let err = |field: &'static str, message: String| Err(ConfigError { field, message });
        if let Some(endpoint) = &self.endpoint {
            validate_endpoint(endpoint).or_else(|m| err(fields.endpoint, m))?;
        }
        if self.queue_size == 0 || self.queue_size > 1 << 20 {
            return err(
                fields.queue_size,
                format!("{} is not between 1 and 1048576", self.queue_size),
            );
        }
        if self.batch_size == 0 || self.batch_size > self.queue_size {
            return err(
                fields.batch_size,
                format!(
                    "{} is not between 1 and queue_size ({})",
                    self.batch_size, self.queue_size
                ),
            );
        }
        if self.timeout.is_zero() {
            return err(fields.timeout, "must be more than 0s".into());
        }
        for (k, v) in &self.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return err(fields.headers, format!("{k:?} is not a header name"));
            }
            if http::HeaderValue::from_str(v).is_err() {
                return err(
                    fields.headers,
                    format!("value of {k:?} is not a header value"),
                );
            }
        }
        Ok(())
    }
}

// === impl ExportProtocol ===

impl ExportProtocol {
    /// Parses `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn from_otel(value: &str) -> Option<Self> {
        match value.trim() {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            _ => None,
        }
    }
}

fn validate_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("{endpoint:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{endpoint:?} must start with http:// or https://")),
    }
    if uri.authority().is_none() {
        return Err(format!("{endpoint:?} has no host"));
    }
    Ok(())
}
