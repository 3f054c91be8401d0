"""`sidetrace webhook` over real TLS with AdmissionReview bodies shaped as the API server sends
them: the returned JSON Patch, applied with an independent RFC 6902 implementation (jsonpatch),
gives a pod that validates and equals what `sidetrace inject` gives for the same pod; pods
annotated off or already injected get no patch; garbage is admitted with a warning; and the
client-observed latency of 1,000 reviews is reported (p50, p99, max) in the run's summary.

The certificate comes from openssl (a CA and a leaf for 127.0.0.1). Needs the binary
(SIDETRACE_BIN); skipped without it except under CI=true.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import subprocess
import time
import uuid

import jsonpatch
import pytest

from conftest import REPORTS, RELEASE, run, tool
from inject_helpers import FIXTURES, STATUS, documents, inject, ok, pod_template, validate
from live import PATIENCE, free_port, stop
from test_live import sidetrace_bin

REVIEWS = 1000


def openssl_pki(tmp) -> tuple[str, str, str]:
    """A CA and a server certificate for 127.0.0.1 and localhost: (ca, cert, key) paths."""
    o = tool("openssl")
    ca_key, ca, key, csr, cert, ext = (tmp / n for n in ("ca.key", "ca.crt", "tls.key", "tls.csr", "tls.crt", "ext"))
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    for cmd in (
        [o, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=sidetrace test CA"],
        [o, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(csr), "-subj", "/CN=sidetrace-webhook"],
        [o, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
         "-out", str(cert), "-days", "2", "-extfile", str(ext)],
    ):
        p = run(cmd)
        assert p.returncode == 0, p.stderr
    return str(ca), str(cert), str(key)


class Webhook:
    def __init__(self, port: int, ca: str):
        self.port = port
        self.ctx = ssl.create_default_context(cafile=ca)
        self.conn = self.connect()

    def connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=10)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        self.conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        res = self.conn.getresponse()
        return res.status, res.read()

    def review(self, body: bytes) -> dict:
        status, data = self.request("POST", "/mutate", body)
        assert status == 200, data
        out = json.loads(data)
        assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
        assert out["response"]["allowed"] is True, "the webhook never refuses a pod"
        return out["response"]


@pytest.fixture(scope="module")
def webhook(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("webhook")
    ca, cert, key = openssl_pki(tmp)
    port = free_port()
    log = (tmp / "webhook.log").open("w")
    proc = subprocess.Popen([str(sidetrace_bin()), "--log-format", "json", "webhook", f"--listen=127.0.0.1:{port}",
                             f"--cert={cert}", f"--key={key}", f"--release={RELEASE}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + PATIENCE
        while True:
            assert proc.poll() is None, (tmp / "webhook.log").read_text()
            try:
                hook = Webhook(port, ca)
                if hook.request("GET", "/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "webhook not ready in time"
            time.sleep(0.1)
        yield hook
    finally:
        stop(proc)
        log.close()


def admission_review(pod: dict, namespace: str = "shop", operation: str = "CREATE") -> bytes:
    """An AdmissionReview as kube-apiserver sends it for a pod created by a controller."""
    return json.dumps({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": str(uuid.uuid4()), "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1",
                        "fieldManager": "kube-controller-manager"},
        },
    }).encode()


def pod_of(workload: dict, suffix: str = "7d9f8b6c5d") -> dict:
    """The Pod a controller creates from a workload's template, as the API server sees it."""
    template = json.loads(json.dumps(pod_template(workload)))
    meta = template.get("metadata", {})
    owner = workload["metadata"]["name"]
    labels = dict(meta.get("labels", {}))
    if workload["kind"] == "Deployment":
        labels["pod-template-hash"] = suffix
        owner = f"{owner}-{suffix}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**meta, "generateName": f"{owner}-", "namespace": workload["metadata"].get("namespace", "shop"),
                     "labels": labels,
                     "ownerReferences": [{"apiVersion": workload["apiVersion"],
                                          "kind": "ReplicaSet" if workload["kind"] == "Deployment" else workload["kind"],
                                          "name": owner,
                                          "uid": str(uuid.uuid4()), "controller": True, "blockOwnerDeletion": True}]},
        "spec": template["spec"],
    }


