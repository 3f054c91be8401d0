//! Taking the sidecar out of a pod template again (`sidetrace inject
//! --uninject`), as JSON Patch operations.

use super::{
    patch::{escape, Op},
    pod::{bad, find, list, name_of, optional_object, InjectError, Status, STATUS},
    sidecar::Injector,
    value::Value,
};

/// The operations that take the sidecar out of `pod`; `None` when there is
/// none. With a `sidetrace.io/status` annotation exactly what injection
/// added goes; without one (the chart's template put the proxy there) the
/// proxy container and its volumes go, and annotations stay.
pub fn plan_uninject(injector: &Injector, pod: &Value) -> Result<Option<Vec<Op>>, InjectError> {
    let r = injector.resolved();
    let meta = optional_object(pod.get("metadata"), "metadata")?;
    let annotations = match meta {
        Some(m) => optional_object(m.get("annotations"), "metadata.annotations")?,
        None => None,
    };
    let status = match annotations.and_then(|a| a.get(STATUS)) {
        Some(Value::String(s)) => Some(serde_json::from_str::<Status>(s).map_err(|e| {
            bad(
                format!("metadata.annotations.{STATUS}"),
                format!("not written by sidetrace inject: {e}"),
            )
        })?),
        Some(other) => {
            return Err(bad(
                format!("metadata.annotations.{STATUS}"),
                format!("expected a string, got {}", other.type_name()),
            ))
        }
        None => None,
    };
    let Some(spec) = pod.get("spec") else {
        return Ok(None);
    };
    let containers = list(spec, "containers", "spec.containers")?;
    let init = list(spec, "initContainers", "spec.initContainers")?;
    let name = status
        .as_ref()
        .map_or(r.container_name.as_str(), |s| s.container.as_str());
    let in_init = find(init, name);
    let in_containers = find(containers, name);
    if status.is_none() && in_init.is_none() && in_containers.is_none() {
        return Ok(None);
    }
    let created = |what: &str| {
        status
            .as_ref()
            .is_some_and(|s| s.created.iter().any(|c| c == what))
    };
    let mut ops = Vec::new();
    let remove_items = |ops: &mut Vec<Op>, key: &str, items: &[Value], names: &[&str]| {
        let mut idx: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, v)| names.contains(&name_of(v)))
            .map(|(i, _)| i)
            .collect();
        if idx.is_empty() {
            return;
        }
        if idx.len() == items.len() && created(&format!("spec.{key}")) {
            ops.push(Op::Remove {
                path: format!("/spec/{key}"),
            });
            return;
        }
        idx.sort_unstable_by(|a, b| b.cmp(a));
        for i in idx {
            ops.push(Op::Remove {
                path: format!("/spec/{key}/{i}"),
            });
        }
    };
    remove_items(&mut ops, "initContainers", init, &[name]);
    remove_items(&mut ops, "containers", containers, &[name]);
    let volumes = list(spec, "volumes", "spec.volumes")?;
    let volume_names: Vec<&str> = match &status {
        Some(s) => s.volumes.iter().map(String::as_str).collect(),
        None => vec!["sidetrace-config", "sidetrace-tls"],
    };
    remove_items(&mut ops, "volumes", volumes, &volume_names);
    if let (Some(status), Some(annotations)) = (&status, annotations) {
        let mut keys: Vec<&str> = status
            .annotations
            .iter()
            .map(String::as_str)
            .filter(|k| annotations.contains_key(*k))
            .collect();
        keys.push(STATUS);
        let emptied = keys.len() == annotations.len() && created("metadata.annotations");
        if emptied && created("metadata") && meta.is_some_and(|m| m.len() == 1) {
            ops.push(Op::Remove {
                path: "/metadata".into(),
            });
        } else if emptied {
            ops.push(Op::Remove {
                path: "/metadata/annotations".into(),
            });
        } else {
            for k in keys {
                ops.push(Op::Remove {
                    path: format!("/metadata/annotations/{}", escape(k)),
                });
            }
        }
    }
    Ok(Some(ops))
}
