//! TLS to an `https://` collector: which files verify it and authenticate
//! to it, named as the OpenTelemetry specification names them, and the
//! forwarder's TLS client built from them.
//!
//! | setting | variables (the `_TRACES_` form wins) | file |
//! |---|---|---|
//! | CA bundle, trusted besides the system roots | `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE` | `tracing.export.tls.ca` |
//! | client certificate chain | `OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE` | `tracing.export.tls.cert` |
//! | its private key | `OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_KEY` | `tracing.export.tls.key` |
//!
//! Log records read the `_LOGS_` variables and `logs.export.tls` alike.
//!
//! Each file is resolved on its own (a CA from the environment and a client
//! certificate from the file combine). The system roots stay trusted with a
//! CA given, as the forwarder's `ca` does: a collector behind a public
//! certificate keeps working when a private CA is added.

use std::{path::PathBuf, sync::Arc};

use filters::trace::config::ExportTlsConfig;
use http::{uri::Scheme, Uri};

use super::settings::{ExportConfigError, Signal};
use crate::{config::ClientTlsConfig, tls::client::ClientTls};

/// The prefix of TLS errors and log lines about the span collector.
pub const TLS_FIELD: &str = Signal::TRACES.fields.tls;

/// The collector's TLS files, each with the variable or field it came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportTls {
    /// CA bundle that verifies the collector.
    pub ca: Option<TlsFile>,
    /// Client certificate chain.
    pub cert: Option<TlsFile>,
    /// The client certificate's key.
    pub key: Option<TlsFile>,
}

/// A file path and where it was set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFile {
    /// The file.
    pub path: PathBuf,
    /// The environment variable or config field that named it.
    pub source_name: &'static str,
}

// === impl ExportTls ===

impl ExportTls {
    /// Resolves `signal`'s files from `var` (the first set variable of a
    /// list) over `file`, and checks that a client certificate comes with
    /// its key.
    pub(super) fn resolve<'a>(
        signal: &Signal,
        var: impl Fn(&[&'static str]) -> Option<(&'static str, &'a str)>,
        file: Option<&ExportTlsConfig>,
    ) -> Result<Self, ExportConfigError> {
        let file = file.cloned().unwrap_or_default();
        let pick =
            |vars: &[&'static str], path: Option<PathBuf>, field: &'static str| match var(vars) {
                Some((source_name, v)) => Some(TlsFile {
                    path: v.into(),
                    source_name,
                }),
                None => path.map(|path| TlsFile {
                    path,
                    source_name: field,
                }),
            };
        let (vars, fields) = (&signal.vars, &signal.fields);
        let tls = Self {
            ca: pick(&vars.certificate, file.ca, fields.tls_ca),
            cert: pick(&vars.client_certificate, file.cert, fields.tls_cert),
            key: pick(&vars.client_key, file.key, fields.tls_key),
        };
        match (&tls.cert, &tls.key) {
            (Some(cert), None) => Err(ExportConfigError {
                source_name: cert.source_name,
                message: format!(
                    "a client certificate needs its key (OTEL_EXPORTER_OTLP_CLIENT_KEY or {})",
                    fields.tls_key
                ),
            }),
            (None, Some(key)) => Err(ExportConfigError {
                source_name: key.source_name,
                message: format!(
                    "a client key needs its certificate \
                     (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE or {})",
                    fields.tls_cert
                ),
            }),
            _ => Ok(tls),
        }
    }

    /// The files that are set, in order.
    fn files(&self) -> impl Iterator<Item = &TlsFile> {
        [&self.ca, &self.cert, &self.key].into_iter().flatten()
    }

    /// Refuses files that would be ignored: TLS settings for a collector
    /// reached in clear text, or for no collector at all.
    pub(super) fn check_target(
        &self,
        signal: &Signal,
        target: Option<&Uri>,
    ) -> Result<(), ExportConfigError> {
        let Some(first) = self.files().next() else {
            return Ok(());
        };
        let names: Vec<&str> = self.files().map(|f| f.source_name).collect();
        let names = names.join(", ");
        let message = match target {
            Some(uri) if uri.scheme() == Some(&Scheme::HTTPS) => return Ok(()),
            Some(uri) => format!(
                "TLS settings ({names}) need an https:// collector endpoint, and {} is not one",
                without_path(uri)
            ),
            None if *signal == Signal::TRACES => format!(
                "TLS settings ({names}) are set but no collector endpoint is \
                 (spans go to the embedded store)"
            ),
            None => format!(
                "TLS settings ({names}) are set but no collector endpoint is \
                 ({} are not exported)",
                signal.items
            ),
        };
        Err(ExportConfigError {
            source_name: first.source_name,
            message,
        })
    }

    /// Reads the files into a TLS client (system roots plus the CA) for
    /// span export. An error names the variable or field that gave the file.
    pub fn client(&self) -> Result<Arc<ClientTls>, ExportConfigError> {
        self.client_for(TLS_FIELD)
    }

    /// [`client`](Self::client), its errors and log lines under `field`
    /// (`tracing.export.tls`, `logs.export.tls`).
    pub fn client_for(&self, field: &'static str) -> Result<Arc<ClientTls>, ExportConfigError> {
        let path = |f: &Option<TlsFile>| f.as_ref().map(|f| f.path.clone());
        let config = ClientTlsConfig {
            ca: path(&self.ca),
            system_roots: true,
            server_name: None,
            cert: path(&self.cert),
            key: path(&self.key),
        };
        ClientTls::new(config, field).map_err(|e| {
            let file = match e.field.strip_prefix(field) {
                Some(".ca") => &self.ca,
                Some(".cert") => &self.cert,
                Some(".key") => &self.key,
                _ => &None,
            };
            ExportConfigError {
                source_name: file.as_ref().map_or(field, |f| f.source_name),
                message: e.message,
            }
        })
    }
}

/// Scheme and authority: where the collector is, without the export path.
fn without_path(uri: &Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or_default(),
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    )
}
