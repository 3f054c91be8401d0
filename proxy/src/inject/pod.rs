//! Injecting into one pod template (a Pod, or the `template` of a
//! workload), as JSON Patch operations on that template; [`super::uninject`]
//! takes the sidecar out again.
//!
//! Injection records what it added in the `sidetrace.io/status` annotation
//! (as Istio's `sidecar.istio.io/status` does), so that `--uninject`
//! removes exactly that and nothing the user wrote, and a second injection
//! sees the first.

use serde::{Deserialize, Serialize};

use super::{
    patch::{escape, Op},
    sidecar::{Injector, Mode, SidecarParams},
    value::{Map, Value},
    values::APP_VERSION,
};

/// `enabled` or `disabled`: whether the pod (or, as a label, its
/// namespace) wants the sidecar.
pub const INJECT: &str = "sidetrace.io/inject";
/// The app's port: a number or the name of a container port.
pub const APP_PORT: &str = "sidetrace.io/app-port";
/// `OTEL_SERVICE_NAME` of the pod.
pub const SERVICE_NAME: &str = "sidetrace.io/service-name";
/// Ratio of new traces sampled, 0 to 1.
pub const SAMPLING_RATIO: &str = "sidetrace.io/sampling-ratio";
/// The ConfigMap holding `sidetrace.yaml`, in the pod's namespace.
pub const CONFIG_MAP: &str = "sidetrace.io/config-map";
/// `native` or `container`.
pub const MODE: &str = "sidetrace.io/mode";
/// Written by injection: what it added.
pub const STATUS: &str = "sidetrace.io/status";
/// The proxy's CPU request, a Kubernetes quantity (`100m`), over the values'.
pub const PROXY_CPU_REQUEST: &str = "sidetrace.io/proxy-cpu-request";
/// The proxy's CPU limit.
pub const PROXY_CPU_LIMIT: &str = "sidetrace.io/proxy-cpu-limit";
/// The proxy's memory request (`64Mi`).
pub const PROXY_MEMORY_REQUEST: &str = "sidetrace.io/proxy-memory-request";
/// The proxy's memory limit.
pub const PROXY_MEMORY_LIMIT: &str = "sidetrace.io/proxy-memory-limit";
/// The container `kubectl logs` and `kubectl exec` pick without `-c`:
/// injection points it at the app unless the pod names one already.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// The resource annotations: (annotation, `requests` or `limits`, resource).
const RESOURCES: [(&str, &str, &str); 4] = [
    (PROXY_CPU_REQUEST, "requests", "cpu"),
    (PROXY_CPU_LIMIT, "limits", "cpu"),
    (PROXY_MEMORY_REQUEST, "requests", "memory"),
    (PROXY_MEMORY_LIMIT, "limits", "memory"),
];

/// What the caller decides for every pod.
#[derive(Clone, Copy, Debug)]
pub struct PodOptions<'a> {
    /// Mode unless the pod's `sidetrace.io/mode` says otherwise.
    pub mode: Mode,
    /// App port over the pod's annotation and ports (`--app-port`).
    pub app_port: Option<u16>,
    /// The workload's name, the service name of last resort.
    pub workload_name: Option<&'a str>,
}

/// A pod that cannot be injected: the field at fault (relative to the pod
/// template, `spec.containers`) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InjectError {
    /// The field, dotted from the pod template.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// What injection decided for a pod.
#[derive(Clone, Debug)]
pub enum Plan {
    /// Add the sidecar with these operations.
    Inject {
        /// The patch, relative to the pod template.
        ops: Vec<Op>,
        /// What was decided, for the caller's summary.
        summary: Summary,
    },
    /// The sidecar is there already (injected, or included by the chart's
    /// template).
    AlreadyInjected,
    /// The pod says `sidetrace.io/inject: disabled`.
    Disabled,
}

/// The choices made for an injected pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Native or container.
    pub mode: Mode,
    /// Where the proxy forwards.
    pub app_port: u16,
    /// `OTEL_SERVICE_NAME`.
    pub service_name: String,
}

/// The `sidetrace.io/status` annotation.
#[derive(Debug, Deserialize, Serialize)]
pub(super) struct Status {
    pub(super) version: String,
    pub(super) mode: String,
    pub(super) container: String,
    pub(super) volumes: Vec<String>,
    pub(super) annotations: Vec<String>,
    /// Lists and maps that injection created (removed again when empty).
    pub(super) created: Vec<String>,
}

pub(super) fn bad(field: impl Into<String>, message: impl Into<String>) -> InjectError {
    InjectError {
        field: field.into(),
        message: message.into(),
    }
}

