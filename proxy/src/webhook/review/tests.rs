use super::*;
use crate::inject::{patch::apply, ChartValues};

fn reviewer() -> Reviewer {
    let injector = Injector::new(&ChartValues::defaults().unwrap(), "sidetrace").unwrap();
    Reviewer::new(injector, Mode::Native)
}

/// A review as the API server sends it for `kubectl create` of a
/// Deployment's pod (trimmed of fields the webhook does not read).
fn review_of(pod: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    }))
    .unwrap()
}

fn pod() -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "checkout-7d9f8b6c5d-",
            "namespace": "shop",
            "labels": {"pod-template-hash": "7d9f8b6c5d"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "checkout-7d9f8b6c5d", "uid": "u", "controller": true}]
        },
        "spec": {"containers": [{"name": "app", "image": "a", "ports": [{"containerPort": 8080}]}]}
    })
}

fn response(body: &[u8]) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["allowed"], true, "never a refusal");
    v["response"].clone()
}

#[test]
fn a_pod_creation_gets_a_patch_that_injects_it() {
    let (body, decision) = reviewer().review(&review_of(pod()));
    assert_eq!(decision, Decision::Injected);
    let r = response(&body);
    assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(r["patchType"], "JSONPatch");
    assert!(r.get("warnings").is_none());
    let patch = base64::engine::general_purpose::STANDARD
        .decode(r["patch"].as_str().unwrap())
        .unwrap();
    let ops: Vec<serde_json::Value> = serde_json::from_slice(&patch).unwrap();
    assert!(ops.iter().all(|op| op["op"] == "add"));
    let mut patched: Value = serde_json::from_value(pod()).unwrap();
    let ops: Vec<crate::inject::patch::Op> = ops
        .into_iter()
        .map(|op| crate::inject::patch::Op::Add {
            path: op["path"].as_str().unwrap().to_string(),
            value: serde_json::from_value(op["value"].clone()).unwrap(),
        })
        .collect();
    apply(&mut patched, &ops).unwrap();
    let sidecar = &patched
        .at("spec.initContainers")
        .unwrap()
        .as_array()
        .unwrap()[0];
    let env = sidecar.get("env").unwrap().as_array().unwrap();
    let service = env
        .iter()
        .find(|e| e.get("name").unwrap().as_str() == Some("OTEL_SERVICE_NAME"))
        .unwrap();
    assert_eq!(
        service.get("value").unwrap().as_str(),
        Some("checkout"),
        "the Deployment's name, from the ReplicaSet less its hash"
    );
    // A second review of the patched pod: already injected.
    let again = serde_json::to_value(&patched).unwrap();
    let (body, decision) = reviewer().review(&review_of(again));
    assert_eq!(decision, Decision::Skipped("already has the sidecar"));
    assert!(response(&body).get("patch").is_none());
}

#[test]
fn disabled_pods_and_other_requests_pass_unchanged() {
    let mut disabled = pod();
    disabled["metadata"]["annotations"] = json!({"sidetrace.io/inject": "disabled"});
    let (body, decision) = reviewer().review(&review_of(disabled));
    assert_eq!(decision, Decision::Skipped("disabled"));
    let r = response(&body);
    assert!(r.get("patch").is_none() && r.get("warnings").is_none());

    let mut update: serde_json::Value = serde_json::from_slice(&review_of(pod())).unwrap();
    update["request"]["operation"] = "UPDATE".into();
    let (body, decision) = reviewer().review(&serde_json::to_vec(&update).unwrap());
    assert_eq!(decision, Decision::Skipped("not a pod creation"));
    assert!(response(&body).get("patch").is_none());
}

#[test]
fn an_undecidable_pod_is_admitted_with_a_warning() {
    let mut two = pod();
    two["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "metrics", "image": "m", "ports": [{"containerPort": 9100}]}));
    let (body, decision) = reviewer().review(&review_of(two));
    assert!(matches!(decision, Decision::Undecided(_)), "{decision:?}");
    let r = response(&body);
    assert!(r.get("patch").is_none());
    let w = r["warnings"][0].as_str().unwrap();
    assert!(w.contains("2 candidate app ports"), "{w}");
    assert!(w.contains("sidetrace.io/app-port"), "{w}");
}

#[test]
fn garbage_is_allowed_with_a_warning() {
    for body in [
        &b"not json"[..],
        b"{}",
        b"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":\"u\"}}",
        b"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1beta1\",\"request\":{\"uid\":\"u\"}}",
        b"\xff\xfe",
        b"",
    ] {
        let (out, decision) = reviewer().review(body);
        assert!(matches!(decision, Decision::Malformed(_)), "{decision:?}");
        let r = response(&out);
        assert!(r["warnings"][0].as_str().unwrap().starts_with("sidetrace: sidecar not injected"));
        assert!(r.get("patch").is_none());
    }
    // A pod review with no object keeps its uid.
    let mut v: serde_json::Value = serde_json::from_slice(&review_of(pod())).unwrap();
    v["request"]["object"] = serde_json::Value::Null;
    let (out, _) = reviewer().review(&serde_json::to_vec(&v).unwrap());
    assert_eq!(
        response(&out)["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
}

#[test]
fn workload_names() {
    let v = |j: serde_json::Value| -> Value { serde_json::from_value(j).unwrap() };
    assert_eq!(workload_name(&v(pod())).as_deref(), Some("checkout"));
    let sts = json!({"metadata": {"name": "web-0", "ownerReferences": [{"name": "web", "controller": true}]}});
    assert_eq!(workload_name(&v(sts)).as_deref(), Some("web"));
    let bare = json!({"metadata": {"generateName": "job-"}});
    assert_eq!(workload_name(&v(bare)).as_deref(), Some("job"));
    assert_eq!(workload_name(&v(json!({"metadata": {}}))), None);
}
