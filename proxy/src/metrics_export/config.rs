//! `metrics.export:`: where and how often the metrics `/metrics` shows are
//! pushed over OTLP, and the environment that overrides it.
//!
//! ```yaml
//! metrics:
//!   export:
//!     endpoint: http://otel-collector:4318
//!     protocol: http/protobuf     # or grpc
//!     interval: 30s               # OTEL_METRIC_EXPORT_INTERVAL (ms) wins
//!     temporality: cumulative     # or delta; OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE wins
//! ```
//!
//! The connection keys (`endpoint`, `protocol`, `headers`, `timeout`,
//! `gzip`, `tls`) are those of `tracing.export`, overlaid by the
//! `OTEL_EXPORTER_OTLP_[METRICS_]*` variables in the same way; there is no
//! queue or batch: each push is one request with every series.

use std::{collections::HashMap, time::Duration};

use filters::{
    secret::SecretHeaders,
    trace::{
        config::{ExportFields, ExportTlsConfig},
        ExportConfig, ExportProtocol,
    },
};
use serde::{Deserialize, Serialize};

use crate::{config::ConfigError, export::ExportConfigError};

/// `OTEL_METRIC_EXPORT_INTERVAL`: milliseconds between pushes.
pub const INTERVAL_VAR: &str = "OTEL_METRIC_EXPORT_INTERVAL";
/// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`.
pub const TEMPORALITY_VAR: &str = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";

/// `metrics.export:`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsExportConfig {
    /// Collector base URL (`/v1/metrics` is appended for OTLP/HTTP); none
    /// means no push. Rendered without userinfo or query.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "filters::secret::serialize_url"
    )]
    pub endpoint: Option<String>,
    /// OTLP transport.
    pub protocol: ExportProtocol,
    /// Extra request headers; rendered with every value `[REDACTED]`.
    pub headers: SecretHeaders,
    /// Time allowed per attempt.
    #[serde(with = "filters::duration")]
    pub timeout: Duration,
    /// gzip the body.
    pub gzip: bool,
    /// Trust and client certificate for an `https://` collector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ExportTlsConfig>,
    /// Time between pushes.
    #[serde(with = "filters::duration")]
    pub interval: Duration,
    /// Aggregation temporality of counters and histograms.
    pub temporality: Temporality,
}

/// How counters and histograms are pushed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    /// Totals since the proxy started, as `/metrics` shows them.
    #[default]
    Cumulative,
    /// The change since the previous push the collector took.
    Delta,
    /// The specification's `lowmemory`: delta, except for counters read
    /// from the system at collection (`process_cpu_seconds_total`), which
    /// stay cumulative.
    #[serde(rename = "lowmemory")]
    LowMemory,
}

/// The field names of `metrics.export` errors.
pub const EXPORT_FIELDS: ExportFields = ExportFields {
    endpoint: "metrics.export.endpoint",
    queue_size: "metrics.export.queue_size",
    batch_size: "metrics.export.batch_size",
    timeout: "metrics.export.timeout",
    headers: "metrics.export.headers",
};

/// The push schedule once the environment is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Time between pushes.
    pub interval: Duration,
    /// Temporality of counters and histograms.
    pub temporality: Temporality,
}

// === impl MetricsExportConfig ===

impl Default for MetricsExportConfig {
    fn default() -> Self {
        let base = ExportConfig::default();
        Self {
            endpoint: None,
            protocol: base.protocol,
            headers: SecretHeaders::default(),
            timeout: base.timeout,
            gzip: false,
            tls: None,
            interval: Duration::from_secs(30),
            temporality: Temporality::Cumulative,
        }
    }
}

