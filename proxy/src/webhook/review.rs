//! One `admission.k8s.io/v1` AdmissionReview in, its response out.
//!
//! The answer is always `allowed: true`: the webhook adds a sidecar, it
//! never vetoes a pod. What reaches it has been selected by the API server
//! (the namespace label, or the pod's annotation through a match
//! condition); here a pod is skipped when it says `sidetrace.io/inject:
//! disabled` or already has the sidecar, and a pod that cannot be decided
//! (two candidate ports, no containers) is admitted unchanged with a
//! warning that `kubectl` shows. A body that is not a review gets the same
//! treatment: the webhook must not be the reason a pod cannot start.

use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use crate::inject::{plan_inject, pod::workload_name, Injector, Mode, Plan, PodOptions, Value};

/// What was decided, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Patched.
    Injected,
    /// Admitted unchanged on purpose (disabled, already injected, not a
    /// pod creation).
    Skipped(&'static str),
    /// Admitted unchanged with a warning: the pod could not be decided.
    Undecided(String),
    /// The body was not an AdmissionReview.
    Malformed(String),
}

/// Answers reviews; built once.
#[derive(Debug)]
pub struct Reviewer {
    injector: Injector,
    mode: Mode,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: String,
    kind: String,
    request: Option<Request>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    uid: String,
    kind: Option<Gvk>,
    operation: Option<String>,
    #[serde(default)]
    sub_resource: Option<String>,
    namespace: Option<String>,
    object: Option<Value>,
}

#[derive(Deserialize)]
struct Gvk {
    #[serde(default)]
    group: String,
    kind: String,
}

/// The longest body read: the API server's own request limit is 3 MiB and
/// a review carries the object once for CREATE.
pub const MAX_BODY: usize = 4 << 20;

const API_VERSION: &str = "admission.k8s.io/v1";

// === impl Reviewer ===

impl Reviewer {
    /// A reviewer injecting with `injector`, in `mode` unless a pod says
    /// otherwise.
    pub fn new(injector: Injector, mode: Mode) -> Self {
        Self { injector, mode }
    }

    /// The response body for the review in `body`, and what was decided.
    pub fn review(&self, body: &[u8]) -> (Vec<u8>, Decision) {
        let review: Review = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return malformed("", format!("the body is not an AdmissionReview: {e}")),
        };
        let Some(request) = review.request else {
            return malformed("", "the AdmissionReview has no request".into());
        };
        let uid = request.uid.as_str();
        if review.kind != "AdmissionReview" || review.api_version != API_VERSION {
            return malformed(
                uid,
                format!(
                    "expected an {API_VERSION} AdmissionReview, got {} {}",
                    review.api_version, review.kind
                ),
            );
        }
        let Some(kind) = &request.kind else {
            return malformed(uid, "the request has no kind".into());
        };
        let is_pod = kind.group.is_empty() && kind.kind == "Pod";
        if !is_pod
            || request.operation.as_deref() != Some("CREATE")
            || request
                .sub_resource
                .as_deref()
                .is_some_and(|s| !s.is_empty())
        {
            return (
                allow(uid, None, &[]),
                Decision::Skipped("not a pod creation"),
            );
        }
        let Some(pod) = request.object.as_ref().filter(|o| o.as_object().is_some()) else {
            return malformed(uid, "the request has no pod object".into());
        };
        let workload = workload_name(pod);
        let opts = PodOptions {
            mode: self.mode,
            app_port: None,
            workload_name: workload.as_deref(),
        };
        let namespace = request.namespace.as_deref().unwrap_or("");
        let pod_name = pod
            .at("metadata.name")
            .or_else(|| pod.at("metadata.generateName"))
            .and_then(Value::as_str)
            .unwrap_or("");
        match plan_inject(&self.injector, pod, &opts) {
            Ok(Plan::Inject { ops, summary }) => {
                tracing::info!(
                    namespace,
                    pod = pod_name,
                    service = %summary.service_name,
                    app_port = summary.app_port,
                    native = summary.mode == Mode::Native,
                    "sidecar injected"
                );
                let patch = serde_json::to_vec(&ops).unwrap_or_default();
                (allow(uid, Some(&patch), &[]), Decision::Injected)
            }
            Ok(Plan::AlreadyInjected) => (
                allow(uid, None, &[]),
                Decision::Skipped("already has the sidecar"),
            ),
            Ok(Plan::Disabled) => (allow(uid, None, &[]), Decision::Skipped("disabled")),
            Err(e) => {
                tracing::warn!(namespace, pod = pod_name, error = %e, "sidecar not injected");
                let warning = format!("sidetrace: sidecar not injected: {e}");
                (
                    allow(uid, None, &[&warning]),
                    Decision::Undecided(e.to_string()),
                )
            }
        }
    }
}

fn malformed(uid: &str, why: String) -> (Vec<u8>, Decision) {
    tracing::warn!(uid, error = %why, "malformed admission review admitted unchanged");
    let warning = format!("sidetrace: sidecar not injected: {why}");
    (allow(uid, None, &[&warning]), Decision::Malformed(why))
}

fn allow(uid: &str, patch: Option<&[u8]>, warnings: &[&str]) -> Vec<u8> {
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Some(patch) = patch {
        response["patchType"] = "JSONPatch".into();
        response["patch"] = base64::engine::general_purpose::STANDARD
            .encode(patch)
            .into();
    }
    if !warnings.is_empty() {
        // The API server truncates long warnings; keep each to one line.
        let w: Vec<String> = warnings
            .iter()
            .map(|w| w.chars().take(1000).collect())
            .collect();
        response["warnings"] = w.into();
    }
    let review = json!({
        "apiVersion": API_VERSION,
        "kind": "AdmissionReview",
        "response": response,
    });
    serde_json::to_vec(&review).unwrap_or_default()
}

#[cfg(test)]
mod tests;
