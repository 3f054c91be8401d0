//! The cost of one admission review and of `sidetrace inject` on a
//! manifest: what the webhook spends per pod (parse the review, decide,
//! render the shared sidecar definition, read it back, write the JSON Patch),
//! and the same decision through the CLI path.
//!
//! Run: `cargo bench -p sidetrace --bench inject`. The figures are in
//! `docs/kubernetes.md` ("The admission webhook").

// `criterion_group!` defines an undocumented public fn; the inputs are fixed,
// so a failure to build them is a broken bench, fine to panic on.
#![allow(missing_docs, clippy::unwrap_used)]

use std::{hint::black_box, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use sidetrace::{
    inject::{process, Action, ChartValues, Injector, Mode},
    webhook::review::Reviewer,
};

const DEPLOYMENT: &str =
    include_str!("../../charts/sidetrace/tests/fixtures/inject/deployment.yaml");

fn review() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "generateName": "checkout-6b7d9c8f4-",
                    "namespace": "shop",
                    "labels": {"app.kubernetes.io/name": "checkout", "pod-template-hash": "6b7d9c8f4"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": "checkout-6b7d9c8f4", "uid": "u", "controller": true}]
                },
                "spec": {
                    "containers": [
                        {"name": "checkout", "image": "ghcr.io/acme/checkout:1.4.2",
                         "ports": [{"name": "http", "containerPort": 8080}],
                         "env": [{"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}],
                         "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}}},
                        {"name": "log-shipper", "image": "fluent/fluent-bit:3.1"}
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}]
                }
            },
            "oldObject": null,
            "dryRun": false
        }
    }))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let injector = || Injector::new(&ChartValues::defaults().unwrap(), "shop").unwrap();
    let reviewer = Reviewer::new(injector(), Mode::Native);
    let body = review();
    c.bench_function(
        "webhook: one pod review (parse, decide, render, patch)",
        |b| b.iter(|| black_box(reviewer.review(black_box(&body)))),
    );
    let inj = injector();
    let action = Action::Inject {
        mode: Mode::Native,
        app_port: None,
    };
    c.bench_function(
        "inject: Deployment between a ConfigMap and a Service",
        |b| b.iter(|| black_box(process(black_box(DEPLOYMENT), &inj, action).unwrap())),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
