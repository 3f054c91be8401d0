//! The `tracing:` block and the `routes:` list of the config file, the
//! `OTEL_*` environment overrides, and the resource attributes.
//!
//! ```yaml
//! tracing:
//!   sampler: { type: parent_ratio, ratio: 0.1, max_per_second: 100, keep_errors: true }
//!   propagators: [tracecontext, baggage, b3, legacy]
//!   export: { endpoint: http://otel-collector:4317, protocol: grpc, batch_size: 512, queue_size: 8192 }
//!   capture: { request_headers: [x-tenant], response_headers: [], redact: [x-tenant-key] }
//! routes:
//!   - { prefix: /api/orders, name: orders, sample: always }
//!   - { prefix: /healthz, name: health, sample: never }
//! ```
//!
//! Every field has a default, unknown keys are errors, and
//! [`TracingConfig::validate`] names the field it rejects. The library never
//! reads the process environment: callers pass it as a map.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{
    context::TraceId,
    propagation::{Propagator, Propagators},
};
use crate::registry::ConfigError;
pub use crate::route::{validate_routes, RouteConfig, RouteSample};

mod capture;
mod export;

pub use self::{
    capture::{is_builtin_secret, CaptureConfig, BUILTIN_REDACT, BUILTIN_REDACT_FRAGMENTS},
    export::{ExportConfig, ExportFields, ExportProtocol, ExportTlsConfig},
};

/// Default of `tracing.store_bytes`: 4 MiB, a few thousand typical spans.
pub const DEFAULT_STORE_BYTES: usize = 4 << 20;
const MIN_STORE_BYTES: usize = 64 << 10;
const MAX_STORE_BYTES: usize = 1 << 30;

/// `tracing:`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Which requests get a recorded span.
    pub sampler: SamplerConfig,
    /// Propagation formats, in the order they are tried on extract
    /// (`tracecontext`, `baggage`, `b3`/`b3multi`, `legacy`, `xray`,
    /// `jaeger`, `datadog`).
    pub propagators: Vec<Propagator>,
    /// Where spans go.
    pub export: ExportConfig,
    /// Headers recorded as span attributes.
    pub capture: CaptureConfig,
    /// One JSON access-log line per request (target `sidetrace::access`).
    pub access_log: bool,
    /// Traces kept by the embedded store when no endpoint is set.
    pub store_traces: usize,
    /// Memory the embedded store may hold, in bytes (estimated from the
    /// spans' contents); the oldest traces go first when either bound is hit.
    pub store_bytes: usize,
    /// **For tests only.** When set, a request carrying this header makes a
    /// built-in hook panic, to prove a panic becomes a 500 INTERNAL with an
    /// `exception` event while the proxy keeps serving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug_panic_header: Option<String>,
}

/// `tracing.sampler:`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    /// The sampler.
    #[serde(rename = "type")]
    pub kind: SamplerKind,
    /// Ratio of new traces kept (0.0..=1.0) by `ratio` and `parent_ratio`.
    pub ratio: f64,
    /// Cap on ratio-sampled spans per second (token bucket, burst of one second).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_second: Option<u32>,
    /// Keep an unsampled span that ends in a NETWORK or INTERNAL failure.
    pub keep_errors: bool,
}

/// `tracing.sampler.type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// Respect the caller's decision; otherwise sample `ratio` of new traces.
    #[default]
    ParentRatio,
    /// Sample everything.
    AlwaysOn,
    /// Sample nothing (still propagate, still count metrics).
    AlwaysOff,
    /// Sample `ratio` of traces, ignoring the caller.
    Ratio,
    /// Respect the caller's decision; otherwise sample.
    ParentAlwaysOn,
}

/// The resource attributes every exported span carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resource {
    /// `(key, value)` pairs in a stable order, `service.name` first.
    pub attributes: Vec<(String, String)>,
}

/// The `service:` block as the resource needs it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServiceInfo<'a> {
    /// `service.name`, already resolved by the caller (flag > env > file).
    pub name: Option<&'a str>,
    /// `service.version`.
    pub version: Option<&'a str>,
    /// `deployment.environment.name`.
    pub environment: Option<&'a str>,
}

