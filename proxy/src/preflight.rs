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
