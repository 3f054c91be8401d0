//! The YAML file, as DESIGN section 4 shows it. Unknown keys are errors.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use filters::{
    registry::FilterConfig,
    trace::{RouteConfig, TracingConfig},
};
use serde::{Deserialize, Serialize};

/// The whole config file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Resource attributes of the proxied service.
    #[serde(default)]
    pub service: ServiceConfig,
    /// The listener in front of the app.
    #[serde(default)]
    pub inbound: InboundConfig,
    /// The listener the app calls other services through.
    pub outbound: Option<OutboundConfig>,
    /// The admin server.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Tracing settings; see `docs/tracing.md`.
    #[serde(default)]
    pub tracing: TracingConfig,
    /// Access-log selection, stdout logging and OTLP logs export.
    #[serde(default)]
    pub logs: crate::logs::LogsConfig,
    /// Names, sampling and filters per path prefix.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The ordered filter chain, by registry name.
    #[serde(default)]
    pub filters: Vec<FilterConfig>,
    /// RED metrics settings.
    #[serde(default)]
    pub metrics: MetricsFileConfig,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(default, with = "filters::duration::option")]
    pub drain_timeout: Option<Duration>,
    /// How long the listeners keep accepting after SIGTERM, with `/ready`
    /// at 503, before the drain starts.
    #[serde(default, with = "filters::duration::option")]
    pub drain_delay: Option<Duration>,
    /// What clients may take from the proxy: timeouts, connections, streams.
    #[serde(default)]
    pub limits: super::LimitsConfig,
}

/// `service:`: resource attributes.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `service.name`.
    pub name: Option<String>,
    /// `service.version`.
    pub version: Option<String>,
    /// `deployment.environment.name`.
    pub environment: Option<String>,
}

/// `inbound:`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// Address to accept on.
    pub listen: Option<SocketAddr>,
    /// The app's URL, e.g. `http://127.0.0.1:8080`.
    pub upstream: Option<String>,
    /// Protocol spoken to the app.
    #[serde(default)]
    pub upstream_protocol: UpstreamProtocol,
    /// TLS termination.
    pub tls: Option<TlsConfig>,
    /// TLS to an `https://` upstream: trust, name, client certificate.
    pub upstream_tls: Option<ClientTlsConfig>,
    /// Largest request head accepted, in bytes (default 64 KiB).
    pub max_header_bytes: Option<usize>,
}

/// Protocol spoken to the upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/2 when the request came as HTTP/2, HTTP/1.1 otherwise, with a
    /// remembered downgrade when the app only speaks HTTP/1.1.
    #[default]
    Auto,
    /// Always HTTP/1.1.
    Http1,
    /// Always HTTP/2 prior knowledge.
    H2c,
}

/// `inbound.tls:`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle; when set, clients must present a certificate it signed.
    pub client_ca: Option<PathBuf>,
}

/// `inbound.upstream_tls:` and `outbound.tls:`: how the proxy verifies TLS
/// servers and authenticates to them.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM CA bundle trusted in addition to the system roots.
    pub ca: Option<PathBuf>,
    /// Whether the system roots (`SSL_CERT_FILE`, `SSL_CERT_DIR`, the OS
    /// bundle) are trusted; default true.
    #[serde(default = "yes")]
    pub system_roots: bool,
    /// The name sent in SNI and checked in the certificate, when it is not
    /// the URL's host (`inbound.upstream_tls` only).
    pub server_name: Option<String>,
    /// PEM client certificate chain, for servers that require mTLS.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

/// `outbound:`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Address to accept the app's outgoing calls on.
    pub listen: Option<SocketAddr>,
    /// Destinations reached over TLS although the app calls them in plain
    /// HTTP: host names, or `*.suffix` for every name under a domain.
    #[serde(default)]
    pub originate_tls: Vec<String>,
    /// Trust and client certificate for originated TLS.
    pub tls: Option<ClientTlsConfig>,
}

/// `admin:`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin server.
    pub listen: Option<SocketAddr>,
    /// Endpoint groups (`config`, `debug`, `shutdown`) served to peers other
    /// than loopback; `/metrics`, `/live` and `/ready` answer anyone.
    #[serde(default)]
    pub expose: Vec<crate::admin::EndpointGroup>,
}

/// `metrics:`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsFileConfig {
    /// Label sets per metric before new ones go to the overflow series.
    pub series_limit: usize,
    /// Duration histogram buckets in seconds.
    pub duration_buckets: Vec<f64>,
    /// Service-graph settings.
    pub service_graph: ServiceGraphConfig,
    /// OTLP push of the same metrics.
    pub export: crate::metrics_export::MetricsExportConfig,
}

/// `metrics.service_graph:`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceGraphConfig {
    /// Peers whose `x-sidetrace-client` header names the calling service;
    /// others count as `user`. Clients with a verified certificate (inbound
    /// mTLS) are trusted as well.
    pub trusted_networks: Vec<super::IpNetwork>,
}

impl Default for MetricsFileConfig {
    fn default() -> Self {
        Self {
            series_limit: 2000,
            duration_buckets: filters::metrics::DURATION_BUCKETS.to_vec(),
            service_graph: ServiceGraphConfig::default(),
            export: crate::metrics_export::MetricsExportConfig::default(),
        }
    }
}

fn yes() -> bool {
    true
}

impl Default for ClientTlsConfig {
    fn default() -> Self {
        Self {
            ca: None,
            system_roots: true,
            server_name: None,
            cert: None,
            key: None,
        }
    }
}