// === impl TracingConfig ===

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            sampler: SamplerConfig::default(),
            propagators: Propagator::DEFAULT.to_vec(),
            export: ExportConfig::default(),
            capture: CaptureConfig::default(),
            access_log: true,
            store_traces: 1000,
            store_bytes: DEFAULT_STORE_BYTES,
            debug_panic_header: None,
        }
    }
}

impl TracingConfig {
    /// Checks what serde cannot; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field: &'static str, message: String| Err(ConfigError { field, message });
        let s = &self.sampler;
        if !(0.0..=1.0).contains(&s.ratio) {
            return err(
                "tracing.sampler.ratio",
                format!("{} is not a ratio between 0 and 1", s.ratio),
            );
        }
        if s.max_per_second == Some(0) {
            return err(
                "tracing.sampler.max_per_second",
                "must be at least 1 (leave it out for no cap)".into(),
            );
        }
        for (i, p) in self.propagators.iter().enumerate() {
            if self.propagators[..i].contains(p) {
                return err("tracing.propagators", format!("{p} is listed twice"));
            }
        }
        self.export.check(&ExportFields::TRACING)?;
        let c = &self.capture;
        for (field, list) in [
            ("tracing.capture.request_headers", &c.request_headers),
            ("tracing.capture.response_headers", &c.response_headers),
            ("tracing.capture.redact", &c.redact),
        ] {
            for name in list {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return err(field, format!("{name:?} is not a header name"));
                }
            }
        }
        if let Some(h) = &self.debug_panic_header {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return err(
                    "tracing.debug_panic_header",
                    format!("{h:?} is not a header name"),
                );
            }
        }
        if !(MIN_STORE_BYTES..=MAX_STORE_BYTES).contains(&self.store_bytes) {
            return err(
                "tracing.store_bytes",
                format!(
                    "{} is not between {MIN_STORE_BYTES} (64 KiB) and {MAX_STORE_BYTES} (1 GiB)",
                    self.store_bytes
                ),
            );
        }
        if self.store_traces == 0 || self.store_traces > 1_000_000 {
            return err(
                "tracing.store_traces",
                format!("{} is not between 1 and 1000000", self.store_traces),
            );
        }
        Ok(())
    }

    /// The propagators as the request path uses them.
    pub fn propagators(&self) -> Propagators {
        Propagators::new(&self.propagators)
    }

    /// Applies `OTEL_TRACES_SAMPLER` (+ `OTEL_TRACES_SAMPLER_ARG`) and
    /// `OTEL_PROPAGATORS` from `env` over the file's values (env beats file).
    /// Export variables are resolved by the exporter, which knows the
    /// per-protocol URL rules.
    pub fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        if let Some(name) = env.get("OTEL_TRACES_SAMPLER") {
            let arg = env.get("OTEL_TRACES_SAMPLER_ARG").map(String::as_str);
            self.sampler = SamplerConfig::from_otel(name, arg, &self.sampler)?;
        }
        if let Some(list) = env.get("OTEL_PROPAGATORS") {
            let p = Propagators::from_otel_env(list).map_err(|message| ConfigError {
                field: "OTEL_PROPAGATORS",
                message,
            })?;
            self.propagators = p.iter().collect();
        }
        Ok(())
    }
}

// === impl SamplerConfig ===

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            kind: SamplerKind::ParentRatio,
            ratio: 1.0,
            max_per_second: None,
            keep_errors: false,
        }
    }
}

impl SamplerConfig {
    /// The sampler an `OTEL_TRACES_SAMPLER` value names; `cap` and
    /// `keep_errors` carry over from `base`.
    pub fn from_otel(name: &str, arg: Option<&str>, base: &Self) -> Result<Self, ConfigError> {
        let ratio = || -> Result<f64, ConfigError> {
            match arg {
                None => Ok(1.0),
                Some(a) => match a.trim().parse::<f64>() {
                    Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
                    _ => Err(ConfigError {
                        field: "OTEL_TRACES_SAMPLER_ARG",
                        message: format!("{a:?} is not a ratio between 0 and 1"),
                    }),
                },
            }
        };
        let (kind, ratio) = match name.trim() {
            "always_on" => (SamplerKind::AlwaysOn, 1.0),
            "always_off" => (SamplerKind::AlwaysOff, 0.0),
            "traceidratio" => (SamplerKind::Ratio, ratio()?),
            "parentbased_always_on" => (SamplerKind::ParentAlwaysOn, 1.0),
            // Parent-based with no new roots: a ratio of zero.
            "parentbased_always_off" => (SamplerKind::ParentRatio, 0.0),
            "parentbased_traceidratio" => (SamplerKind::ParentRatio, ratio()?),
            other => {
                return Err(ConfigError {
                    field: "OTEL_TRACES_SAMPLER",
                    message: format!("unsupported sampler {other:?}"),
                })
            }
        };
        Ok(Self {
            kind,
            ratio,
            max_per_second: base.max_per_second,
            keep_errors: base.keep_errors,
        })
    }
}

