"""`sidetrace inject` on real-world manifests, and the proof that it and the chart's library
templates produce the same sidecar (one definition: templates/_sidecar.tpl, rendered by Helm here
and embedded in the binary).

Fixtures (fixtures/inject): a Deployment with two containers between a ConfigMap and a Service, a
CronJob that names its port by annotation, a StatefulSet with an init container and a UDP port, a
`kubectl get -o json` List (DaemonSet, Job, Service) and a Pod that already carries the sidecar.
Every output validates with kubernetes-validate (strict), a second run changes nothing, and
`--uninject` gives the input back.

Needs the binary (SIDETRACE_BIN, default target/debug/sidetrace); skipped without it except
under CI=true, where a missing binary fails.
"""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import RELEASE, by_kind, objects, render
from inject_helpers import FIXTURES, STATUS, documents, flatten, inject, ok, pod_template, validate, without_status

CASES = ["deployment.yaml", "cronjob.yaml", "statefulset.yaml", "list.json", "pod-with-sidecar.yaml"]


def sidecars(pod: dict) -> list[tuple[str, dict]]:
    spec = pod["spec"]
    return [(where, c) for where in ("initContainers", "containers") for c in spec.get(where, [])
            if c["name"] == "sidetrace"]


@pytest.mark.parametrize("case", CASES)
def test_inject_validates_is_idempotent_and_uninject_restores(case):
    path = FIXTURES / case
    source = path.read_text()
    out = ok(inject("--release", RELEASE, str(path)))
    docs_in, docs_out = documents(source), documents(out)
    assert len(docs_out) == len(docs_in)
    assert validate(docs_out) == []

    workloads = [o for o in flatten(docs_out) if o["kind"] in
                 ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod")]
    assert workloads, "the fixture holds pod templates"
    for obj in workloads:
        pod = pod_template(obj)
        (where, proxy), = sidecars(pod)
        ann = pod["metadata"]["annotations"]
        if case == "pod-with-sidecar.yaml":
            assert STATUS not in ann, "left as it was"
            continue
        assert where == "initContainers" and proxy["restartPolicy"] == "Always"
        assert pod["spec"]["initContainers"][0]["name"] == "sidetrace", "first: up before other init containers"
        assert {"name": "sidetrace-config", "configMap": {"name": f"{RELEASE}-sidetrace-config"}} in pod["spec"]["volumes"]
        assert ann["prometheus.io/port"] == "15090" and ann["prometheus.io/scrape"] == "true"
        assert json.loads(ann[STATUS])["mode"] == "native"
        env = {e["name"]: e.get("value") for e in proxy["env"]}
        assert env["SIDETRACE_CONFIG"] == "/etc/sidetrace/sidetrace.yaml"
        assert [e for e in proxy["env"] if "fieldRef" in e.get("valueFrom", {})], "Downward API env"
        assert proxy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "st-admin"}
        expected_port = {"deployment.yaml": 8080, "cronjob.yaml": 9000, "statefulset.yaml": 9090}.get(case)
        if expected_port:
            assert env["SIDETRACE_UPSTREAM"] == f"http://127.0.0.1:{expected_port}"
        if case == "cronjob.yaml":
            assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio" and env["OTEL_TRACES_SAMPLER_ARG"] == "1"

    if case == "pod-with-sidecar.yaml":
        assert out == source
    if case == "deployment.yaml":
        # the documents without a pod template are written back as they were, comments and all
        assert "targetPort: st-inbound   # through the proxy" in out
        assert out.startswith(source.split("---\n")[0])

    again = ok(inject("--release", RELEASE, "-", stdin=out))
    assert again == out, "a second run changes nothing"

    back = ok(inject("--release", RELEASE, "--uninject", "-", stdin=out))
    if case == "pod-with-sidecar.yaml":
        # No status annotation (the chart's template put it there): the container and its
        # volumes go, the annotations stay.
        (pod,) = documents(back)
        assert [c["name"] for c in pod["spec"]["containers"]] == ["orders"] and pod["spec"]["volumes"] == []
        assert pod["metadata"]["annotations"] == docs_in[0]["metadata"]["annotations"]
        return
    assert documents(back) == docs_in
    assert ok(inject("--uninject", "-", stdin=back)) == back