/// Decides and prepares the injection of the sidecar into `pod` (an object
/// with `metadata` and `spec`).
pub fn plan_inject(
    injector: &Injector,
    pod: &Value,
    opts: &PodOptions<'_>,
) -> Result<Plan, InjectError> {
    let r = injector.resolved();
    let meta = optional_object(pod.get("metadata"), "metadata")?;
    let annotations = match meta {
        Some(m) => optional_object(m.get("annotations"), "metadata.annotations")?,
        None => None,
    };
    let note = |key: &str| annotations.and_then(|a| a.get(key));
    let note_str = |key: &str| -> Result<Option<&str>, InjectError> {
        match note(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim())),
            Some(other) => Err(bad(
                format!("metadata.annotations.{key}"),
                format!("expected a string, got {}", other.type_name()),
            )),
        }
    };
    match note_str(INJECT)? {
        None | Some("enabled") => {}
        Some("disabled") => return Ok(Plan::Disabled),
        Some(other) => {
            return Err(bad(
                format!("metadata.annotations.{INJECT}"),
                format!("{other:?} is neither enabled nor disabled"),
            ))
        }
    }
    let spec = pod
        .get("spec")
        .filter(|s| s.as_object().is_some())
        .ok_or_else(|| bad("spec", "missing: not a pod template"))?;
    let containers = list(spec, "containers", "spec.containers")?;
    let init = list(spec, "initContainers", "spec.initContainers")?;
    if note(STATUS).is_some()
        || find(containers, &r.container_name).is_some()
        || find(init, &r.container_name).is_some()
    {
        return Ok(Plan::AlreadyInjected);
    }
    if containers.is_empty() {
        return Err(bad(
            "spec.containers",
            "no containers: nothing to put the proxy beside",
        ));
    }
    if spec.get("hostNetwork") == Some(&Value::Bool(true)) {
        return Err(bad(
            "spec.hostNetwork",
            "the pod uses the node's network, where the proxy's ports would clash between pods; \
             annotate it sidetrace.io/inject: disabled",
        ));
    }
    let mode = match note_str(MODE)? {
        None => opts.mode,
        Some("native") => Mode::Native,
        Some("container") => Mode::Container,
        Some(other) => {
            return Err(bad(
                format!("metadata.annotations.{MODE}"),
                format!("{other:?} is neither native nor container"),
            ))
        }
    };
    let proxy_ports = [
        (r.inbound_port, "inbound"),
        (r.admin_port, "admin"),
        (r.outbound_port, "outbound"),
    ];
    for (i, c) in containers.iter().chain(init).enumerate() {
        for (port, _) in container_ports(c) {
            if let Some((_, which)) = proxy_ports.iter().find(|(p, _)| *p == port && *p != 0) {
                let (list, index) = if i < containers.len() {
                    ("containers", i)
                } else {
                    ("initContainers", i - containers.len())
                };
                return Err(bad(
                    format!("spec.{list}[{index}].ports"),
                    format!(
                        "container {:?} uses port {port}, the proxy's {which} port; \
                         change sidetrace.ports.{which} in the values",
                        name_of(c)
                    ),
                ));
            }
        }
    }
    let app_port = app_port(opts.app_port, note_str(APP_PORT)?, containers)?;
    if let Some((_, which)) = proxy_ports.iter().find(|(p, _)| *p == app_port) {
        return Err(bad(
            "app port",
            format!("{app_port} is the proxy's {which} port"),
        ));
    }
    let service_name = match note_str(SERVICE_NAME)? {
        Some("") => return Err(bad(format!("metadata.annotations.{SERVICE_NAME}"), "empty")),
        Some(s) => s.to_string(),
        None => {
            service_name(r.service_name.as_deref(), meta, opts.workload_name).ok_or_else(|| {
                bad(
                    "metadata",
                    format!(
                        "no service name: annotate the pod with {SERVICE_NAME}, label it \
                         app.kubernetes.io/name, or name the workload"
                    ),
                )
            })?
        }
    };
    let sampling_ratio = match note_str(SAMPLING_RATIO)? {
        None => None,
        Some(s) => match s.parse::<f64>() {
            Ok(x) if (0.0..=1.0).contains(&x) => Some(s),
            _ => {
                return Err(bad(
                    format!("metadata.annotations.{SAMPLING_RATIO}"),
                    format!("{s:?} is not a ratio between 0 and 1"),
                ))
            }
        },
    };
    let config_map = match note_str(CONFIG_MAP)? {
        None => r.config_map.as_str(),
        Some(name) if is_dns_subdomain(name) => name,
        Some(name) => {
            return Err(bad(
                format!("metadata.annotations.{CONFIG_MAP}"),
                format!("{name:?} is not a ConfigMap name"),
            ))
        }
    };
    let mut resources = Map::new();
    for (key, kind, resource) in RESOURCES {
        let Some(q) = note_str(key)? else { continue };
        if !is_quantity(q) {
            return Err(bad(
                format!("metadata.annotations.{key}"),
                format!("{q:?} is not a Kubernetes quantity (e.g. 100m, 0.5, 64Mi)"),
            ));
        }
        let entry = resources
            .entry(kind.to_string())
            .or_insert_with(Value::object);
        if let Some(m) = entry.as_object_mut() {
            m.insert(resource.to_string(), q.into());
        }
    }
    let resources = (!resources.is_empty()).then(|| Value::Object(resources));
    let sidecar = injector
        .sidecar(&SidecarParams {
            mode,
            app_port,
            service_name: &service_name,
            config_map,
            sampling_ratio,
            resources: resources.as_ref(),
        })
        .map_err(|e| bad("sidecar", e.to_string()))?;
    let existing_volumes = list(spec, "volumes", "spec.volumes")?;
    for v in &sidecar.volumes {
        let name = name_of(v);
        if find(existing_volumes, name).is_some() {
            return Err(bad(
                "spec.volumes",
                format!("the pod already has a volume named {name:?}, which the proxy needs"),
            ));
        }
    }

    let mut ops = Vec::new();
    let mut created = Vec::new();
    if meta.is_none() {
        ops.push(add("/metadata", Value::object()));
        created.push("metadata".to_string());
    }
    let mut added_annotations: Vec<String> = Vec::new();
    let mut new_annotations = Map::new();
    let app = app_container(containers, app_port);
    // The service name chosen is written down too: the PodMonitor and ServiceMonitor put
    // it in the `service` label of the pod's series (else the release's name would be).
    let pod_annotations = [
        (DEFAULT_CONTAINER.to_string(), Value::from(app)),
        (SERVICE_NAME.to_string(), Value::from(service_name.as_str())),
    ]
    .into_iter()
    .chain(sidecar.annotations.clone());
    for (k, v) in pod_annotations {
        // The pod's own settings (its default container, its service name, scrape settings
        // for the app's metrics) win.
        if note(&k).is_none() {
            added_annotations.push(k.clone());
            new_annotations.insert(k, v);
        }
    }
    let volume_names: Vec<String> = sidecar
        .volumes
        .iter()
        .map(|v| name_of(v).to_string())
        .collect();
    let status = Status {
        version: APP_VERSION.to_string(),
        mode: match mode {
            Mode::Native => "native",
            Mode::Container => "container",
        }
        .to_string(),
        container: r.container_name.clone(),
        volumes: volume_names,
        annotations: added_annotations,
        created: Vec::new(),
    };
    match mode {
        Mode::Native if spec.get("initContainers").is_none_or(Value::is_null) => {
            created.push("spec.initContainers".into());
            ops.push(add("/spec/initContainers", vec![sidecar.container].into()));
        }
        // First, so it runs (and is ready) before the other init containers.
        Mode::Native => ops.push(add("/spec/initContainers/0", sidecar.container)),
        Mode::Container => ops.push(add("/spec/containers/-", sidecar.container)),
    }
    if spec.get("volumes").is_none_or(Value::is_null) {
        created.push("spec.volumes".into());
        ops.push(add("/spec/volumes", sidecar.volumes.into()));
    } else {
        for v in sidecar.volumes {
            ops.push(add("/spec/volumes/-", v));
        }
    }
    if annotations.is_none() {
        created.push("metadata.annotations".into());
        ops.push(add("/metadata/annotations", new_annotations.into()));
    } else {
        for (k, v) in new_annotations {
            ops.push(add(&format!("/metadata/annotations/{}", escape(&k)), v));
        }
    }
    let status = Status { created, ..status };
    let status_json = serde_json::to_string(&status).map_err(|e| bad("status", e.to_string()))?;
    ops.push(add(
        &format!("/metadata/annotations/{}", escape(STATUS)),
        status_json.into(),
    ));
    Ok(Plan::Inject {
        ops,
        summary: Summary {
            mode,
            app_port,
            service_name,
        },
    })
}

