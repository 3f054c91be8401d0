//! Manifests in, manifests out: multi-document YAML or JSON, each document
//! that holds a pod template (Pod, Deployment, StatefulSet, DaemonSet,
//! ReplicaSet, ReplicationController, Job, CronJob, and the items of a
//! `List`) injected or uninjected, every other document written back byte
//! for byte.
//!
//! All documents are decided before anything is written: one document that
//! cannot be decided fails the whole run with every such document named,
//! so a pipeline into `kubectl apply` never applies half a change.

use std::fmt;

use super::{
    patch::{apply, PatchError},
    pod::{plan_inject, InjectError, Plan, PodOptions},
    sidecar::{Injector, Mode},
    uninject::plan_uninject,
    value::Value,
};

/// What to do to each pod template.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    /// Add the sidecar.
    Inject {
        /// Native sidecar or regular container, unless a pod says otherwise.
        mode: Mode,
        /// The app's port for every pod (`--app-port`).
        app_port: Option<u16>,
    },
    /// Take it out.
    Uninject,
}

/// The result of a run.
#[derive(Debug, Default)]
pub struct Report {
    /// The manifests to print.
    pub output: String,
    /// One line per pod template: what happened to it.
    pub notes: Vec<String>,
    /// Pod templates changed.
    pub changed: usize,
    /// Pod templates left as they were (already injected, disabled, or
    /// nothing to uninject).
    pub unchanged: usize,
    /// Documents that hold no pod template.
    pub others: usize,
}

/// Documents that could not be handled; nothing was written.
#[derive(Debug)]
pub struct ManifestErrors(pub Vec<String>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} document{} could not be handled; nothing was written:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

/// One YAML document of the input: its separator line and its text.
struct Chunk<'a> {
    separator: &'a str,
    body: &'a str,
}

/// What happened to one object.
enum Outcome {
    Changed(String),
    Unchanged(String),
    NotAPod,
}

/// Injects or uninjects every pod template of `input`.
pub fn process(input: &str, injector: &Injector, action: Action) -> Result<Report, ManifestErrors> {
    let trimmed = input.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        if let Some(report) = process_json(input, injector, action)? {
            return Ok(report);
        }
    }
    process_yaml(input, injector, action)
}

fn process_yaml(
    input: &str,
    injector: &Injector,
    action: Action,
) -> Result<Report, ManifestErrors> {
    let mut report = Report::default();
    let mut errors = Vec::new();
    let mut pieces: Vec<String> = Vec::new();
    let mut doc = 0;
    let mut line = 1;
    for chunk in split_yaml(input) {
        let start_line = line + usize::from(!chunk.separator.is_empty());
        line += chunk.separator.matches('\n').count() + chunk.body.matches('\n').count();
        let verbatim = || format!("{}{}", chunk.separator, chunk.body);
        if is_blank(chunk.body) {
            pieces.push(verbatim());
            continue;
        }
        doc += 1;
        let mut value: Value = match serde_saphyr::from_str(chunk.body) {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!(
                    "document {doc} (from line {start_line}): not valid YAML: {}",
                    one_line(&e.to_string())
                ));
                pieces.push(verbatim());
                continue;
            }
        };
        match handle(&mut value, injector, action, doc, &mut report) {
            Ok(true) => match serde_saphyr::to_string(&value) {
                Ok(text) => {
                    let sep = if chunk.separator.is_empty() {
                        ""
                    } else {
                        "---\n"
                    };
                    let end = if text.ends_with('\n') { "" } else { "\n" };
                    pieces.push(format!("{sep}{text}{end}"));
                }
                Err(e) => errors.push(format!("document {doc}: cannot write YAML: {e}")),
            },
            Ok(false) => pieces.push(verbatim()),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(ManifestErrors(errors));
    }
    report.output = pieces.concat();
    Ok(report)
}

