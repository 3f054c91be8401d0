//! The chart's values, as `sidetrace inject` and `sidetrace webhook` read
//! them: the chart's own `values.yaml`, embedded in the binary, under the
//! files given with `-f`, merged as Helm merges them (maps key by key, any
//! other value replaced, `null` removing a key).
//!
//! Besides the values themselves the sidecar definition needs a few
//! derived strings that `_helpers.tpl` computes for the chart (the image
//! reference, the ConfigMap name, `OTEL_RESOURCE_ATTRIBUTES`); they are
//! computed here the same way, and the chart tests compare the results.

use std::path::Path;

use super::value::{Map, Value};

/// The chart's default values, as shipped.
pub const CHART_VALUES: &str = include_str!("../../../charts/sidetrace/values.yaml");

/// The proxy version the chart's default image tag points at.
pub const APP_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why the values could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ValuesError {
    /// The file at fault, or `built-in values`.
    pub source_name: String,
    /// What is wrong, naming the key.
    pub message: String,
}

/// Merged chart values.
#[derive(Clone, Debug)]
pub struct ChartValues {
    root: Value,
}

/// What the injectors read from the values, checked once.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// `sidetrace.containerName`.
    pub container_name: String,
    /// `sidetrace.ports.inbound`.
    pub inbound_port: u16,
    /// `sidetrace.ports.admin`.
    pub admin_port: u16,
    /// `sidetrace.ports.outbound`; 0: off.
    pub outbound_port: u16,
    /// `sidetrace.serviceName`, else `sidetrace.config.service.name`.
    pub service_name: Option<String>,
    /// `monitoring.annotations`: add the `prometheus.io/*` annotations.
    pub scrape_annotations: bool,
    /// `sidetrace.otel.tracesSampler`.
    pub sampler: String,
    /// `sidetrace.otel.tracesSamplerArg`.
    pub sampler_arg: String,
    /// The ConfigMap the release renders (`<fullname>-config`).
    pub config_map: String,
    /// Shared by every render: `sidetrace` (the values), `image` and
    /// `resourceAttributes`.
    pub shared: Value,
}

// === impl ChartValues ===

impl ChartValues {
    /// The chart's defaults.
    pub fn defaults() -> Result<Self, ValuesError> {
        let root = parse(CHART_VALUES, "built-in values")?;
        Ok(Self { root })
    }

    /// The defaults under each of `files`, in order (later files win).
    pub fn load(files: &[impl AsRef<Path>]) -> Result<Self, ValuesError> {
        let mut values = Self::defaults()?;
        for file in files {
            let file = file.as_ref();
            let name = file.display().to_string();
            let text = std::fs::read_to_string(file).map_err(|e| ValuesError {
                source_name: name.clone(),
                message: e.to_string(),
            })?;
            values.merge(parse(&text, &name)?);
        }
        Ok(values)
    }

    /// Merges `over` into the values, as `helm -f` does.
    pub fn merge(&mut self, over: Value) {
        merge(&mut self.root, over);
    }

