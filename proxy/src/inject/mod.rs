//! Adding the sidecar to pods without editing their templates:
//! `sidetrace inject` (manifests in, manifests out) and the mutating
//! admission webhook ([`crate::webhook`]) share everything here.
//!
//! There is one definition of the sidecar: the chart's
//! `templates/_sidecar.tpl`, which the chart's library templates render with
//! Helm and this module embeds and renders with [`template`], a reader of
//! the part of Go's template language that file keeps to. The chart's
//! `values.yaml` is embedded too ([`values`]), so `sidetrace inject -f
//! my-values.yaml` gives the container `helm template` gives with the same
//! values; the chart tests compare the two.
//!
//! ```text
//! sidetrace inject deploy.yaml | kubectl apply -f -
//! sidetrace inject --mode container --app-port 8080 -f values-prod.yaml - < all.yaml
//! sidetrace inject --uninject injected.yaml
//! ```
//!
//! - [`pod`]: the decisions for one pod template (app port, service name,
//!   annotations, conflicts) as JSON Patch operations ([`patch`]);
//!   [`uninject`] their reversal.
//! - [`manifest`]: multi-document YAML and JSON, workload kinds, `List`.
//! - [`run`]: the command.

pub mod manifest;
pub mod patch;
pub mod pod;
mod run;
pub mod sidecar;
pub mod template;
pub mod uninject;
pub mod value;
pub mod values;

pub use self::{
    manifest::{process, Action, ManifestErrors, Report},
    pod::{plan_inject, InjectError, Plan, PodOptions},
    run::run,
    sidecar::{Injector, Mode, Sidecar, SidecarParams},
    uninject::plan_uninject,
    value::Value,
    values::ChartValues,
};

#[cfg(test)]
mod tests;
