"""The chart's webhook objects, in both certificate modes: they render, validate (core objects with
kubernetes-validate, strict; cert-manager's Certificate and Issuer against cert-manager's CRD
schemas) and say what the webhook needs: failurePolicy Ignore, sideEffects None, a small timeout,
selection by the namespace label or the pod annotation, never the release's own namespace, and
the CA either injected by cert-manager or given as caBundle.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from conftest import NAMESPACE, RELEASE, objects, one, render, run, tool
from test_render import validate_core

CERT_MANAGER = "cert-manager.io/v1"


def validate_cert_manager(objs: list[dict], tmp_path: Path) -> list[dict]:
    """cert-manager objects against cert-manager's CRD schemas (validate_crds.mjs)."""
    node_modules = os.environ.get("SIDETRACE_CHART_NODE_MODULES", "")
    if not Path(node_modules, "@kubernetes-models", "cert-manager").is_dir():
        pytest.fail("SIDETRACE_CHART_NODE_MODULES does not hold @kubernetes-models/cert-manager; "
                    "run scripts/test-chart.sh")
    f = tmp_path / "cert-manager-objects.json"
    f.write_text(json.dumps(objs))
    p = run([tool("node"), str(Path(__file__).with_name("validate_crds.mjs")), node_modules, str(f)])
    results = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(objs), p.stderr
    return results

CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()
MODES = {
    "cert-manager": {"webhook": {"enabled": True, "certManager": True}},
    "cert-manager+issuer": {"webhook": {"enabled": True, "certManager": True,
                                        "issuerRef": {"name": "cluster-ca", "kind": "ClusterIssuer",
                                                      "group": "cert-manager.io"}}},
    "secret": {"webhook": {"enabled": True, "secretName": "sidetrace-webhook-tls", "caBundle": CA,
                           "excludeNamespaces": ["legacy"], "mode": "container", "timeoutSeconds": 3}},
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_webhook_objects_render_and_validate(mode, tmp_path):
    objs = [o for o in objects(render(MODES[mode])) if "webhook" in o["metadata"]["name"]]
    kinds = sorted(o["kind"] for o in objs)
    expected = ["ConfigMap", "Deployment", "MutatingWebhookConfiguration", "Service"]
    if mode == "cert-manager":
        expected += ["Certificate", "Issuer"]
    if mode == "cert-manager+issuer":
        expected += ["Certificate"]
    assert kinds == sorted(expected)
    assert validate_core([o for o in objs if o["apiVersion"] != CERT_MANAGER]) == []
    cm = [o for o in objs if o["apiVersion"] == CERT_MANAGER]
    if cm:
        assert [r for r in validate_cert_manager(cm, tmp_path) if not r["ok"]] == []

    mwc = one(objs, "MutatingWebhookConfiguration")
    assert "namespace" not in mwc["metadata"], "cluster-scoped"
    hooks = {h["name"]: h for h in mwc["webhooks"]}
    assert set(hooks) == {"namespace.inject.sidetrace.io", "pod.inject.sidetrace.io"}
    svc = one(objs, "Service")
    deploy = one(objs, "Deployment")
    for h in hooks.values():
        assert h["failurePolicy"] == "Ignore" and h["sideEffects"] == "None"
        assert h["admissionReviewVersions"] == ["v1"]
        assert 1 <= h["timeoutSeconds"] <= 5
        assert h["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                               "resources": ["pods"], "scope": "Namespaced"}]
        ref = h["clientConfig"]["service"]
        assert ref == {"name": svc["metadata"]["name"], "namespace": NAMESPACE, "path": "/mutate", "port": 443}
        names = [e for e in h["namespaceSelector"]["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name"]
        assert names[0]["operator"] == "NotIn"
        assert {"kube-system", "kube-node-lease", NAMESPACE} <= set(names[0]["values"])
        if mode == "secret":
            assert h["clientConfig"]["caBundle"] == CA and "legacy" in names[0]["values"]
        else:
            assert "caBundle" not in h["clientConfig"]
    label = lambda h: [e for e in h["namespaceSelector"]["matchExpressions"] if e["key"] == "sidetrace.io/inject"][0]  # noqa: E731
    assert label(hooks["namespace.inject.sidetrace.io"]) == {"key": "sidetrace.io/inject", "operator": "In",
                                                             "values": ["enabled"]}
    assert label(hooks["pod.inject.sidetrace.io"])["operator"] == "NotIn"
    assert "== 'enabled'" in hooks["pod.inject.sidetrace.io"]["matchConditions"][0]["expression"]

    pod = deploy["spec"]["template"]
    assert pod["metadata"]["annotations"]["sidetrace.io/inject"] == "disabled", "never inject the injector"
    assert pod["spec"]["automountServiceAccountToken"] is False
    (c,) = pod["spec"]["containers"]
    assert c["args"][0] == "webhook" and f"--release={RELEASE}" in c["args"]
    assert f"--mode={'container' if mode == 'secret' else 'native'}" in c["args"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "https", "scheme": "HTTPS"}
    assert svc["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    secret = {v["name"]: v for v in pod["spec"]["volumes"]}["tls"]["secret"]["secretName"]
    values = json.loads(one(objs, "ConfigMap")["data"]["values.json"])
    assert values["sidetrace"]["ports"] == {"inbound": 15080, "admin": 15090, "outbound": 0}
    if mode == "secret":
        assert secret == "sidetrace-webhook-tls"
    else:
        cert = one(objs, "Certificate")
        assert cert["spec"]["secretName"] == secret
        assert f"{svc['metadata']['name']}.{NAMESPACE}.svc" in cert["spec"]["dnsNames"]
        assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{cert['metadata']['name']}"
        issuer = cert["spec"]["issuerRef"]
        if mode == "cert-manager":
            assert issuer == {"name": one(objs, "Issuer")["metadata"]["name"], "kind": "Issuer"}
            assert one(objs, "Issuer")["spec"] == {"selfSigned": {}}
        else:
            assert issuer["kind"] == "ClusterIssuer"


def test_the_cert_manager_validator_is_no_rubber_stamp(tmp_path):
    cert = one(objects(render(MODES["cert-manager"])), "Certificate")
    cert["spec"]["privateKey"]["algorithm"] = "DSA"
    del cert["spec"]["secretName"]
    assert [r["ok"] for r in validate_cert_manager([cert], tmp_path)] == [False]


def test_pod_opt_in_can_be_turned_off():
    objs = objects(render({"webhook": {"enabled": True, "certManager": True, "podOptIn": False}}))
    mwc = one(objs, "MutatingWebhookConfiguration")
    assert [h["name"] for h in mwc["webhooks"]] == ["namespace.inject.sidetrace.io"]


def test_without_a_certificate_the_chart_says_what_to_set():
    with pytest.raises(Exception) as e:
        render({"webhook": {"enabled": True}})
    assert "webhook.certManager=true" in str(e.value) and "webhook.caBundle" in str(e.value)


@pytest.mark.parametrize("bad, path", [
    ({"mode": "sidecar"}, "/webhook/mode"),
    ({"timeoutSeconds": 60}, "/webhook/timeoutSeconds"),
    ({"caBundle": "not base64!"}, "/webhook/caBundle"),
    ({"failurePolicy": "Fail"}, "/webhook"),
])
def test_schema_rejects_bad_webhook_values(bad, path):
    with pytest.raises(Exception) as e:
        render({"webhook": {"enabled": True, "certManager": True, **bad}})
    assert path in str(e.value)


def test_the_webhook_reads_the_values_the_chart_renders(tmp_path):
    """The values ConfigMap is what `sidetrace webhook --values` loads: the binary accepts it, and
    `sidetrace inject` with it gives the container the chart's own template gives."""
    from inject_helpers import documents, inject, ok

    objs = objects(render({"webhook": {"enabled": True, "certManager": True},
                           "sidetrace": {"otel": {"endpoint": "http://collector:4317", "protocol": "grpc"}}}))
    values = tmp_path / "values.json"
    values.write_text(one([o for o in objs if o["kind"] == "ConfigMap" and "webhook" in o["metadata"]["name"]],
                          "ConfigMap")["data"]["values.json"])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "web", "image": "w", "ports": [{"containerPort": 8080}]}]}}
    (out,) = documents(ok(inject("--release", RELEASE, "-f", str(values), "-", stdin=json.dumps(pod))))
    proxy = out["spec"]["initContainers"][0]
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4317"
    assert out["spec"]["volumes"][0]["configMap"]["name"] == f"{RELEASE}-sidetrace-config"
