//! The sidecar of one pod: the chart's shared definition rendered with the
//! values and what the pod asks for (app port, service name, sampling,
//! ConfigMap, mode).

use std::sync::OnceLock;

use super::{
    template::{TemplateError, Templates},
    value::{Map, Value},
    values::{ChartValues, Resolved, ValuesError},
};

/// The chart's sidecar definition, embedded.
pub const SIDECAR_TEMPLATE: &str = include_str!("../../../charts/sidetrace/templates/_sidecar.tpl");

const CONTAINER: &str = "sidetrace.sidecar.container";
const VOLUMES: &str = "sidetrace.sidecar.volumes";
const ANNOTATIONS: &str = "sidetrace.sidecar.annotations";

/// How the proxy joins the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A native sidecar: an init container with `restartPolicy: Always`,
    /// started and ready before the app, stopped after it, not keeping a
    /// Job from completing (Kubernetes 1.29+).
    Native,
    /// A regular container beside the app.
    Container,
}

/// The pod's own strings in the definition's dot, in the order
/// [`Injector::sidecar`] keys its shapes by.
const LOCALS: [&str; 5] = [
    "upstream",
    "serviceName",
    "configMapName",
    "sampler",
    "samplerArg",
];
/// Placeholder delimiters: private-use characters, which no Kubernetes
/// field of the definition holds, valid in JSON and YAML strings.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';
/// Shapes: native or not, times each of [`LOCALS`] empty or not.
const SHAPES: usize = 2 << LOCALS.len();

/// Renders sidecars; built once, used for every pod.
#[derive(Debug)]
pub struct Injector {
    templates: Templates,
    resolved: Resolved,
    /// The definition rendered per shape, on first use.
    shapes: [OnceLock<Result<Sidecar, TemplateError>>; SHAPES],
}

/// What one pod's sidecar is made of.
#[derive(Clone, Debug)]
pub struct SidecarParams<'a> {
    /// Native sidecar or regular container.
    pub mode: Mode,
    /// The port the app listens on in the pod.
    pub app_port: u16,
    /// `OTEL_SERVICE_NAME`.
    pub service_name: &'a str,
    /// The ConfigMap holding `sidetrace.yaml`.
    pub config_map: &'a str,
    /// A parent-based ratio sampler with this ratio, over the values'.
    pub sampling_ratio: Option<&'a str>,
    /// Resource quantities (`{requests: {cpu: ..}, limits: {memory: ..}}`)
    /// merged over the values' `sidetrace.resources`, key by key, as the
    /// chart merges a workload's `resources`.
    pub resources: Option<&'a Value>,
}

/// The rendered sidecar.
#[derive(Clone, Debug, PartialEq)]
pub struct Sidecar {
    /// The container.
    pub container: Value,
    /// The volumes it mounts.
    pub volumes: Vec<Value>,
    /// The `prometheus.io/*` annotations (empty when the values turn them
    /// off).
    pub annotations: Map,
}