def test_container_mode_appends_a_regular_container():
    out = ok(inject("--mode", "container", str(FIXTURES / "deployment.yaml")))
    deploy = [d for d in documents(out) if d["kind"] == "Deployment"][0]
    spec = deploy["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["checkout", "log-shipper", "sidetrace"]
    assert "restartPolicy" not in spec["containers"][2] and "initContainers" not in spec
    assert validate([deploy]) == []


def test_undecidable_documents_are_named_and_nothing_is_written():
    two_ports = (FIXTURES / "deployment.yaml").read_text().replace(
        "          args: [\"-c\", \"/fluent-bit/etc/fluent-bit.conf\"]\n",
        "          args: [\"-c\", \"/fluent-bit/etc/fluent-bit.conf\"]\n          ports: [{name: metrics, containerPort: 2020}]\n")
    no_containers = "apiVersion: v1\nkind: Pod\nmetadata: {name: empty}\nspec: {containers: []}\n"
    p = inject("-", stdin=two_ports + "---\n" + no_containers)
    assert p.returncode == 2 and p.stdout == ""
    assert ('document 2 (Deployment "shop/checkout"): spec.template.spec.containers[*].ports: 2 candidate app '
            'ports (8080 in "checkout", 2020 in "log-shipper")') in p.stderr
    assert 'document 4 (Pod "empty"): spec.containers: no containers' in p.stderr
    fixed = ok(inject("--app-port", "8080", "-", stdin=two_ports))
    assert validate(documents(fixed)) == []


# === one definition: the chart's template and inject give the same pod ===

def strip_sidecar(obj: dict) -> dict:
    """The workload as its author wrote it before including the chart's templates."""
    obj = json.loads(json.dumps(obj))
    pod = pod_template(obj)
    spec = pod["spec"]
    for key in ("containers", "initContainers"):
        if key in spec:
            spec[key] = [c for c in spec[key] if c["name"] != "sidetrace"]
            if not spec[key]:
                del spec[key]
    spec["volumes"] = [v for v in spec.get("volumes", []) if not v["name"].startswith("sidetrace-")]
    if not spec["volumes"]:
        del spec["volumes"]
    ann = pod.get("metadata", {}).get("annotations", {})
    for k in [k for k in ann if k.startswith("prometheus.io/")]:
        del ann[k]
    if "annotations" in pod.get("metadata", {}) and not ann:
        del pod["metadata"]["annotations"]
    return obj


VARIANTS = {
    "example values": {},
    "every option": {"sidetrace": {"environment": "staging", "monitoring": {"annotations": True}, "sidetrace": {
        "image": {"digest": "sha256:" + "ab" * 32},
        "ports": {"outbound": 15081},
        "tls": {"secretName": "checkout-tls", "clientCA": True},
        "otel": {"endpoint": "http://collector:4317", "tracesEndpoint": "http://collector:4318/v1/traces",
                 "protocol": "http/protobuf", "headersSecret": {"name": "otlp-auth", "key": "headers"},
                 "tracesSampler": "parentbased_traceidratio", "tracesSamplerArg": "0.2",
                 "propagators": "tracecontext,b3", "resourceAttributes": {"team": "payments", "cost.center": "42"}},
        "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"},
                     {"name": "GOMAXPROCS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}],
        "log": {"level": "debug", "format": "text"},
        "resources": None,
        "probes": {"startup": {"periodSeconds": 2, "failureThreshold": 10}},
        "containerName": "sidetrace",
        "dualStack": True,
        "waitBeforeExitSeconds": 7,
        "extraContainerFields": {"terminationMessagePolicy": "FallbackToLogsOnError",
                                 "securityContext": {"runAsUser": 1000},
                                 "args": ["run", "--log-level", "debug"]},
    }}},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_inject_gives_what_the_chart_template_gives(example_chart, tmp_path, variant):
    over = VARIANTS[variant]
    rendered = objects(render(over, chart=example_chart))
    values = yaml.safe_load((example_chart / "values.yaml").read_text())["sidetrace"]
    values = merge(values, over.get("sidetrace", {}))
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    if variant == "every option":  # the options reach the container the reader must agree on
        (deploy_proxy,) = sidecars(pod_template(by_kind(rendered, "Deployment")[0]))
        env = {e["name"]: e.get("value") for e in deploy_proxy[1]["env"]}
        assert env["SIDETRACE_INBOUND"] == "[::]:15080" and env["SIDETRACE_ADMIN"] == "[::]:15090"
        assert deploy_proxy[1]["lifecycle"] == {"preStop": {"sleep": {"seconds": 7}}}
        assert deploy_proxy[1]["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert deploy_proxy[1]["args"] == ["run", "--log-level", "debug"], "lists are replaced"
        sc = deploy_proxy[1]["securityContext"]
        assert sc["runAsUser"] == 1000 and sc["runAsNonRoot"] is True, "maps merge key by key"
    pairs = [(by_kind(rendered, "Deployment")[0], ["--mode", "container"]),
             (by_kind(rendered, "CronJob")[0], ["--mode", "native", "--app-port", "8080"])]
    for chart_obj, flags in pairs:
        before = strip_sidecar(chart_obj)
        assert not sidecars(pod_template(before))
        out = ok(inject("--release", RELEASE, "-f", str(values_file), *flags, "-", stdin=yaml.safe_dump(before)))
        (injected,) = documents(out)
        assert without_status(injected) == chart_obj, f"{chart_obj['kind']}: inject and the chart differ"
        assert validate([injected]) == []


def merge(base: dict, over: dict) -> dict:
    """Maps merged key by key; a None stays, for the values file to remove the chart's default
    (`resources: null`), as it does for Helm."""
    out = json.loads(json.dumps(base))
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out