impl MetricsExportConfig {
    /// Checks what serde cannot; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.connection()
            .check(&EXPORT_FIELDS)
            .map_err(|e| ConfigError::invalid(e.field, e.message))?;
        if self.interval < Duration::from_millis(1) {
            return Err(ConfigError::invalid(
                "metrics.export.interval",
                "must be at least 1ms".to_string(),
            ));
        }
        Ok(())
    }

    /// The connection keys as an export block, for
    /// [`ExportSettings::resolve_signal`](crate::export::ExportSettings::resolve_signal).
    pub fn connection(&self) -> ExportConfig {
        ExportConfig {
            endpoint: self.endpoint.clone(),
            protocol: self.protocol,
            headers: self.headers.clone(),
            timeout: self.timeout,
            gzip: self.gzip,
            tls: self.tls.clone(),
            ..ExportConfig::default()
        }
    }

    /// The interval and temporality, `OTEL_METRIC_EXPORT_INTERVAL` and
    /// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE` over the file.
    pub fn schedule(&self, env: &HashMap<String, String>) -> Result<Schedule, ExportConfigError> {
        let var = |name: &'static str| {
            env.get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| (name, v))
        };
        let interval = match var(INTERVAL_VAR) {
            Some((name, ms)) => match ms.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(ExportConfigError {
                        source_name: name,
                        message: format!("{ms:?} is not a number of milliseconds above 0"),
                    })
                }
            },
            None => self.interval,
        };
        let temporality = match var(TEMPORALITY_VAR) {
            // The specification's values are case-insensitive.
            Some((name, v)) => match v.to_ascii_lowercase().as_str() {
                "cumulative" => Temporality::Cumulative,
                "delta" => Temporality::Delta,
                "lowmemory" => Temporality::LowMemory,
                _ => {
                    return Err(ExportConfigError {
                        source_name: name,
                        message: format!("{v:?} is not cumulative, delta or lowmemory"),
                    })
                }
            },
            None => self.temporality,
        };
        Ok(Schedule {
            interval,
            temporality,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<MetricsExportConfig, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_values() {
        let d = parse("{}").unwrap();
        assert_eq!(d, MetricsExportConfig::default());
        assert_eq!(d.interval, Duration::from_secs(30));
        assert_eq!(d.temporality, Temporality::Cumulative);
        assert_eq!(d.endpoint, None);
        let c = parse(
            "endpoint: http://c:4317\nprotocol: grpc\ninterval: 5s\ntemporality: delta\ngzip: true",
        )
        .unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.protocol, ExportProtocol::Grpc);
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.temporality, Temporality::Delta);
        assert_eq!(c.connection().endpoint.as_deref(), Some("http://c:4317"));
        assert!(c.connection().gzip);
        assert_eq!(
            parse("temporality: lowmemory").unwrap().temporality,
            Temporality::LowMemory
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        assert!(parse("batch_size: 10")
            .unwrap_err()
            .contains("unknown field"));
        assert!(parse("temporality: sometimes").is_err());
        let bad = |yaml: &str| parse(yaml).unwrap().validate().unwrap_err().to_string();
        let e = bad("endpoint: ftp://c");
        assert!(e.starts_with("metrics.export.endpoint: "), "{e}");
        let e = bad("interval: 0s");
        assert!(e.starts_with("metrics.export.interval: "), "{e}");
        let e = bad("timeout: 0s");
        assert!(e.starts_with("metrics.export.timeout: "), "{e}");
        let e = bad("headers: { \"a b\": x }");
        assert!(e.starts_with("metrics.export.headers: "), "{e}");
    }

    #[test]
    fn environment_overrides_the_schedule() {
        let c = MetricsExportConfig::default();
        let s = c.schedule(&env(&[])).unwrap();
        assert_eq!(s.interval, Duration::from_secs(30));
        assert_eq!(s.temporality, Temporality::Cumulative);
        let s = c
            .schedule(&env(&[(INTERVAL_VAR, "1500"), (TEMPORALITY_VAR, "Delta")]))
            .unwrap();
        assert_eq!(s.interval, Duration::from_millis(1500));
        assert_eq!(s.temporality, Temporality::Delta);
        let e = c.schedule(&env(&[(INTERVAL_VAR, "0")])).unwrap_err();
        assert_eq!(e.source_name, INTERVAL_VAR);
        let e = c.schedule(&env(&[(TEMPORALITY_VAR, "both")])).unwrap_err();
        assert_eq!(e.source_name, TEMPORALITY_VAR);
    }

    #[test]
    fn secrets_are_not_rendered() {
        let c =
            parse("endpoint: \"http://u:pw@c:4318/?k=v\"\nheaders: { x-api-key: s3cret }").unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("s3cret") && !json.contains("pw"), "{json}");
    }
}
