//! The effective settings: flags over env over file over defaults.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use http::uri::{Authority, Scheme};
use serde::{Serialize, Serializer};

use super::{
    ClientTlsConfig, ConfigError, FileConfig, HostPattern, MetricsFileConfig, RouteConfig,
    TlsConfig, TracingConfig, UpstreamProtocol,
};
use filters::registry::FilterConfig;

/// Values given on the command line or in `SIDETRACE_*` variables; they win
/// over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--inbound`.
    pub inbound: Option<SocketAddr>,
    /// `--upstream`.
    pub upstream: Option<String>,
    /// `--outbound`.
    pub outbound: Option<SocketAddr>,
    /// `--admin`.
    pub admin: Option<SocketAddr>,
    /// `--service-name`.
    pub service_name: Option<String>,
    /// `--drain-timeout`.
    pub drain_timeout: Option<Duration>,
}

/// The upstream app: scheme and authority, parsed once.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `http`, or `https` (always TLS, verified; never clear text).
    pub scheme: Scheme,
    /// `host:port`.
    pub authority: Authority,
}

/// Everything the proxy runs with, resolved. Served as JSON on `/config`.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// `service.name`.
    pub service_name: String,
    /// `service.version`.
    pub service_version: Option<String>,
    /// `deployment.environment.name`.
    pub environment: Option<String>,
    /// Inbound listen address.
    pub inbound: SocketAddr,
    /// The app.
    pub upstream: Upstream,
    /// Protocol spoken to the app.
    pub upstream_protocol: UpstreamProtocol,
    /// Inbound TLS.
    pub tls: Option<TlsConfig>,
    /// TLS to an `https://` upstream.
    pub upstream_tls: Option<ClientTlsConfig>,
    /// Outbound listen address, when enabled.
    pub outbound: Option<SocketAddr>,
    /// Outbound destinations reached over TLS.
    pub originate_tls: Vec<HostPattern>,
    /// Trust and client certificate for originated TLS.
    pub outbound_tls: ClientTlsConfig,
    /// Admin listen address.
    pub admin: SocketAddr,
    /// Admin endpoint groups served to non-loopback peers.
    pub admin_expose: Vec<crate::admin::EndpointGroup>,
    /// Time in-flight requests get after SIGTERM.
    #[serde(serialize_with = "filters::duration::serialize")]
    pub drain_timeout: Duration,
    /// Time the listeners keep accepting after SIGTERM, `/ready` at 503,
    /// before the drain starts (`SIDETRACE_DRAIN_DELAY` wins over the file).
    #[serde(serialize_with = "filters::duration::serialize")]
    pub drain_delay: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Named routes.
    pub routes: Vec<RouteConfig>,
    /// Tracing, with `OTEL_TRACES_SAMPLER(_ARG)` and `OTEL_PROPAGATORS` applied.
    pub tracing: TracingConfig,
    /// Access-log selection, stdout logging and OTLP logs export (the
    /// `OTEL_EXPORTER_OTLP_*` variables are applied by the pipeline).
    pub logs: crate::logs::LogsConfig,
    /// The filter chain.
    pub filters: Vec<FilterConfig>,
    /// RED metrics settings.
    pub metrics: MetricsFileConfig,
    /// What clients may take from the proxy.
    pub limits: super::LimitsConfig,
    /// The file the settings came from, for reloads.
    pub config_file: Option<PathBuf>,
}

/// Default inbound address.
pub const DEFAULT_INBOUND: &str = "0.0.0.0:15080";
/// Default upstream.
pub const DEFAULT_UPSTREAM: &str = "http://127.0.0.1:8080";
/// Default admin address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15090";
/// Default drain timeout: a 30 s pod grace period less a margin.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(25);
/// Default drain delay: long enough for the endpoint removal to reach
/// kube-proxy and most load balancers, as Istio's 5 s termination drain.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);
/// Default request head limit.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

// === impl Settings ===