def workloads() -> list[dict]:
    out = []
    for name in ("deployment.yaml", "statefulset.yaml", "cronjob.yaml", "list.json"):
        for d in documents((FIXTURES / name).read_text()):
            items = d["items"] if d["kind"] == "List" else [d]
            out += [i for i in items if i["kind"] in ("Deployment", "StatefulSet", "CronJob", "DaemonSet", "Job")]
    return out


def patched(pod: dict, response: dict) -> dict:
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.JsonPatch(ops).apply(pod)


@pytest.mark.parametrize("index", range(len(workloads())))
def test_the_patch_gives_the_pod_inject_gives(webhook, index):
    workload = workloads()[index]
    pod = pod_of(workload)
    response = webhook.review(admission_review(pod))
    assert "warnings" not in response, response.get("warnings")
    result = patched(pod, response)
    assert validate([result]) == []
    (from_cli,) = documents(ok(inject("--release", RELEASE, "-", stdin=json.dumps(pod))))
    assert result == from_cli, "webhook and inject differ"
    proxy = result["spec"]["initContainers"][0]
    assert proxy["name"] == "sidetrace" and proxy["restartPolicy"] == "Always"
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    labels = pod_template(workload).get("metadata", {}).get("labels", {})
    name = labels.get("app.kubernetes.io/name") or labels.get("app") or workload["metadata"]["name"]
    assert env["OTEL_SERVICE_NAME"] == name
    # the patched pod comes back (a second webhook, a reinvocation): no second sidecar
    again = webhook.review(admission_review(result))
    assert "patch" not in again and "warnings" not in again


def test_disabled_and_already_injected_pods_get_no_patch(webhook):
    pod = pod_of(workloads()[0])
    pod["metadata"].setdefault("annotations", {})["sidetrace.io/inject"] = "disabled"
    r = webhook.review(admission_review(pod))
    assert "patch" not in r and "warnings" not in r
    (with_sidecar,) = documents((FIXTURES / "pod-with-sidecar.yaml").read_text())
    r = webhook.review(admission_review(with_sidecar))
    assert "patch" not in r and "warnings" not in r
    update = webhook.review(admission_review(pod_of(workloads()[0]), operation="UPDATE"))
    assert "patch" not in update


def test_undecidable_pods_and_garbage_are_admitted_with_a_warning(webhook):
    pod = pod_of(workloads()[0])
    pod["spec"]["containers"][1]["ports"] = [{"name": "metrics", "containerPort": 2020}]
    r = webhook.review(admission_review(pod))
    assert "patch" not in r
    assert "2 candidate app ports" in r["warnings"][0] and "sidetrace.io/app-port" in r["warnings"][0]
    for body in (b"", b"garbage", b"{}", b'{"kind":"AdmissionReview"}', b"[1,2,3]", b"\xff" * 100,
                 json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                             "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                                         "operation": "CREATE", "object": "not a pod"}}).encode()):
        r = webhook.review(body)
        assert "patch" not in r
        assert r["warnings"][0].startswith("sidetrace: sidecar not injected"), r
    # the connection and the server are still fine
    assert webhook.request("GET", "/live")[0] == 200
    assert webhook.request("GET", "/mutate")[0] == 405


def test_latency_of_a_thousand_reviews(webhook):
    pod = pod_of(workloads()[0])
    bodies = [admission_review(pod) for _ in range(REVIEWS)]
    took = []
    for body in bodies:
        start = time.perf_counter()
        r = webhook.review(body)
        took.append(time.perf_counter() - start)
        assert "patch" in r
    took.sort()
    p50, p99, worst = (took[len(took) // 2], took[int(len(took) * 0.99) - 1], took[-1])
    status, metrics = webhook.request("GET", "/metrics")
    assert status == 200
    injected = [line for line in metrics.decode().splitlines()
                if line.startswith('sidetrace_webhook_reviews_total{result="injected"}')]
    assert injected and float(injected[0].split()[-1]) >= REVIEWS
    REPORTS.append(f"webhook: {REVIEWS} reviews over one TLS connection (client-observed, Python client): "
                   f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, max {worst * 1e3:.2f} ms")