/// The workload a pod belongs to, the service name of last resort: its
/// controller (a ReplicaSet's name less the pod-template hash, so the
/// Deployment's), else its `generateName` stem, else its name.
pub fn workload_name(pod: &Value) -> Option<String> {
    let meta = pod.get("metadata")?;
    let hash = meta
        .at("labels.pod-template-hash")
        .and_then(Value::as_str)
        .map(|h| format!("-{h}"));
    let strip = |name: &str| -> String {
        let name = name.trim_end_matches('-');
        match &hash {
            Some(h) => name.strip_suffix(h.as_str()).unwrap_or(name).to_string(),
            None => name.to_string(),
        }
    };
    let controller = meta
        .get("ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|o| o.get("controller") == Some(&Value::Bool(true)))
        .and_then(|o| o.get("name"))
        .and_then(Value::as_str);
    let generate = meta.get("generateName").and_then(Value::as_str);
    let name = meta.get("name").and_then(Value::as_str);
    controller
        .or(generate)
        .or(name)
        .map(strip)
        .filter(|n| !n.is_empty())
}

fn add(path: &str, value: Value) -> Op {
    Op::Add {
        path: path.to_string(),
        value,
    }
}

pub(super) fn optional_object<'a>(
    v: Option<&'a Value>,
    field: &str,
) -> Result<Option<&'a Map>, InjectError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(bad(
            field,
            format!("expected a map, got {}", other.type_name()),
        )),
    }
}

