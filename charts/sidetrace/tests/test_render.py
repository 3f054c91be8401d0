"""Render the chart with the real Helm engine and validate every object.

Cases: default values, each environment (alone and with fronting), both fronting modes, and the
example user chart that injects the proxy. Core objects are validated by kubernetes-validate
(strict: unknown fields rejected) against its newest Kubernetes version; PodMonitor,
ServiceMonitor and PrometheusRule against the prometheus-operator CRD schemas (npm package
@kubernetes-models/prometheus-operator, via node).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from conftest import (CASES, CHART, ENVIRONMENTS, NAMESPACE, RELEASE, by_kind, helm, load_values, objects, one,
                      render, render_case, run, tool)

DESIGN_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
CONFIG_KEYS = {"service", "inbound", "outbound", "admin", "tracing", "routes", "filters",  # DESIGN section 4
               "drain_timeout", "drain_delay", "metrics", "limits"}  # docs/config.md
CRD_GROUP = "monitoring.coreos.com/v1"


def kube_version() -> str:
    from kubernetes_validate.utils import latest_version

    return latest_version()


def validate_core(objs: list[dict]) -> list[str]:
    import kubernetes_validate

    errors = []
    for o in objs:
        if o["apiVersion"] == CRD_GROUP:
            continue
        try:
            kubernetes_validate.validate(o, kube_version(), strict=True)
        except Exception as e:  # ValidationError, SchemaNotFoundError: both are findings
            errors.append(f"{o['kind']}/{o['metadata']['name']}: {getattr(e, 'message', e)}")
    return errors


def validate_crds(objs: list[dict], tmp_path: Path) -> list[dict]:
    crds = [o for o in objs if o["apiVersion"] == CRD_GROUP]
    if not crds:
        return []
    node_modules = os.environ.get("SIDETRACE_CHART_NODE_MODULES", "")
    if not Path(node_modules, "@kubernetes-models", "prometheus-operator").is_dir():
        pytest.fail("SIDETRACE_CHART_NODE_MODULES does not hold @kubernetes-models/prometheus-operator; "
                    "run scripts/test-chart.sh")
    f = tmp_path / "crd-objects.json"
    f.write_text(json.dumps(crds))
    p = run([tool("node"), str(Path(__file__).with_name("validate_crds.mjs")), node_modules, str(f)])
    results = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(crds), p.stderr
    return results


def pod_specs(objs: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for o in objs:
        spec = o.get("spec", {})
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((o["metadata"]["name"], spec["template"]["spec"]))
        elif o["kind"] == "CronJob":
            out.append((o["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"]))
    return out


def proxies(pod: dict) -> list[tuple[dict, bool]]:
    """(container, is_native_sidecar) for every sidetrace container of a pod spec."""
    found = [(c, False) for c in pod.get("containers", []) if c["name"] == "sidetrace"]
    found += [(c, True) for c in pod.get("initContainers", []) if c["name"] == "sidetrace"]
    return found


# === every case renders and validates ===

@pytest.mark.parametrize("case", sorted(CASES))
def test_case_renders_valid_objects(case, tmp_path):
    objs = objects(render_case(case))
    assert objs, "nothing rendered"
    assert validate_core(objs) == []
    bad = [r for r in validate_crds(objs, tmp_path) if not r["ok"]]
    assert bad == []
    for o in objs:
        assert o["metadata"]["namespace"] == NAMESPACE
        assert len(o["metadata"]["name"]) <= 63


def test_example_user_chart_renders_valid_objects(example_render, tmp_path):
    objs = objects(example_render)
    assert validate_core(objs) == []
    assert [r for r in validate_crds(objs, tmp_path) if not r["ok"]] == []
    kinds = sorted(o["kind"] for o in objs)
    assert kinds.count("Deployment") == 1 and kinds.count("CronJob") == 1
    assert "PodMonitor" in kinds and "PrometheusRule" in kinds


def test_validators_reject_broken_objects(tmp_path):
    """The validators are not rubber stamps: a wrong field fails each of them."""
    objs = objects(render_case("fronting-app"))
    deploy = json.loads(json.dumps(one(objs, "Deployment")))
    deploy["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 42
    deploy["spec"]["replicas"] = "three"
    assert validate_core([deploy])
    pm = json.loads(json.dumps(one(objs, "ServiceMonitor")))
    pm["spec"]["endpoints"][0]["relabelings"][0]["action"] = "rename"
    rule = json.loads(json.dumps(one(objs, "PrometheusRule")))
    rule["spec"]["groups"][0]["rules"][0]["expr"] = {"not": "a string"}
    results = validate_crds([pm, rule], tmp_path)
    assert [r["ok"] for r in results] == [False, False], results


@pytest.mark.parametrize("case", ["default"] + [f"env-{e}" for e in ENVIRONMENTS])
def test_helm_lint(case):
    values = load_values(*CASES[case])
    report = helm().lint(str(CHART), values, strict=True, kube_version=f"v{kube_version()}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    assert problems == [], problems


def test_helm_lint_example_user_chart(example_chart):
    report = helm().lint(str(example_chart), strict=True, with_subcharts=True, kube_version=f"v{kube_version()}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    assert report["total_charts_linted"] >= 1 and problems == [], problems


def test_chart_metadata():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    cargo = (CHART.parent.parent / "Cargo.toml").read_text()
    crate_version = re.search(r'^\[workspace\.package\][^\[]*?^version\s*=\s*"([^"]+)"', cargo, re.M | re.S)
    expected = crate_version.group(1) if crate_version else "0.1.0"
    assert meta["appVersion"] == expected
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert f'define "sidetrace.appVersion" -}}}}{expected}{{{{' in helpers


# === the injected container ===

def test_injected_containers(example_render):
    objs = objects(example_render)
    pods = dict(pod_specs(objs))
    deploy_pod = pods[f"{RELEASE}-checkout"]
    cron_pod = pods[f"{RELEASE}-checkout-reconcile"]
    (regular, native_flag), = proxies(deploy_pod)
    assert not native_flag and "restartPolicy" not in regular
    (native, native_flag), = proxies(cron_pod)
    assert native_flag and native["restartPolicy"] == "Always"
    assert cron_pod["restartPolicy"] == "OnFailure"
    for c in (regular, native):
        check_proxy_container(c, service="checkout", environment="prod")
    # the config volume both mount comes from the ConfigMap the dependency renders
    cm = one(objs, "ConfigMap") if len(by_kind(objs, "ConfigMap")) == 1 else [
        o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-config")][0]
    for pod in (deploy_pod, cron_pod):
        vol = {v["name"]: v for v in pod["volumes"]}["sidetrace-config"]
        assert vol["configMap"]["name"] == cm["metadata"]["name"]
    cfg = yaml.safe_load(cm["data"]["sidetrace.yaml"])
    assert cfg["service"] == {"name": "checkout", "version": "1.4.2", "environment": "prod"}
    assert cfg["filters"][1]["retry"]["on"] == ["connect_error", 503]
    svc = one(objs, "Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "st-inbound"
    ann = objs[[o["kind"] for o in objs].index("Deployment")]["spec"]["template"]["metadata"]["annotations"]
    # the example's PodMonitor scrapes the pods: scrape annotations would count every series twice
    assert not any(k.startswith("prometheus.io/") for k in ann), ann
    assert ann["kubectl.kubernetes.io/default-container"] == "checkout"


def check_proxy_container(c: dict, service: str, environment: str, upstream: str = "http://127.0.0.1:8080"):
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"st-inbound": 15080, "st-admin": 15090}
    assert c["livenessProbe"]["httpGet"] == {"path": "/live", "port": "st-admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "st-admin"}
    assert c["startupProbe"]["httpGet"]["port"] == "st-admin"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    env = [e["name"] for e in c["env"]]
    values = {e["name"]: e.get("value") for e in c["env"]}
    field = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"] if "fieldRef" in e.get("valueFrom", {})}
    assert field == {"K8S_POD_NAME": "metadata.name", "K8S_NAMESPACE_NAME": "metadata.namespace",
                     "K8S_NODE_NAME": "spec.nodeName"}
    attrs = dict(kv.split("=", 1) for kv in values["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    assert attrs["k8s.pod.name"] == "$(K8S_POD_NAME)"
    assert attrs["k8s.namespace.name"] == "$(K8S_NAMESPACE_NAME)"
    assert attrs["k8s.node.name"] == "$(K8S_NODE_NAME)"
    assert attrs["deployment.environment.name"] == environment
    # $(VAR) only expands variables defined earlier in the list
    assert env.index("OTEL_RESOURCE_ATTRIBUTES") > max(env.index(n) for n in field)
    assert values["SIDETRACE_INBOUND"] == "0.0.0.0:15080"
    assert values["SIDETRACE_ADMIN"] == "0.0.0.0:15090"
    assert values["SIDETRACE_UPSTREAM"] == upstream
    assert values["SIDETRACE_CONFIG"] == "/etc/sidetrace/sidetrace.yaml"
    assert values["OTEL_SERVICE_NAME"] == service == values["SIDETRACE_SERVICE_NAME"]
    assert {"SIDETRACE_LOG_LEVEL", "SIDETRACE_LOG_FORMAT"} <= set(env)
    assert c["args"] == ["run"]
    assert {"name": "sidetrace-config", "mountPath": "/etc/sidetrace", "readOnly": True} in c["volumeMounts"]


# === fronting mode ===

def test_fronting_app_container():
    objs = objects(render_case("fronting-app"))
    deploy = one(objs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (proxy, native), = proxies(pod)
    assert native, "in front of an app container the proxy runs as a native sidecar"
    check_proxy_container(proxy, service="legacy-app", environment="prod")
    env = {e["name"]: e for e in proxy["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector.observability:4317"
    assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"] == {"name": "otlp-auth", "key": "headers"}
    assert env["SIDETRACE_OUTBOUND"]["value"] == "127.0.0.1:15081"
    attrs = env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    assert attrs.endswith(",cost.center=42,team=legacy")
    assert [c["name"] for c in pod["containers"]] == ["app"]
    assert pod["containers"][0]["image"] == "ghcr.io/acme/legacy-app:2.3.1"
    # TLS: secret mounted, config points at it
    assert {"name": "sidetrace-tls", "secret": {"secretName": "legacy-app-tls"}} in pod["volumes"]
    cm = [o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-config")][0]
    cfg = yaml.safe_load(cm["data"]["sidetrace.yaml"])
    assert cfg["inbound"]["tls"] == {"cert": "/etc/sidetrace-tls/tls.crt", "key": "/etc/sidetrace-tls/tls.key",
                                     "client_ca": "/etc/sidetrace-tls/ca.crt"}
    # Service -> proxy inbound port; admin only on the headless metrics Service
    services = {s["metadata"]["name"]: s for s in by_kind(objs, "Service")}
    main = services["shop-sidetrace"]
    assert main["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "st-inbound", "protocol": "TCP",
                                      "appProtocol": "http"}]
    assert main["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    admin = services["shop-sidetrace-admin"]
    assert admin["spec"]["clusterIP"] == "None" and admin["spec"]["ports"][0]["targetPort"] == "st-admin"
    # optional PDB (policy/v1) and HPA (autoscaling/v2); replicas left to the HPA
    assert one(objs, "PodDisruptionBudget")["apiVersion"] == "policy/v1"
    hpa = one(objs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    assert "replicas" not in deploy["spec"]


def test_fronting_external_upstream():
    objs = objects(render_case("fronting-upstream"))
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    (proxy, native), = proxies(pod)
    assert not native and [c["name"] for c in pod["containers"]] == ["sidetrace"]
    check_proxy_container(proxy, service=RELEASE, environment="prod", upstream="https://legacy.internal:8443")
    assert not by_kind(objs, "HorizontalPodAutoscaler") and not by_kind(objs, "PodDisruptionBudget")
    assert one(objs, "Deployment")["spec"]["replicas"] == 1


# === proxy config: only DESIGN section 4 keys ===

@pytest.mark.parametrize("case", sorted(CASES))
def test_config_has_only_design_keys(case):
    objs = objects(render_case(case))
    cm = [o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-config")]
    assert len(cm) == 1
    cfg = yaml.safe_load(cm[0]["data"]["sidetrace.yaml"])
    assert set(cfg) <= CONFIG_KEYS
    assert cfg["service"]["environment"] in ENVIRONMENTS
    assert cfg["inbound"]["upstream_protocol"] in ("auto", "http1", "h2c")
    for item in cfg.get("filters", []):
        assert len(item) == 1


# === scraping ===

@pytest.mark.parametrize("case", ["env-prod+fronting", "fronting-app"])
def test_monitors_relabel_namespace_pod_service_environment(case):
    objs = objects(render_case(case))
    values = load_values(*CASES[case])
    env = values.get("environment", "prod")
    service = values.get("sidetrace", {}).get("serviceName") or RELEASE
    for kind, key in (("PodMonitor", "podMetricsEndpoints"), ("ServiceMonitor", "endpoints")):
        for mon in by_kind(objs, kind):
            (ep,) = mon["spec"][key]
            assert ep["port"] == "st-admin" and ep["path"] == "/metrics"
            targets: dict[str, dict] = {}
            for r in ep["relabelings"]:  # the first rule per label (a workload's annotation may follow)
                targets.setdefault(r["targetLabel"], r)
            assert set(targets) >= {"namespace", "pod", "service", "environment"}
            assert targets["environment"]["replacement"] == env
            assert targets["service"]["replacement"] == service
            assert mon["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_dev_values_route_no_pages():
    rule = one(objects(render_case("env-dev")), "PrometheusRule")
    severities = {r["labels"]["severity"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert severities == {"info"}
    prod = one(objects(render_case("env-prod")), "PrometheusRule")
    assert {r["labels"]["severity"] for g in prod["spec"]["groups"] for r in g["rules"] if "alert" in r} == {
        "page", "ticket", "info"}


def test_environments_differ_where_teams_differ():
    def sampler(case):
        cm = [o for o in by_kind(objects(render_case(case)), "ConfigMap") if o["metadata"]["name"].endswith("-config")][0]
        return yaml.safe_load(cm["data"]["sidetrace.yaml"])["tracing"]["sampler"]["ratio"]

    assert sampler("env-dev") > sampler("env-staging") > sampler("env-prod")
    mem = {e: load_values(f"values-{e}.yaml")["sidetrace"]["resources"]["limits"]["memory"] for e in ENVIRONMENTS}
    assert len(set(mem.values())) == 3
    replicas = {e: one(objects(render_case(f"env-{e}+fronting")), "Deployment")["spec"].get("replicas")
                for e in ENVIRONMENTS}
    assert replicas == {"dev": 1, "staging": 2, "prod": None}  # prod hands replicas to the HPA
    assert one(objects(render_case("env-prod+fronting")), "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 3
    assert not by_kind(objects(render_case("env-dev+fronting")), "PodDisruptionBudget")
    assert by_kind(objects(render_case("env-staging+fronting")), "PodDisruptionBudget")


def test_latency_threshold_is_a_design_bucket():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["slo"]["latency"]["threshold"] in DESIGN_BUCKETS
    template = (CHART / "templates" / "prometheusrule.yaml").read_text()
    defaults = re.search(r"\$buckets := list ([0-9. ]+)", template).group(1).split()
    assert [float(b) for b in defaults] == DESIGN_BUCKETS


def test_latency_threshold_follows_configured_buckets():
    """With the proxy's buckets configured, a threshold among them works (0.3 s) and reaches
    both the proxy config and the SLI's le matcher."""
    values = {"slo": {"enabled": True, "latency": {"threshold": 0.3}},
              "sidetrace": {"config": {"metrics": {"duration_buckets": [0.1, 0.3, 1, 3]}}}}
    objs = objects(render(values))
    rules = [r for g in one(objs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    lat = [r for r in rules if r.get("record") == "sidetrace:slo_latency_errors:ratio_rate1h"][0]
    assert 'le="0.3"' in lat["expr"]
    cm = [o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-config")][0]
    assert yaml.safe_load(cm["data"]["sidetrace.yaml"])["metrics"]["duration_buckets"] == [0.1, 0.3, 1, 3]


def test_fronting_drain_timeout_fits_the_grace_period():
    cfg = lambda objs: yaml.safe_load([o for o in by_kind(objs, "ConfigMap")  # noqa: E731
                                       if o["metadata"]["name"].endswith("-config")][0]["data"]["sidetrace.yaml"])
    fronting = objects(render({"fronting": {"enabled": True, "upstream": "http://legacy:8080",
                                            "terminationGracePeriodSeconds": 60}}))
    assert cfg(fronting)["drain_timeout"] == "50s"  # grace less the 5s drain delay less 5s
    assert cfg(fronting)["drain_delay"] == "5s"
    assert one(fronting, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60
    assert "drain_timeout" not in cfg(objects(render_case("default")))  # injection: the proxy's default