/// Why an injector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The values.
    #[error(transparent)]
    Values(#[from] ValuesError),
    /// The embedded definition (a build of a broken chart).
    #[error(transparent)]
    Template(#[from] TemplateError),
}

// === impl Injector ===

impl Injector {
    /// An injector for the chart values `values` of release `release`.
    pub fn new(values: &ChartValues, release: &str) -> Result<Self, SetupError> {
        let templates = Templates::parse(SIDECAR_TEMPLATE)?;
        let resolved = values.resolve(release)?;
        let injector = Self {
            templates,
            resolved,
            shapes: std::array::from_fn(|_| OnceLock::new()),
        };
        // Render once now, so broken values fail at start, not per pod.
        injector.sidecar(&SidecarParams {
            mode: Mode::Native,
            app_port: 8080,
            service_name: "check",
            config_map: "check",
            sampling_ratio: Some("0.5"),
            resources: None,
        })?;
        Ok(injector)
    }

    /// What the values say.
    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    /// The sidecar for one pod.
    ///
    /// The definition is rendered once per shape (mode, and which of the
    /// pod's strings are empty, as `if` sees them) with placeholders for the
    /// pod's strings, and kept; each pod then gets a copy with its strings
    /// put in. The template passes those strings through `toJson`, so the
    /// result is what [`Injector::render`] gives, which the tests check.
    pub fn sidecar(&self, p: &SidecarParams<'_>) -> Result<Sidecar, TemplateError> {
        let strings = self.strings(p);
        let native = p.mode == Mode::Native;
        let mut key = usize::from(native);
        for (i, s) in strings.iter().enumerate() {
            key |= usize::from(!s.is_empty()) << (i + 1);
        }
        let prepared = self.shapes[key]
            .get_or_init(|| {
                let placeholders: [String; LOCALS.len()] = std::array::from_fn(|i| {
                    if strings[i].is_empty() {
                        String::new()
                    } else {
                        format!("{OPEN}{i}{CLOSE}")
                    }
                });
                self.render_with(native, &placeholders.each_ref().map(String::as_str))
            })
            .as_ref()
            .map_err(Clone::clone)?;
        let fill = |v: &Value| fill(v, &strings);
        let mut container = fill(&prepared.container);
        with_resources(&mut container, p.resources);
        self.with_extra_fields(&mut container);
        Ok(Sidecar {
            container,
            volumes: prepared.volumes.iter().map(fill).collect(),
            annotations: prepared
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), fill(v)))
                .collect(),
        })
    }

    /// Renders the definition for one pod, without the per-shape copy: the
    /// reference [`Injector::sidecar`] is checked against.
    pub fn render(&self, p: &SidecarParams<'_>) -> Result<Sidecar, TemplateError> {
        let strings = self.strings(p);
        let mut sidecar = self.render_with(
            p.mode == Mode::Native,
            &strings.each_ref().map(String::as_str),
        )?;
        with_resources(&mut sidecar.container, p.resources);
        self.with_extra_fields(&mut sidecar.container);
        Ok(sidecar)
    }

    /// `sidetrace.extraContainerFields` merged over the container last, as
    /// the chart's `sidetrace.containerSpec` merges them (`mergeOverwrite`).
    fn with_extra_fields(&self, container: &mut Value) {
        let extra = self.resolved.shared.at("sidetrace.extraContainerFields");
        if let Some(extra @ Value::Object(m)) = extra {
            if !m.is_empty() {
                merge_maps(container, extra);
            }
        }
    }

    /// The pod's strings, in [`LOCALS`] order.
    fn strings(&self, p: &SidecarParams<'_>) -> [String; LOCALS.len()] {
        let r = &self.resolved;
        let (sampler, sampler_arg) = match p.sampling_ratio {
            // A plain ratio sampler stays one; anything else becomes the
            // parent-based ratio, so a caller's decision is still honoured.
            Some(ratio) if r.sampler == "traceidratio" => ("traceidratio", ratio),
            Some(ratio) => ("parentbased_traceidratio", ratio),
            None => (r.sampler.as_str(), r.sampler_arg.as_str()),
        };
        [
            format!("http://127.0.0.1:{}", p.app_port),
            p.service_name.to_string(),
            p.config_map.to_string(),
            sampler.to_string(),
            sampler_arg.to_string(),
        ]
    }

    fn render_with(
        &self,
        native: bool,
        strings: &[&str; LOCALS.len()],
    ) -> Result<Sidecar, TemplateError> {
        let r = &self.resolved;
        let mut local = Map::new();
        local.insert("native".into(), native.into());
        for (name, value) in LOCALS.iter().zip(strings) {
            local.insert((*name).into(), (*value).into());
        }
        let local = Value::Object(local);
        let layers = [&local, &r.shared];
        let container = self.parse(CONTAINER, &layers)?;
        let volumes = match self.parse(VOLUMES, &layers)? {
            Value::Array(v) => v,
            other => return Err(shape(VOLUMES, "a list", &other)),
        };
        let annotations = if r.scrape_annotations {
            match self.parse(ANNOTATIONS, &layers)? {
                Value::Object(m) => m,
                other => return Err(shape(ANNOTATIONS, "a map", &other)),
            }
        } else {
            Map::new()
        };
        if container.as_object().is_none() {
            return Err(shape(CONTAINER, "a map", &container));
        }
        Ok(Sidecar {
            container,
            volumes,
            annotations,
        })
    }

    fn parse(&self, name: &str, layers: &[&Value]) -> Result<Value, TemplateError> {
        let text = self.templates.render(name, layers)?;
        serde_saphyr::from_str(&text).map_err(|e| TemplateError {
            line: 0,
            message: format!("{name} rendered invalid YAML: {e}"),
        })
    }
}

/// Merges a pod's resource quantities over the container's `resources`
/// (Helm's `mergeOverwrite`: maps key by key), adding the key after
/// `readinessProbe`, where the definition puts it, when the values had none.
fn with_resources(container: &mut Value, over: Option<&Value>) {
    let (Some(over), Some(c)) = (over, container.as_object_mut()) else {
        return;
    };
    match c.get_mut("resources") {
        Some(existing @ Value::Object(_)) => merge_maps(existing, over),
        _ => {
            let at = c
                .get_index_of("readinessProbe")
                .map_or(c.len(), |i| i + 1)
                .min(c.len());
            c.shift_insert(at, "resources".into(), over.clone());
        }
    }
}

fn merge_maps(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing @ Value::Object(_)) if matches!(v, Value::Object(_)) => {
                        merge_maps(existing, v)
                    }
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// A copy of `v` with every placeholder replaced by its string, in one
/// pass, so a pod's string that looks like a placeholder stays itself.
fn fill(v: &Value, strings: &[String; LOCALS.len()]) -> Value {
    match v {
        Value::String(s) if s.contains(OPEN) => {
            let mut out = String::with_capacity(s.len() + 64);
            let mut parts = s.split(OPEN);
            out.push_str(parts.next().unwrap_or(""));
            for part in parts {
                let found = part.split_once(CLOSE).and_then(|(index, rest)| {
                    let value = strings.get(index.parse::<usize>().ok()?)?;
                    Some((value, rest))
                });
                match found {
                    Some((value, rest)) => {
                        out.push_str(value);
                        out.push_str(rest);
                    }
                    None => {
                        out.push(OPEN);
                        out.push_str(part);
                    }
                }
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| fill(i, strings)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), fill(v, strings)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn shape(name: &str, expected: &str, got: &Value) -> TemplateError {
    TemplateError {
        line: 0,
        message: format!("{name} rendered {}, not {expected}", got.type_name()),
    }
}
