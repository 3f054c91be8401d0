//! The effective settings: flags over env over file over defaults.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use http::uri::{Authority, Scheme};
use serde::{Serialize, Serializer};

use super::{
    ConfigError, FileConfig, MetricsFileConfig, RouteConfig, TlsConfig, TracingConfig,
    UpstreamProtocol,
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
    /// `http` (`https` is refused until the TLS client exists).
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
    /// Outbound listen address, when enabled.
    pub outbound: Option<SocketAddr>,
    /// Admin listen address.
    pub admin: SocketAddr,
    /// Time in-flight requests get after SIGTERM.
    #[serde(serialize_with = "filters::duration::serialize")]
    pub drain_timeout: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Named routes.
    pub routes: Vec<RouteConfig>,
    /// Tracing, with `OTEL_TRACES_SAMPLER(_ARG)` and `OTEL_PROPAGATORS` applied.
    pub tracing: TracingConfig,
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
        let mut tracing = file.tracing;
        tracing
            .apply_env(env)
            .map_err(|e| ConfigError::invalid(e.field, e.message))?;
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
            outbound: overrides.outbound.or(file
                .outbound
                .map(|o| o.listen.unwrap_or_else(|| parse_default("127.0.0.1:15081")))),
            admin: overrides
                .admin
                .or(file.admin.listen)
                .unwrap_or_else(|| parse_default(DEFAULT_ADMIN)),
            drain_timeout: overrides
                .drain_timeout
                .or(file.drain_timeout)
                .unwrap_or(DEFAULT_DRAIN),
            max_header_bytes: file
                .inbound
                .max_header_bytes
                .unwrap_or(DEFAULT_MAX_HEADER_BYTES),
            routes: file.routes,
            tracing,
            filters: file.filters,
            metrics: file.metrics,
            limits: file.limits,
            config_file,
        })
    }
}

fn parse_default(addr: &str) -> SocketAddr {
    addr.parse().expect("default addresses are valid")
}

/// Parses an upstream URL: `http://host:port`, no path. `https://` is refused
/// until the TLS client exists.
pub(crate) fn parse_upstream(text: &str) -> Result<Upstream, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("{text:?} needs a scheme (http:// or https://)"))?;
    if scheme == Scheme::HTTPS {
        // Until the TLS client lands, an https:// upstream would be dialled in
        // clear text: the request (Authorization included) sent unencrypted to
        // a port that expects TLS. Refuse it instead.
        return Err(format!(
            "{text:?}: https:// upstreams are not supported yet (the proxy has no TLS client); \
             use http:// to a plain-text port, or terminate TLS in front of the app"
        ));
    }
    if scheme != Scheme::HTTP {
        return Err(format!("{text:?}: scheme must be http"));
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
        s.collect_str(&format_args!("{}://{}", self.scheme, self.authority))
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
        let https = parse_upstream("https://app.internal").unwrap_err();
        assert!(
            https.contains("https:// upstreams are not supported"),
            "{https}"
        );
        assert!(parse_upstream("127.0.0.1:8080").is_err());
        assert!(parse_upstream("http://x/path").is_err());
        assert!(parse_upstream("gopher://x").is_err());
    }
}
