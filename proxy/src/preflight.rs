//! What `run` reads at start besides the config file — TLS certificates and
//! keys, the OTLP export settings (spans, logs and metrics) from the environment — checked without
//! starting anything, so `check-config` and `run` agree on what is valid.

use std::collections::HashMap;

use crate::{
    config::{ConfigError, Settings},
    export::{ExportSettings, Signal},
    tls::{client::ClientTls, server_config},
};

/// Reads every file the settings name and resolves the export settings, as
/// `run` would at start; the first problem is the error.
pub fn check_files(settings: &Settings, env: &HashMap<String, String>) -> Result<(), ConfigError> {
    let tls_error = |e: crate::tls::TlsError| ConfigError::invalid(e.field, e.message);
    if let Some(tls) = &settings.tls {
        server_config(tls).map_err(tls_error)?;
    }
    if settings.upstream.scheme == http::uri::Scheme::HTTPS {
        let config = settings.upstream_tls.clone().unwrap_or_default();
        ClientTls::new(config, "inbound.upstream_tls").map_err(tls_error)?;
    }
    if settings.outbound.is_some() && !settings.originate_tls.is_empty() {
        ClientTls::new(settings.outbound_tls.clone(), "outbound.tls").map_err(tls_error)?;
    }
    let export = ExportSettings::resolve(&settings.tracing.export, env)
        .map_err(|e| ConfigError::invalid(e.source_name, e.message))?;
    export
        .client_tls()
        .map_err(|e| ConfigError::invalid(e.source_name, e.message))?;
    let logs = ExportSettings::resolve_signal(Signal::LOGS, &settings.logs.export, env)
        .map_err(|e| ConfigError::invalid(e.source_name, e.message))?;
    logs.client_tls()
        .map_err(|e| ConfigError::invalid(e.source_name, e.message))?;
    let (metrics, _) = crate::metrics_export::resolve(&settings.metrics.export, env)
        .map_err(|e| ConfigError::invalid(e.source_name, e.message))?;
    metrics
        .client_tls()
        .map_err(|e| ConfigError::invalid(e.source_name, e.message))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_yaml, Overrides};

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(yaml: &str, pairs: &[(&str, &str)]) -> Result<(), String> {
        let env = env(pairs);
        let settings =
            Settings::resolve(Overrides::default(), parse_yaml(yaml).unwrap(), None, &env)
                .map_err(|e| e.to_string())?;
        check_files(&settings, &env).map_err(|e| e.to_string())
    }

    #[test]
    fn the_metrics_push_is_resolved_as_run_resolves_it() {
        let yaml = "metrics:\n  export: { endpoint: http://c:4318, interval: 10s }\n";
        assert_eq!(check(yaml, &[]), Ok(()));
        let e = check(yaml, &[("OTEL_METRIC_EXPORT_INTERVAL", "ten")]).unwrap_err();
        assert!(e.contains("OTEL_METRIC_EXPORT_INTERVAL"), "{e}");
        let e = check(
            "",
            &[("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "both")],
        )
        .unwrap_err();
        assert!(
            e.contains("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"),
            "{e}"
        );
        let e = check("", &[("OTEL_METRICS_EXPORTER", "prometheus")]).unwrap_err();
        assert!(e.contains("OTEL_METRICS_EXPORTER"), "{e}");
        // An https:// collector's CA file is read, as at start.
        let e = check(
            "metrics:\n  export: { endpoint: https://c:4318, tls: { ca: /nonexistent/ca.pem } }\n",
            &[],
        )
        .unwrap_err();
        assert!(e.contains("metrics.export.tls"), "{e}");
        let e = check("metrics:\n  export: { interval: 0s }\n", &[]).unwrap_err();
        assert!(e.contains("metrics.export.interval"), "{e}");
    }
}
