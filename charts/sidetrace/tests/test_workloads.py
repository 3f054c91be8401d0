"""Two workloads share one release with their own settings (workloads.* in the values, the
library templates called with (dict "top" . "workload" NAME)), and `sidetrace inject` gives the
same pod from the sidetrace.io/* annotations.

Fixture: fixtures/workloads, a user chart with an api Deployment (the release's settings, regular
sidecar) and a worker Deployment (workloads.worker: service name, app port, sampling, resources,
default container; native sidecar).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import CHART, RELEASE, by_kind, helm, objects, render
from inject_helpers import documents, inject, ok, pod_template, validate, without_status
from test_inject import sidecars, strip_sidecar
from test_render import validate_core

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "workloads"


@pytest.fixture(scope="module")
def workloads_chart(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("workloads") / "shop"
    shutil.copytree(FIXTURE, work, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    chart_yaml = work / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace("file://../../..", f"file://{CHART}"))
    helm().dependency_update(str(work))
    return work


def deployments(rendered: dict[str, str]) -> dict[str, dict]:
    return {o["metadata"]["name"].removeprefix(f"{RELEASE}-"): o for o in by_kind(objects(rendered), "Deployment")}


def proxy_env(pod: dict) -> dict[str, str]:
    (_, proxy), = sidecars(pod)
    return {e["name"]: e.get("value") for e in proxy["env"]}


def test_two_workloads_share_a_release_with_their_own_settings(workloads_chart):
    rendered = render(chart=workloads_chart)
    assert validate_core([o for o in objects(rendered)]) == []
    deploys = deployments(rendered)
    api, worker = pod_template(deploys["api"]), pod_template(deploys["worker"])

    env = proxy_env(api)
    assert env["OTEL_SERVICE_NAME"] == env["SIDETRACE_SERVICE_NAME"] == "shop-api"
    assert env["SIDETRACE_UPSTREAM"] == "http://127.0.0.1:8080"
    assert "OTEL_TRACES_SAMPLER" not in env
    (_, api_proxy), = sidecars(api)
    assert api_proxy["resources"] == {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}

    env = proxy_env(worker)
    assert env["OTEL_SERVICE_NAME"] == env["SIDETRACE_SERVICE_NAME"] == "shop-worker"
    assert env["SIDETRACE_UPSTREAM"] == "http://127.0.0.1:9090"
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio" and env["OTEL_TRACES_SAMPLER_ARG"] == "0.5"
    (where, worker_proxy), = sidecars(worker)
    assert where == "initContainers"
    # merged over sidetrace.resources key by key
    assert worker_proxy["resources"] == {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}
    ann = worker["metadata"]["annotations"]
    assert ann["kubectl.kubernetes.io/default-container"] == "worker"
    assert ann["sidetrace.io/service-name"] == "shop-worker"
    assert ann["prometheus.io/scrape"] == "true"
    assert api["metadata"]["annotations"]["sidetrace.io/service-name"] == "shop-api"

    # one ConfigMap for both
    names = {v["configMap"]["name"] for p in (api, worker) for v in p["spec"]["volumes"] if "configMap" in v}
    assert names == {f"{RELEASE}-sidetrace-config"}


# What the worker's values say, as annotations on a pod that `sidetrace inject` reads.
WORKER_ANNOTATIONS = {
    "sidetrace.io/app-port": "9090",
    "sidetrace.io/sampling-ratio": "0.5",
    "sidetrace.io/proxy-cpu-request": "10m",
    "sidetrace.io/proxy-memory-limit": "64Mi",
}


@pytest.mark.parametrize("name, flags, annotations", [
    ("api", ["--mode", "container"], {}),
    ("worker", ["--mode", "native"], WORKER_ANNOTATIONS),
])
def test_inject_with_annotations_gives_what_the_workload_values_give(workloads_chart, tmp_path, name, flags,
                                                                     annotations):
    chart_obj = deployments(render(chart=workloads_chart))[name]
    before = strip_sidecar(chart_obj)
    pod_template(before)["metadata"].setdefault("annotations", {}).update(annotations)
    values = yaml.safe_load((workloads_chart / "values.yaml").read_text())["sidetrace"]
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    out = ok(inject("--release", RELEASE, "-f", str(values_file), *flags, "-", stdin=yaml.safe_dump(before)))
    (injected,) = documents(out)
    injected = without_status(injected)
    for key in annotations:
        del pod_template(injected)["metadata"]["annotations"][key]
    assert injected == chart_obj, f"{name}: inject and the chart differ"
    assert validate([injected]) == []


def test_an_unknown_workload_is_refused(workloads_chart, tmp_path):
    copy = tmp_path / "shop"
    shutil.copytree(workloads_chart, copy)
    values = copy / "values.yaml"
    values.write_text(values.read_text().replace("    worker:\n", "    jobs:\n"))
    with pytest.raises(helm().errors.HelmRenderError) as info:
        render(chart=copy)
    assert 'workload "worker" is not in the values\' workloads (it has: jobs)' in str(info.value)


@pytest.mark.parametrize("workload, where", [
    ({"samplingRatio": 2}, "/workloads/w/samplingRatio"),
    ({"appPort": 0}, "/workloads/w/appPort"),
    ({"servicename": "x"}, "/workloads/w"),
    ({"resources": {"requests": {"cpu": "lots"}}}, "/workloads/w/resources/requests/cpu"),
])
def test_schema_checks_workload_settings(workload, where):
    errors = helm().errors
    with pytest.raises((errors.HelmValuesError, errors.HelmRenderError)) as info:
        render({"workloads": {"w": workload}})
    assert where in str(info.value)


def test_monitors_keep_a_workloads_service_name():
    objs = objects(render({"monitoring": {"podMonitor": {"enabled": True}}}))
    (pm,) = by_kind(objs, "PodMonitor")
    relabel = pm["spec"]["podMetricsEndpoints"][0]["relabelings"]
    static = [i for i, r in enumerate(relabel) if r.get("targetLabel") == "service"]
    assert len(static) == 2
    first, second = (relabel[i] for i in static)
    assert "replacement" in first and "sourceLabels" not in first
    assert second == {"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_annotation_sidetrace_io_service_name"],
                      "regex": "(.+)", "targetLabel": "service"}


def test_each_workloads_service_gets_its_own_slo_rules_and_alerts(tmp_path):
    """A workload with its own service name gets the release's SLO rules and alerts for that name:
    its failures page under its own service, the release's healthy service stays quiet."""
    from conftest import NAMESPACE, prometheus_rule_groups, run, tool, write_rule_file

    values = {"sidetrace": {"serviceName": "shop-api"}, "slo": {"enabled": True},
              "workloads": {"worker": {"serviceName": "shop-worker"}, "cron": {"appPort": 9000},
                            "same": {"serviceName": "shop-api"}}}
    groups = prometheus_rule_groups(render(values))
    names = [g["name"] for g in groups]
    assert len(names) == len(set(names)) == 6, names
    assert {n.rsplit("-", 2)[-2] + "-" + n.rsplit("-", 2)[-1] for n in names} == {"shop-api", "shop-worker"}
    rules = write_rule_file(groups, tmp_path / "rules.yaml")
    p = run([tool("promtool"), "check", "rules", str(rules)])
    assert p.returncode == 0, p.stdout + p.stderr

    def count(service: str, per_min: float, extra: str = "") -> dict:
        sel = f'namespace="{NAMESPACE}",service="{service}",environment="prod"{extra}'
        return {"series": f"http_server_request_duration_seconds_count{{{sel}}}", "values": f"0+{per_min:g}x240"}

    stripped = write_rule_file(groups, tmp_path / "stripped.yaml", strip_annotations=True)
    page = {"severity": "page", "slo": "availability", "long_window": "1h", "short_window": "5m",
            "burn_rate": "14.4", "namespace": NAMESPACE, "service": "shop-worker", "environment": "prod"}
    test = {"rule_files": [str(stripped)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [count("shop-api", 100), count("shop-worker", 98),
                         count("shop-worker", 2, ',failure_category="NETWORK"')],
        "alert_rule_test": [{"eval_time": "5m", "alertname": "SidetraceAvailabilityErrorBudgetBurn",
                             "exp_alerts": [{"exp_labels": page}]}],
    }]}
    path = tmp_path / "workloads.test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    p = run([tool("promtool"), "test", "rules", str(path)], timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr


