//! `logs:`: which requests get an access-log entry, whether the proxy
//! writes its log lines to stdout, and where OTLP log records go.
//!
//! ```yaml
//! logs:
//!   access: all            # all | sampled | errors
//!   stdout: true           # false: nothing on stdout (OTLP only)
//!   export: { endpoint: http://otel-collector:4318, protocol: http/protobuf }
//! ```
//!
//! `logs.export` has the keys of `tracing.export`; without an endpoint (and
//! no `OTEL_EXPORTER_OTLP_[LOGS_]ENDPOINT`) no log record leaves over OTLP.

use filters::trace::{config::ExportFields, AccessMode, ExportConfig};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `logs:`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Which requests get an access-log entry, on stdout and over OTLP.
    pub access: AccessMode,
    /// Whether the proxy writes its log lines to stdout at all; the access
    /// line among them also needs `tracing.access_log`.
    pub stdout: bool,
    /// OTLP export of access records and the proxy's warnings and errors.
    pub export: ExportConfig,
}

/// The field names of `logs.export` errors.
pub const EXPORT_FIELDS: ExportFields = ExportFields {
    endpoint: "logs.export.endpoint",
    queue_size: "logs.export.queue_size",
    batch_size: "logs.export.batch_size",
    timeout: "logs.export.timeout",
    headers: "logs.export.headers",
};

// === impl LogsConfig ===

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            access: AccessMode::All,
            stdout: true,
            export: ExportConfig::default(),
        }
    }
}

impl LogsConfig {
    /// Checks what serde cannot; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.export
            .check(&EXPORT_FIELDS)
            .map_err(|e| ConfigError::invalid(e.field, e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<LogsConfig, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_values() {
        let d = parse("{}").unwrap();
        assert_eq!(d.access, AccessMode::All);
        assert!(d.stdout);
        assert_eq!(d.export.endpoint, None);
        assert_eq!(d, LogsConfig::default());
        let c =
            parse("access: errors\nstdout: false\nexport: { endpoint: http://c:4318 }").unwrap();
        assert_eq!(c.access, AccessMode::Errors);
        assert!(!c.stdout);
        assert!(c.validate().is_ok());
        assert_eq!(
            parse("access: sampled").unwrap().access,
            AccessMode::Sampled
        );
    }

    #[test]
    fn secrets_are_not_rendered() {
        let c = parse(
            "export: { endpoint: \"http://user:pw@c:4318/?key=k\", headers: { x-api-key: s3cret } }",
        )
        .unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            !json.contains("s3cret") && !json.contains("pw") && !json.contains("key=k"),
            "{json}"
        );
        assert!(
            json.contains("x-api-key") && json.contains("[REDACTED]"),
            "{json}"
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = parse("access: some").unwrap_err();
        assert!(e.contains("all") && e.contains("errors"), "{e}");
        assert!(parse("colour: red").unwrap_err().contains("unknown field"));
        let bad = |yaml: &str| parse(yaml).unwrap().validate().unwrap_err().to_string();
        let e = bad("export: { endpoint: ftp://c }");
        assert!(e.starts_with("logs.export.endpoint: "), "{e}");
        let e = bad("export: { batch_size: 100, queue_size: 10 }");
        assert!(e.starts_with("logs.export.batch_size: "), "{e}");
        let e = bad("export: { timeout: 0s }");
        assert!(e.starts_with("logs.export.timeout: "), "{e}");
        let e = bad("export: { headers: { \"a b\": x } }");
        assert!(e.starts_with("logs.export.headers: "), "{e}");
    }
}