    /// The merged values.
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Checks what the injectors read and derives the chart's names for a
    /// release called `release`.
    pub fn resolve(&self, release: &str) -> Result<Resolved, ValuesError> {
        let err = |message: String| ValuesError {
            source_name: "values".into(),
            message,
        };
        let st = self
            .root
            .get("sidetrace")
            .filter(|v| v.as_object().is_some())
            .ok_or_else(|| err("sidetrace: missing or not a map".into()))?;
        let string = |path: &str| -> Result<String, ValuesError> {
            match st.at(path) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Null) | None => Ok(String::new()),
                Some(other) => Err(err(format!(
                    "sidetrace.{path}: expected a string, got {}",
                    other.type_name()
                ))),
            }
        };
        let port = |path: &str, zero_ok: bool| -> Result<u16, ValuesError> {
            let v = st
                .at(path)
                .ok_or_else(|| err(format!("sidetrace.{path}: missing")))?;
            match v.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(0) if !zero_ok => Err(err(format!("sidetrace.{path}: 0 is not a port"))),
                Some(p) => Ok(p),
                None => Err(err(format!(
                    "sidetrace.{path}: {} is not a port number",
                    json(v)
                ))),
            }
        };
        let container_name = string("containerName")?;
        if container_name.is_empty() {
            return Err(err("sidetrace.containerName: empty".into()));
        }
        let inbound_port = port("ports.inbound", false)?;
        let admin_port = port("ports.admin", false)?;
        let outbound_port = port("ports.outbound", true)?;
        port("appPort", false)?;
        let repository = string("image.repository")?;
        if repository.is_empty() {
            return Err(err("sidetrace.image.repository: empty".into()));
        }
        let digest = string("image.digest")?;
        let tag = string("image.tag")?;
        let image = if !digest.is_empty() {
            format!("{repository}@{digest}")
        } else if tag.is_empty() {
            format!("{repository}:{APP_VERSION}")
        } else {
            format!("{repository}:{tag}")
        };
        let environment = match self.root.get("environment") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(err("environment: expected a string".into())),
        };
        let mut attrs = vec![
            "k8s.pod.name=$(K8S_POD_NAME)".to_string(),
            "k8s.namespace.name=$(K8S_NAMESPACE_NAME)".to_string(),
            "k8s.node.name=$(K8S_NODE_NAME)".to_string(),
            format!("deployment.environment.name={environment}"),
        ];
        if let Some(extra) = st.at("otel.resourceAttributes").and_then(Value::as_object) {
            // Helm's `keys | sortAlpha`: byte order.
            let mut keys: Vec<&String> = extra.keys().collect();
            keys.sort();
            for k in keys {
                attrs.push(format!("{k}={}", text(&extra[k])));
            }
        }
        let service_name = [string("serviceName")?, string("config.service.name")?]
            .into_iter()
            .find(|s| !s.is_empty());
        // As `sidetrace.scrapeAnnotations`: a PodMonitor or ServiceMonitor scrapes the pods
        // already, and annotation discovery would count every series twice.
        let on = |key: &str| matches!(self.root.at(key), Some(Value::Bool(true)));
        let scrape_annotations = !matches!(
            self.root.at("monitoring.annotations"),
            Some(Value::Bool(false))
        ) && !on("monitoring.podMonitor.enabled")
            && !on("monitoring.serviceMonitor.enabled");
        let mut shared = Map::new();
        shared.insert("sidetrace".into(), st.clone());
        shared.insert("image".into(), image.into());
        shared.insert("resourceAttributes".into(), attrs.join(",").into());
        Ok(Resolved {
            container_name,
            inbound_port,
            admin_port,
            outbound_port,
            service_name,
            scrape_annotations,
            sampler: string("otel.tracesSampler")?,
            sampler_arg: string("otel.tracesSamplerArg")?,
            // `sidetrace.suffixedName`: the prefix is cut, the suffix kept whole.
            config_map: format!("{}-config", trunc(&self.fullname(release), 63 - 7)),
            shared: Value::Object(shared),
        })
    }

    /// `sidetrace.fullname` of `_helpers.tpl`.
    fn fullname(&self, release: &str) -> String {
        let s = |key: &str| self.root.get(key).and_then(Value::as_str).unwrap_or("");
        if !s("fullnameOverride").is_empty() {
            return trunc63(s("fullnameOverride"));
        }
        let name = match s("nameOverride") {
            "" => "sidetrace",
            n => n,
        };
        if release.contains(name) {
            trunc63(release)
        } else {
            trunc63(&format!("{release}-{name}"))
        }
    }
}

/// Helm's `trunc 63 | trimSuffix "-"` (one dash, as trimSuffix removes one).
fn trunc63(s: &str) -> String {
    trunc(s, 63)
}

/// Helm's `trunc n | trimSuffix "-"`.
fn trunc(s: &str, n: usize) -> String {
    let cut: String = s.chars().take(n).collect();
    cut.strip_suffix('-').map(str::to_string).unwrap_or(cut)
}

/// A scalar as Go's `%s`/`%v` prints it (resource attribute values).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => json(other),
    }
}