def test_prometheus_labels_each_pod_with_its_service_name_annotation(tmp_path):
    """The PodMonitor's relabelings on a real Prometheus: two pods of the release scraped from one
    running proxy, one annotated sidetrace.io/service-name: shop-worker (as injection and
    sidetrace.podAnnotations write it), one without: their series carry service="shop-worker" and
    the release's service."""
    import os
    import subprocess

    from conftest import NAMESPACE, run, tool
    from live import free_port, http_get, prom_query, stop, wait_until
    from test_live import scrape_config_from_podmonitor, sidetrace_bin

    binary = sidetrace_bin()
    objs = objects(render({"sidetrace": {"serviceName": "shop-api"},
                           "monitoring": {"podMonitor": {"enabled": True, "interval": "1s"}}}))
    (pm,) = by_kind(objs, "PodMonitor")
    admin, inbound, prom = free_port(), free_port(), free_port()
    scrape = scrape_config_from_podmonitor(pm, f"127.0.0.1:{admin}", "api-1")
    worker = json.loads(json.dumps(scrape["static_configs"][0]))
    worker["labels"].update({"__meta_kubernetes_pod_name": "worker-1",
                             "__meta_kubernetes_pod_annotation_sidetrace_io_service_name": "shop-worker"})
    scrape["static_configs"].append(worker)
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [scrape]}))
    p = run([tool("promtool"), "check", "config", str(cfg)])
    assert p.returncode == 0, p.stdout + p.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIDETRACE_", "OTEL_"))}
    env.update({"SIDETRACE_INBOUND": f"127.0.0.1:{inbound}", "SIDETRACE_ADMIN": f"127.0.0.1:{admin}",
                "SIDETRACE_UPSTREAM": "http://127.0.0.1:9", "SIDETRACE_SERVICE_NAME": "shop-api"})
    procs = []
    try:
        procs.append(subprocess.Popen([str(binary), "run"], env=env, cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until("proxy ready", lambda: http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200, procs=procs)
        procs.append(subprocess.Popen([tool("prometheus"), f"--config.file={cfg}",
                                       f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                       f"--web.listen-address=127.0.0.1:{prom}"], cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        base = f"http://127.0.0.1:{prom}"
        up = wait_until("both targets up", lambda: (lambda r: r if len(r) == 2 else None)(
            prom_query(base, "up == 1")), procs=procs)
        services = {s["metric"]["pod"]: s["metric"]["service"] for s in up}
        assert services == {"api-1": "shop-api", "worker-1": "shop-worker"}
        assert {s["metric"]["namespace"] for s in up} == {NAMESPACE}
    finally:
        for proc in reversed(procs):
            stop(proc)


def test_every_annotation_injection_reads_or_writes_is_documented():
    """Each sidetrace.io/* key in the injector's code and the chart's templates has a row in the
    Annotations table of docs/kubernetes.md, and the table lists no key that nothing reads."""
    import re

    repo = CHART.parent.parent
    used = set()
    for path in [*(repo / "proxy" / "src" / "inject").rglob("*.rs"), *(repo / "proxy" / "src" / "webhook").rglob("*.rs"),
                 *(CHART / "templates").iterdir()]:
        if "tests" in path.parts:
            continue
        used |= set(re.findall(r"sidetrace\.io/[a-z-]+", path.read_text()))
    docs = (repo / "docs" / "kubernetes.md").read_text()
    table = docs[docs.index("\n## Annotations"):docs.index("\n## Fronting mode")]
    rows = {m for line in table.splitlines() if line.startswith("| `")
            for m in re.findall(r"`(sidetrace\.io/[a-z-]+)`", line.split("|")[1])}
    assert used and used == rows, (sorted(used - rows), sorted(rows - used))


def test_helm_lint_the_two_workloads_chart(workloads_chart):
    from test_render import kube_version

    report = helm().lint(str(workloads_chart), strict=True, with_subcharts=True, kube_version=f"v{kube_version()}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    assert report["total_charts_linted"] >= 1 and problems == [], problems