/// JSON objects one after the other (what `kubectl get -o json` and most
/// tools write); `None` when the input is not JSON after all (a YAML flow
/// mapping), so it is read as YAML.
fn process_json(
    input: &str,
    injector: &Injector,
    action: Action,
) -> Result<Option<Report>, ManifestErrors> {
    let mut values = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(input).into_iter::<Value>();
    let mut start = 0;
    loop {
        match stream.next() {
            None => break,
            Some(Ok(v)) => {
                let end = stream.byte_offset();
                values.push((v, &input[start..end]));
                start = end;
            }
            Some(Err(_)) if values.is_empty() => return Ok(None),
            Some(Err(e)) => {
                return Err(ManifestErrors(vec![format!(
                    "document {}: not valid JSON: {e}",
                    values.len() + 1
                )]))
            }
        }
    }
    let tail = &input[start..];
    let mut report = Report::default();
    let mut errors = Vec::new();
    let mut out = String::with_capacity(input.len() + 4096);
    for (i, (mut value, text)) in values.into_iter().enumerate() {
        let doc = i + 1;
        match handle(&mut value, injector, action, doc, &mut report) {
            Ok(true) => match serde_json::to_string_pretty(&value) {
                Ok(json) => {
                    // Keep what separated it from the previous document.
                    let lead = &text[..text.len() - text.trim_start().len()];
                    out.push_str(lead);
                    out.push_str(&json);
                }
                Err(e) => errors.push(format!("document {doc}: cannot write JSON: {e}")),
            },
            Ok(false) => out.push_str(text),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(ManifestErrors(errors));
    }
    out.push_str(tail);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    report.output = out;
    Ok(Some(report))
}

/// Handles one document; `Ok(true)` when it changed.
fn handle(
    value: &mut Value,
    injector: &Injector,
    action: Action,
    doc: usize,
    report: &mut Report,
) -> Result<bool, Vec<String>> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let items = value.get_mut("items").and_then(|i| match i {
        Value::Array(a) => Some(a),
        _ => None,
    });
    if let (true, Some(items)) = (kind.ends_with("List"), items) {
        let mut changed = false;
        let mut errors = Vec::new();
        let mut any_pod = false;
        for (i, item) in items.iter_mut().enumerate() {
            let what = format!("document {doc} ({kind}), items[{i}] ({})", describe(item));
            match handle_object(item, injector, action) {
                Ok(Outcome::Changed(note)) => {
                    changed = true;
                    any_pod = true;
                    report.changed += 1;
                    report.notes.push(format!("{what}: {note}"));
                }
                Ok(Outcome::Unchanged(note)) => {
                    any_pod = true;
                    report.unchanged += 1;
                    report.notes.push(format!("{what}: {note}"));
                }
                Ok(Outcome::NotAPod) => {}
                Err(e) => errors.push(format!("{what}: {e}")),
            }
        }
        if !any_pod && errors.is_empty() {
            report.others += 1;
        }
        return if errors.is_empty() {
            Ok(changed)
        } else {
            Err(errors)
        };
    }
    let what = format!("document {doc} ({})", describe(value));
    match handle_object(value, injector, action) {
        Ok(Outcome::Changed(note)) => {
            report.changed += 1;
            report.notes.push(format!("{what}: {note}"));
            Ok(true)
        }
        Ok(Outcome::Unchanged(note)) => {
            report.unchanged += 1;
            report.notes.push(format!("{what}: {note}"));
            Ok(false)
        }
        Ok(Outcome::NotAPod) => {
            report.others += 1;
            Ok(false)
        }
        Err(e) => Err(vec![format!("{what}: {e}")]),
    }
}

/// A failure on one object: the field from the object's root.
#[derive(Debug)]
enum ObjectError {
    Inject(String, InjectError),
    Patch(PatchError),
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectError::Inject(prefix, e) => write!(f, "{prefix}{}: {}", e.field, e.message),
            ObjectError::Patch(e) => write!(f, "{e}"),
        }
    }
}