// === impl Resource ===

impl Resource {
    /// Builds the resource from the `service:` block and `env`:
    /// `OTEL_RESOURCE_ATTRIBUTES` (env beats the file for version and
    /// environment; `service.name` comes from `service.name` when the caller
    /// resolved one), the Kubernetes Downward API variables
    /// (`K8S_POD_NAME`/`POD_NAME`, `K8S_NAMESPACE_NAME`/`POD_NAMESPACE`,
    /// `K8S_NODE_NAME`/`NODE_NAME`), a random `service.instance.id` unless
    /// one is given, and `telemetry.sdk.*`.
    pub fn new(service: ServiceInfo<'_>, env: &HashMap<String, String>) -> Self {
        let from_env: Vec<(String, String)> = env
            .get("OTEL_RESOURCE_ATTRIBUTES")
            .map(|v| parse_resource_attributes(v))
            .unwrap_or_default();
        let env_attr = |key: &str| {
            from_env
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| env.get(*n).filter(|v| !v.is_empty()).cloned())
        };
        let mut attrs: Vec<(String, String)> = Vec::new();
        let name = service
            .name
            .map(str::to_string)
            .or_else(|| var(&["OTEL_SERVICE_NAME"]))
            .or_else(|| env_attr("service.name"))
            .unwrap_or_else(|| "unknown_service:sidetrace".to_string());
        attrs.push(("service.name".into(), name));
        if let Some(v) = env_attr("service.version").or(service.version.map(str::to_string)) {
            attrs.push(("service.version".into(), v));
        }
        if let Some(v) = env_attr("deployment.environment.name")
            .or_else(|| service.environment.map(str::to_string))
        {
            attrs.push(("deployment.environment.name".into(), v));
        }
        let instance = env_attr("service.instance.id")
            .unwrap_or_else(|| String::from_utf8_lossy(&TraceId::random().to_uuid()).into_owned());
        attrs.push(("service.instance.id".into(), instance));
        for (key, names) in [
            ("k8s.pod.name", &["K8S_POD_NAME", "POD_NAME"]),
            (
                "k8s.namespace.name",
                &["K8S_NAMESPACE_NAME", "POD_NAMESPACE"],
            ),
            ("k8s.node.name", &["K8S_NODE_NAME", "NODE_NAME"]),
        ] {
            if let Some(v) = env_attr(key).or_else(|| var(names)) {
                attrs.push((key.into(), v));
            }
        }
        attrs.push(("telemetry.sdk.name".into(), "sidetrace".into()));
        attrs.push(("telemetry.sdk.language".into(), "rust".into()));
        attrs.push((
            "telemetry.sdk.version".into(),
            env!("CARGO_PKG_VERSION").into(),
        ));
        // Remaining user attributes, after the well-known ones.
        for (k, v) in from_env {
            if !attrs.iter().any(|(key, _)| *key == k) {
                attrs.push((k, v));
            }
        }
        Self { attributes: attrs }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `service.name`.
    pub fn service_name(&self) -> &str {
        self.get("service.name")
            .unwrap_or("unknown_service:sidetrace")
    }
}

/// Parses `OTEL_RESOURCE_ATTRIBUTES`: `k=v,k2=v2` with percent-encoded
/// values; malformed members are skipped.
pub fn parse_resource_attributes(v: &str) -> Vec<(String, String)> {
    v.split(',')
        .filter_map(|member| {
            let (k, v) = member.split_once('=')?;
            let k = k.trim();
            if k.is_empty() {
                return None;
            }
            Some((k.to_string(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(byte) = b
                .get(i + 1..i + 3)
                .and_then(|h| super::context::decode_hex_byte(h, false))
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
