//! The sidecar of one pod: the chart's shared definition rendered with the
//! values and what the pod asks for (app port, service name, sampling,
//! ConfigMap, mode).

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

/// Renders sidecars; built once, used for every pod.
#[derive(Debug)]
pub struct Injector {
    templates: Templates,
    resolved: Resolved,
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
}

/// The rendered sidecar.
#[derive(Clone, Debug)]
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
        };
        // Render once now, so broken values fail at start, not per pod.
        injector.sidecar(&SidecarParams {
            mode: Mode::Native,
            app_port: 8080,
            service_name: "check",
            config_map: "check",
            sampling_ratio: Some("0.5"),
        })?;
        Ok(injector)
    }

    /// What the values say.
    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    /// Renders the sidecar for one pod.
    pub fn sidecar(&self, p: &SidecarParams<'_>) -> Result<Sidecar, TemplateError> {
        let r = &self.resolved;
        let (sampler, sampler_arg) = match p.sampling_ratio {
            // A plain ratio sampler stays one; anything else becomes the
            // parent-based ratio, so a caller's decision is still honoured.
            Some(ratio) if r.sampler == "traceidratio" => ("traceidratio", ratio),
            Some(ratio) => ("parentbased_traceidratio", ratio),
            None => (r.sampler.as_str(), r.sampler_arg.as_str()),
        };
        let mut local = Map::new();
        local.insert("native".into(), (p.mode == Mode::Native).into());
        local.insert(
            "upstream".into(),
            format!("http://127.0.0.1:{}", p.app_port).into(),
        );
        local.insert("serviceName".into(), p.service_name.into());
        local.insert("configMapName".into(), p.config_map.into());
        local.insert("sampler".into(), sampler.into());
        local.insert("samplerArg".into(), sampler_arg.into());
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

fn shape(name: &str, expected: &str, got: &Value) -> TemplateError {
    TemplateError {
        line: 0,
        message: format!("{name} rendered {}, not {expected}", got.type_name()),
    }
}