impl Settings {
    /// Resolves flags, env (`OTEL_SERVICE_NAME`), file and defaults.
    pub fn resolve(
        overrides: Overrides,
        file: FileConfig,
        config_file: Option<PathBuf>,
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let upstream_text = overrides
            .upstream
            .or(file.inbound.upstream)
            .unwrap_or_else(|| DEFAULT_UPSTREAM.to_string());
        let upstream =
            parse_upstream(&upstream_text).map_err(|m| ConfigError::invalid("upstream", m))?;
        let service_name = overrides
            .service_name
            .or_else(|| env.get("OTEL_SERVICE_NAME").cloned())
            .or(file.service.name)
            .unwrap_or_else(|| "sidetrace".to_string());
        let upstream_tls = file.inbound.upstream_tls;
        if upstream.scheme == Scheme::HTTPS {
            if let Some(tls) = &upstream_tls {
                check_client_tls(tls, "inbound.upstream_tls")?;
            }
        } else if upstream_tls.is_some() {
            return Err(ConfigError::invalid(
                "inbound.upstream_tls",
                format!("is set, but the upstream {upstream_text:?} is not https://"),
            ));
        }
        let outbound_file = file.outbound.clone().unwrap_or_default();
        let originate_tls = outbound_file
            .originate_tls
            .iter()
            .map(|p| HostPattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| ConfigError::invalid("outbound.originate_tls", m))?;
        let outbound_tls = outbound_file.tls.unwrap_or_default();
        check_client_tls(&outbound_tls, "outbound.tls")?;
        if outbound_tls.server_name.is_some() {
            return Err(ConfigError::invalid(
                "outbound.tls.server_name",
                "outbound TLS checks each destination's own name; server_name applies to inbound.upstream_tls only",
            ));
        }
        let drain_delay = match env.get("SIDETRACE_DRAIN_DELAY").filter(|v| !v.is_empty()) {
            Some(text) => humantime::parse_duration(text).map_err(|e| {
                ConfigError::invalid(
                    "SIDETRACE_DRAIN_DELAY",
                    format!("{text:?} is not a duration such as 5s or 500ms: {e}"),
                )
            })?,
            None => file.drain_delay.unwrap_or(DEFAULT_DRAIN_DELAY),
        };
        let mut tracing = file.tracing;
        tracing
            .apply_env(env)
            .map_err(|e| ConfigError::invalid(e.field, e.message))?;
        file.logs.validate()?;
        file.metrics.export.validate()?;
        Ok(Self {
            service_name,
            service_version: file.service.version,
            environment: file.service.environment,
            inbound: overrides
                .inbound
                .or(file.inbound.listen)
                .unwrap_or_else(|| parse_default(DEFAULT_INBOUND)),
            upstream,
            upstream_protocol: file.inbound.upstream_protocol,
            tls: file.inbound.tls,
            upstream_tls,
            originate_tls,
            outbound_tls,
            outbound: overrides.outbound.or(file
                .outbound
                .map(|o| o.listen.unwrap_or_else(|| parse_default("127.0.0.1:15081")))),
            admin: overrides
                .admin
                .or(file.admin.listen)
                .unwrap_or_else(|| parse_default(DEFAULT_ADMIN)),
            admin_expose: file.admin.expose,
            drain_timeout: overrides
                .drain_timeout
                .or(file.drain_timeout)
                .unwrap_or(DEFAULT_DRAIN),
            drain_delay,
            max_header_bytes: file
                .inbound
                .max_header_bytes
                .unwrap_or(DEFAULT_MAX_HEADER_BYTES),
            routes: file.routes,
            tracing,
            logs: file.logs,
            filters: file.filters,
            metrics: file.metrics,
            limits: file.limits,
            config_file,
        })
    }
}

fn check_client_tls(tls: &ClientTlsConfig, field: &str) -> Result<(), ConfigError> {
    match (&tls.cert, &tls.key) {
        (Some(_), None) => Err(ConfigError::invalid(
            format!("{field}.key"),
            "a client certificate needs its key",
        )),
        (None, Some(_)) => Err(ConfigError::invalid(
            format!("{field}.cert"),
            "a client key needs its certificate",
        )),
        _ if !tls.system_roots && tls.ca.is_none() => Err(ConfigError::invalid(
            format!("{field}.ca"),
            "system_roots is false, so a ca bundle is needed to verify servers",
        )),
        _ => Ok(()),
    }
}

fn parse_default(addr: &str) -> SocketAddr {
    addr.parse().expect("default addresses are valid")
}

/// Parses an upstream URL: `http://host:port` or `https://host:port`, no path.
pub(crate) fn parse_upstream(text: &str) -> Result<Upstream, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("{text:?} needs a scheme (http:// or https://)"))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!("{text:?}: scheme must be http or https"));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{text:?} needs a host"))?;
    if !matches!(uri.path(), "" | "/") {
        return Err(format!("{text:?}: upstream URLs take no path"));
    }
    Ok(Upstream { scheme, authority })
}

// === impl Upstream ===

impl Serialize for Upstream {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Userinfo in the URL is a credential: never rendered.
        let url = format!("{}://{}", self.scheme, self.authority);
        s.serialize_str(&filters::secret::redact_url(&url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_flag_env_file_default() {
        let file = super::super::parse_yaml(
            "service: { name: from-file }\ninbound: { listen: 127.0.0.1:1000, upstream: http://127.0.0.1:9 }\n",
        )
        .unwrap();
        let env = HashMap::from([("OTEL_SERVICE_NAME".to_string(), "from-env".to_string())]);
        let s = Settings::resolve(
            Overrides {
                inbound: Some("127.0.0.1:2000".parse().unwrap()),
                ..Overrides::default()
            },
            file.clone(),
            None,
            &env,
        )
        .unwrap();
        assert_eq!(s.inbound.port(), 2000, "flag beats file");
        assert_eq!(s.service_name, "from-env", "env beats file");
        assert_eq!(
            s.upstream.authority.port_u16(),
            Some(9),
            "file beats default"
        );
        assert_eq!(s.admin.to_string(), DEFAULT_ADMIN);
        let s = Settings::resolve(Overrides::default(), file, None, &HashMap::new()).unwrap();
        assert_eq!(s.service_name, "from-file");
        assert_eq!(s.inbound.port(), 1000);
    }

    #[test]
    fn upstream_urls() {
        assert!(parse_upstream("http://127.0.0.1:8080").is_ok());
        let https = parse_upstream("https://app.internal:8443").unwrap();
        assert_eq!(https.scheme, Scheme::HTTPS);
        assert!(parse_upstream("127.0.0.1:8080").is_err());
        assert!(parse_upstream("http://x/path").is_err());
        assert!(parse_upstream("gopher://x").is_err());
    }
}