fn handle_object(
    obj: &mut Value,
    injector: &Injector,
    action: Action,
) -> Result<Outcome, ObjectError> {
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let path: &[&str] = match kind.as_str() {
        "Pod" => &[],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return Ok(Outcome::NotAPod),
    };
    let prefix: String = path.iter().map(|p| format!("{p}.")).collect();
    let workload_name = if path.is_empty() {
        // A Pod: named as the webhook names it, after its controller.
        super::pod::workload_name(obj)
    } else {
        obj.at("metadata.name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    };
    let mut template = &mut *obj;
    for (i, key) in path.iter().enumerate() {
        template = template.get_mut(key).ok_or_else(|| {
            ObjectError::Inject(
                String::new(),
                InjectError {
                    field: path[..=i].join("."),
                    message: format!("missing: a {kind} needs a pod template"),
                },
            )
        })?;
    }
    let err = |e| ObjectError::Inject(prefix.clone(), e);
    match action {
        Action::Inject { mode, app_port } => {
            let opts = PodOptions {
                mode,
                app_port,
                workload_name: workload_name.as_deref(),
            };
            match plan_inject(injector, template, &opts).map_err(err)? {
                Plan::Inject { ops, summary } => {
                    apply(template, &ops).map_err(ObjectError::Patch)?;
                    let how = match summary.mode {
                        Mode::Native => "native sidecar",
                        Mode::Container => "container",
                    };
                    let mut note = format!(
                        "injected ({how}, app port {}, service {:?})",
                        summary.app_port, summary.service_name
                    );
                    if summary.mode == Mode::Container && matches!(kind.as_str(), "Job" | "CronJob")
                    {
                        note.push_str(
                            "; warning: a regular container keeps a Job's pod running after \
                             the job's container exits: use --mode native",
                        );
                    }
                    Ok(Outcome::Changed(note))
                }
                Plan::AlreadyInjected => Ok(Outcome::Unchanged(
                    "already has the sidecar, unchanged".into(),
                )),
                Plan::Disabled => Ok(Outcome::Unchanged(
                    "annotated sidetrace.io/inject: disabled, unchanged".into(),
                )),
            }
        }
        Action::Uninject => match plan_uninject(injector, template).map_err(err)? {
            Some(ops) => {
                apply(template, &ops).map_err(ObjectError::Patch)?;
                Ok(Outcome::Changed("sidecar removed".into()))
            }
            None => Ok(Outcome::Unchanged("no sidecar, unchanged".into())),
        },
    }
}

/// `Deployment "ns/name"`, for messages.
fn describe(obj: &Value) -> String {
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("object without kind");
    let name = obj.at("metadata.name").and_then(Value::as_str);
    let ns = obj.at("metadata.namespace").and_then(Value::as_str);
    match (ns, name) {
        (Some(ns), Some(name)) => format!("{kind} \"{ns}/{name}\""),
        (None, Some(name)) => format!("{kind} \"{name}\""),
        _ => kind.to_string(),
    }
}

/// Splits YAML at its `---` document markers (at the start of a line, as
/// YAML requires; inside a block scalar the line would be indented).
fn split_yaml(input: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut separator = "";
    let mut body_start = 0;
    let mut pos = 0;
    while pos < input.len() {
        let end = input[pos..].find('\n').map_or(input.len(), |i| pos + i + 1);
        let line = &input[pos..end];
        let is_marker = line.starts_with("---")
            && matches!(
                line.as_bytes().get(3),
                None | Some(b'\n' | b'\r' | b' ' | b'\t')
            );
        if is_marker {
            chunks.push(Chunk {
                separator,
                body: &input[body_start..pos],
            });
            // `--- {inline: doc}` keeps its content in the body.
            let content = &line[3..];
            if content.trim().is_empty() {
                separator = line;
                body_start = end;
            } else {
                separator = &line[..3];
                body_start = pos + 3;
            }
        }
        pos = end;
    }
    chunks.push(Chunk {
        separator,
        body: &input[body_start..],
    });
    chunks
}

fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "..."
    })
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}