pub(super) fn list<'a>(
    spec: &'a Value,
    key: &str,
    field: &str,
) -> Result<&'a [Value], InjectError> {
    match spec.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(bad(
            field,
            format!("expected a list, got {}", other.type_name()),
        )),
    }
}

pub(super) fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("")
}

pub(super) fn find<'a>(items: &'a [Value], name: &str) -> Option<&'a Value> {
    items.iter().find(|v| name_of(v) == name)
}

/// The app's container: the one that declares the app port, else the first.
fn app_container(containers: &[Value], app_port: u16) -> &str {
    containers
        .iter()
        .find(|c| container_ports(c).any(|(p, _)| p == app_port))
        .or(containers.first())
        .map_or("", name_of)
}

/// A Kubernetes resource quantity that a request or limit may be: a
/// decimal number, not negative, with an optional binary (`Ki` .. `Ei`) or
/// decimal (`m`, `k`, `M` .. `E`) suffix or exponent.
fn is_quantity(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    let end = digits
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(digits.len());
    let (number, suffix) = digits.split_at(end);
    let mut parts = number.split('.');
    let whole = parts.next().unwrap_or("");
    let fraction = parts.next();
    if parts.next().is_some() || (whole.is_empty() && fraction.is_none_or(str::is_empty)) {
        return false;
    }
    match suffix {
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => true,
        exp => exp
            .strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())),
    }
}

/// `(port, name)` of a container's TCP ports.
fn container_ports(c: &Value) -> impl Iterator<Item = (u16, &str)> {
    c.get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| {
            matches!(
                p.get("protocol").and_then(Value::as_str),
                None | Some("TCP")
            )
        })
        .filter_map(|p| {
            let port = p.get("containerPort")?.as_u64()?;
            Some((
                u16::try_from(port).ok()?,
                p.get("name").and_then(Value::as_str).unwrap_or(""),
            ))
        })
}

/// The app's port: the flag, else the annotation (a number or a port
/// name), else the one TCP port the containers declare.
fn app_port(
    flag: Option<u16>,
    note: Option<&str>,
    containers: &[Value],
) -> Result<u16, InjectError> {
    if let Some(p) = flag {
        return Ok(p);
    }
    let field = format!("metadata.annotations.{APP_PORT}");
    if let Some(note) = note {
        if let Ok(p) = note.parse::<u16>() {
            return if p == 0 {
                Err(bad(field, "0 is not a port"))
            } else {
                Ok(p)
            };
        }
        let named: Vec<u16> = containers
            .iter()
            .flat_map(container_ports)
            .filter(|(_, name)| *name == note)
            .map(|(p, _)| p)
            .collect();
        return match named.as_slice() {
            [p] => Ok(*p),
            [] => Err(bad(
                field,
                format!("{note:?} is neither a port number nor the name of a container port"),
            )),
            _ => Err(bad(
                field,
                format!("several container ports are named {note:?}"),
            )),
        };
    }
    let mut found: Vec<(u16, &str)> = Vec::new();
    for c in containers {
        for (p, _) in container_ports(c) {
            if !found.iter().any(|(q, _)| *q == p) {
                found.push((p, name_of(c)));
            }
        }
    }
    match found.as_slice() {
        [(p, _)] => Ok(*p),
        [] => Err(bad(
            "spec.containers[*].ports",
            format!(
                "no container port to forward to: pass --app-port or annotate the pod \
                 template with {APP_PORT}"
            ),
        )),
        many => Err(bad(
            "spec.containers[*].ports",
            format!(
                "{} candidate app ports ({}): pass --app-port or annotate the pod template \
                 with {APP_PORT}",
                many.len(),
                many.iter()
                    .map(|(p, c)| format!("{p} in {c:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The values' name, else the pod's `app.kubernetes.io/name` or `app`
/// label, else the workload's name.
fn service_name(
    values: Option<&str>,
    meta: Option<&Map>,
    workload: Option<&str>,
) -> Option<String> {
    let label = |k: &str| {
        meta.and_then(|m| m.get("labels"))
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    values
        .or_else(|| label("app.kubernetes.io/name"))
        .or_else(|| label("app"))
        .or(workload.filter(|w| !w.is_empty()))
        .map(str::to_string)
}

/// RFC 1123 subdomain: what Kubernetes accepts as a ConfigMap name.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