fn json(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn parse(text: &str, name: &str) -> Result<Value, ValuesError> {
    let v: Value = serde_saphyr::from_str(text).map_err(|e| ValuesError {
        source_name: name.to_string(),
        message: e.to_string(),
    })?;
    match v {
        Value::Object(_) => Ok(v),
        Value::Null => Ok(Value::object()),
        other => Err(ValuesError {
            source_name: name.to_string(),
            message: format!("expected a map of values, got {}", other.type_name()),
        }),
    }
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.shift_remove(&k);
                    continue;
                }
                match b.get_mut(&k) {
                    Some(existing @ Value::Object(_)) if matches!(v, Value::Object(_)) => {
                        merge(existing, v)
                    }
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(yaml: &str) -> ChartValues {
        let mut v = ChartValues::defaults().unwrap();
        v.merge(serde_saphyr::from_str(yaml).unwrap());
        v
    }

    #[test]
    fn defaults_resolve_like_the_chart() {
        let r = ChartValues::defaults().unwrap().resolve("shop").unwrap();
        assert_eq!(r.container_name, "sidetrace");
        assert_eq!(
            (r.inbound_port, r.admin_port, r.outbound_port),
            (15080, 15090, 0)
        );
        assert_eq!(r.config_map, "shop-sidetrace-config");
        assert_eq!(
            r.shared.get("image").unwrap().as_str(),
            Some(format!("ghcr.io/sidetrace/sidetrace:{APP_VERSION}").as_str())
        );
        assert!(r.scrape_annotations);
        assert_eq!(r.service_name, None);
        let r = ChartValues::defaults()
            .unwrap()
            .resolve("sidetrace-prod")
            .unwrap();
        assert_eq!(r.config_map, "sidetrace-prod-config");
    }

    #[test]
    fn merge_follows_helm() {
        let v = values(
            "environment: dev\nfullnameOverride: tracer\nmonitoring: {annotations: false}\n\
             sidetrace:\n  image: {digest: 'sha256:abc', tag: '9'}\n  serviceName: ''\n\
             \x20 config: {service: {name: orders}}\n  otel: {resourceAttributes: {team: a, b.c: 2}}\n  resources: null\n",
        );
        let r = v.resolve("shop").unwrap();
        assert_eq!(r.config_map, "tracer-config");
        // A 53-character release: the prefix is cut before -config is added.
        let release = "a-very-long-release-name-for-the-checkout-service-abc";
        let long = ChartValues::defaults().unwrap().resolve(release).unwrap();
        assert_eq!(long.config_map.len(), 63);
        assert!(
            long.config_map.ends_with("-config") && long.config_map.starts_with(&release[..50])
        );
        assert_eq!(
            r.shared.get("image").unwrap().as_str(),
            Some("ghcr.io/sidetrace/sidetrace@sha256:abc")
        );
        assert_eq!(r.service_name.as_deref(), Some("orders"));
        assert!(!r.scrape_annotations);
        let monitored = values("monitoring: {podMonitor: {enabled: true}}\n");
        assert!(!monitored.resolve("shop").unwrap().scrape_annotations);
        assert_eq!(
            r.shared.get("resourceAttributes").unwrap().as_str(),
            Some("k8s.pod.name=$(K8S_POD_NAME),k8s.namespace.name=$(K8S_NAMESPACE_NAME),k8s.node.name=$(K8S_NODE_NAME),deployment.environment.name=dev,b.c=2,team=a")
        );
        // null removed the key; siblings kept
        let st = v.root().get("sidetrace").unwrap();
        assert!(st.get("resources").is_none());
        assert_eq!(
            st.at("image.pullPolicy").unwrap().as_str(),
            Some("IfNotPresent")
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (yaml, needle) in [
            (
                "sidetrace: {ports: {admin: http}}",
                "sidetrace.ports.admin: \"http\" is not a port",
            ),
            (
                "sidetrace: {ports: {inbound: 70000}}",
                "sidetrace.ports.inbound: 70000 is not a port",
            ),
            (
                "sidetrace: {containerName: ''}",
                "sidetrace.containerName: empty",
            ),
            (
                "sidetrace: {image: {tag: [1]}}",
                "sidetrace.image.tag: expected a string",
            ),
            ("sidetrace: 3", "sidetrace: missing or not a map"),
        ] {
            let e = values(yaml).resolve("r").unwrap_err();
            assert!(e.to_string().contains(needle), "{yaml}: {e}");
        }
        let long = "x".repeat(70);
        assert_eq!(
            ChartValues::defaults()
                .unwrap()
                .resolve(&long)
                .unwrap()
                .config_map
                .len(),
            63
        );
    }
}
