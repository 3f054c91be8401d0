"""A running sidetrace against the chart: its config, its scrape config, its rules.

Starts `sidetrace echo` (test upstream) and `sidetrace run` with the config file the chart renders,
then a real Prometheus (Debian package) that scrapes the admin port through the chart's PodMonitor
(its relabelings turned into a Prometheus scrape config, the way prometheus-operator does, with the
Kubernetes discovery labels a pod would get) and loads the chart's PrometheusRule. Checks that the
recording rules produce series and that every metric the rules and dashboards use is emitted.

Needs the binary: SIDETRACE_BIN, default target/debug/sidetrace (scripts/test.sh builds it). Under
CI=true a missing binary fails; elsewhere these tests skip until the proxy exists. All servers
listen on free ports on 127.0.0.1; every wait is bounded; every process started is stopped.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import CASES, CI, NAMESPACE, REPO, by_kind, objects, render, render_case, run, tool
from live import PATIENCE, free_port, http_get, prom_query, stop, wait_until
from proxy_metrics import FILTERS, family_of, metric_names, series_names
from test_dashboards import FILES as DASHBOARD_FILES, expressions, load as load_dashboard, substitute

SERVICE = "checkout"
VALUES = {"environment": "prod", "sidetrace": {"serviceName": SERVICE},
          "fronting": {"enabled": True, "upstream": "http://legacy.internal:8080"},
          "monitoring": {"podMonitor": {"enabled": True, "interval": "1s"}}, "slo": {"enabled": True}}
POD = {"metadata.name": "checkout-7d9f", "metadata.namespace": NAMESPACE, "spec.nodeName": "node-1"}


def container_env(container: dict, overrides: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet would build it: Downward API fields filled in,
    $(VAR) references to earlier variables expanded; then the test's loopback addresses."""
    env: dict[str, str] = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\(([A-Z0-9_]+)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = POD[e["valueFrom"]["fieldRef"]["fieldPath"]]
    env.update(overrides)
    return env


def sidetrace_bin() -> Path:
    path = Path(os.environ.get("SIDETRACE_BIN") or REPO / "target" / "debug" / "sidetrace")
    if not path.is_absolute():
        path = REPO / path
    if not os.access(path, os.X_OK):
        message = f"sidetrace binary not found at {path} (set SIDETRACE_BIN or build it: cargo build -p sidetrace)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def camel_to_snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def scrape_config_from_podmonitor(pm: dict, admin: str, pod: str) -> dict:
    """What prometheus-operator generates for one PodMonitor endpoint, for a static target that
    carries the discovery labels of a pod in the release namespace."""
    (ep,) = pm["spec"]["podMetricsEndpoints"]
    relabel = [{"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": ep["port"],
                "action": "keep"}]
    for r in ep["relabelings"]:
        relabel.append({camel_to_snake(k): v for k, v in r.items()})
    return {
        "job_name": f"podMonitor/{pm['metadata']['namespace']}/{pm['metadata']['name']}/0",
        "scrape_interval": ep["interval"],
        "metrics_path": ep["path"],
        "static_configs": [{"targets": [admin], "labels": {
            "__meta_kubernetes_namespace": NAMESPACE,
            "__meta_kubernetes_pod_name": pod,
            "__meta_kubernetes_pod_container_port_name": ep["port"],
            "__meta_kubernetes_pod_label_app_kubernetes_io_instance": "shop",
        }}],
        "relabel_configs": relabel,
    }


def exposed_names(text: str) -> set[str]:
    """Sample names, plus names declared by # TYPE / # HELP lines."""
    names = set()
    for line in text.splitlines():
        if line.startswith(("# TYPE ", "# HELP ")):
            family = line.split()[2]
            names |= {family, f"{family}_bucket", f"{family}_count", f"{family}_sum"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return objects(render(VALUES))


@pytest.fixture(scope="module")
def stack(rendered, tmp_path_factory):
    """echo upstream + sidetrace (chart config) + Prometheus (chart scrape config and rules)."""
    binary = sidetrace_bin()
    tmp = tmp_path_factory.mktemp("live")
    procs: list[subprocess.Popen] = []
    try:
        def start(name, cmd, env=None):
            log = (tmp / f"{name}.log").open("w")
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
            procs.append(p)
            return p

        up, inbound, outbound, admin, prom = free_port(), free_port(), free_port(), free_port(), free_port()
        echo = start("echo", [str(binary), "echo", "--listen", f"127.0.0.1:{up}"])
        config = tmp / "sidetrace.yaml"
        config.write_text(config_of(rendered))
        # Started as the pod starts it: the container's args and environment (SIDETRACE_*, OTEL_*,
        # Downward API), with loopback addresses instead of the pod's.
        (container,) = by_kind(rendered, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIDETRACE_", "OTEL_", "K8S_"))}
        env.update(container_env(container, {
            "SIDETRACE_CONFIG": str(config), "SIDETRACE_INBOUND": f"127.0.0.1:{inbound}",
            "SIDETRACE_UPSTREAM": f"http://127.0.0.1:{up}", "SIDETRACE_ADMIN": f"127.0.0.1:{admin}",
            "SIDETRACE_OUTBOUND": f"127.0.0.1:{outbound}"}))
        assert env["OTEL_RESOURCE_ATTRIBUTES"].startswith("k8s.pod.name=checkout-7d9f,k8s.namespace.name=shop,")
        proxy = start("sidetrace", [str(binary), *container["args"]], env=env)
        wait_until("sidetrace admin /ready", lambda: http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200,
                   procs=[echo, proxy])

        rules = tmp / "rules.yaml"
        rules.write_text(yaml.safe_dump({"groups": by_kind(rendered, "PrometheusRule")[0]["spec"]["groups"]}))
        pm = by_kind(rendered, "PodMonitor")[0]
        prom_cfg = tmp / "prometheus.yml"
        prom_cfg.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [scrape_config_from_podmonitor(pm, f"127.0.0.1:{admin}", "checkout-7d9f")],
        }))
        p = run([tool("promtool"), "check", "config", str(prom_cfg)])
        assert p.returncode == 0, p.stdout + p.stderr
        prometheus = start("prometheus", [tool("prometheus"), f"--config.file={prom_cfg}",
                                          f"--storage.tsdb.path={tmp / 'tsdb'}",
                                          f"--web.listen-address=127.0.0.1:{prom}"])
        base = f"http://127.0.0.1:{prom}"
        wait_until("prometheus ready", lambda: http_get(f"{base}/-/ready")[0] == 200, procs=[prometheus])

        # Traffic through the proxy: successes, and errors the proxy classifies.
        def traffic():
            for i in range(40):
                http_get(f"http://127.0.0.1:{inbound}/api/orders/{i}")
            for status in (404, 503, 500):
                http_get(f"http://127.0.0.1:{inbound}/api/orders?status={status}")
            # The app calling out through the outbound listener (as an HTTP proxy), so the client
            # side of the service graph has data too.
            via_outbound = urllib.request.build_opener(
                urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{outbound}"}))
            for _ in range(3):
                with via_outbound.open(f"http://127.0.0.1:{up}/payments", timeout=PATIENCE) as r:
                    assert r.status == 200
        traffic()
        yield {"base": base, "admin": f"http://127.0.0.1:{admin}", "inbound": inbound, "traffic": traffic,
               "procs": procs, "tmp": tmp}
    finally:
        for p in reversed(procs):
            stop(p)
        for log in sorted(tmp.glob("*.log")):
            tail = log.read_text(errors="replace")[-1500:]
            if tail:
                print(f"--- {log.name} (tail) ---\n{tail}")


def containers_of(obj: dict) -> list[dict]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def config_of(objs: list[dict]) -> str:
    (cm,) = [o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-config")]
    return cm["data"]["sidetrace.yaml"]


@pytest.mark.parametrize("case", sorted(CASES) + ["example-user-chart"])
def test_proxy_accepts_the_chart_config(case, tmp_path, request):
    """`sidetrace check-config` accepts the config file every render case mounts."""
    binary = sidetrace_bin()
    objs = objects(request.getfixturevalue("example_render") if case == "example-user-chart" else render_case(case))
    config = tmp_path / "sidetrace.yaml"
    config.write_text(config_of(objs))
    # The upstream reaches the proxy through the environment, as the container's env sets it.
    upstream = {e["name"]: e["value"] for o in objs for c in containers_of(o) for e in c.get("env", [])
                if e.get("name") == "SIDETRACE_UPSTREAM" and "value" in e}
    # The certificates it names live in the pod's Secrets, not here.
    p = run([str(binary), "check-config", "--without-files", str(config)], timeout=30,
            env={**os.environ, **upstream})
    assert p.returncode == 0, f"sidetrace check-config rejects the chart's config:\n{p.stdout}{p.stderr}"


def test_scrape_through_the_podmonitor(stack):
    up = wait_until("target up", lambda: prom_query(stack["base"], "up == 1"), procs=stack["procs"])
    labels = up[0]["metric"]
    assert labels["namespace"] == NAMESPACE and labels["pod"] == "checkout-7d9f"
    assert labels["service"] == SERVICE and labels["environment"] == "prod"
    series = wait_until("request counter scraped",
                        lambda: prom_query(stack["base"], "http_server_request_duration_seconds_count"))
    for s in series:
        assert {"namespace", "pod", "service", "environment"} <= set(s["metric"])


def test_recording_rules_produce_series(stack):
    def recorded():
        stack["traffic"]()
        got = {}
        for name in ("sidetrace:slo_availability_errors:ratio_rate5m", "sidetrace:slo_latency_errors:ratio_rate5m",
                     "sidetrace:slo_availability:objective_ratio"):
            result = prom_query(stack["base"], f'{name}{{service="{SERVICE}",namespace="{NAMESPACE}"}}')
            if not result:
                return None
            got[name] = float(result[0]["value"][1])
        return got

    got = wait_until("recording rules to produce series", recorded, timeout=PATIENCE * 2, interval=1.0,
                     procs=stack["procs"])
    # the traffic has 2 server errors (503: NETWORK, 500: INTERNAL) per 43 requests; 404 is VALIDATION
    assert 0 < got["sidetrace:slo_availability_errors:ratio_rate5m"] < 0.5
    assert 0 <= got["sidetrace:slo_latency_errors:ratio_rate5m"] <= 1
    assert got["sidetrace:slo_availability:objective_ratio"] == pytest.approx(0.999)


def test_every_metric_the_rules_use_is_emitted(stack, rendered):
    status, text = http_get(f"{stack['admin']}/metrics")
    assert status == 200
    exposed = exposed_names(text)
    used = {n for g in by_kind(rendered, "PrometheusRule")[0]["spec"]["groups"] for r in g["rules"]
            for n in metric_names(r["expr"]) if not n.startswith("sidetrace:")}
    assert used and used <= series_names()
    missing = sorted(used - exposed)
    assert missing == [], (f"the rules use metrics sidetrace does not emit: {missing} (DESIGN section 6; "
                           "register counters at start so they show up at 0 before the first event)")


def test_latency_sli_bucket_is_emitted(stack):
    """The latency SLI reads le="0.25" (slo.latency.threshold): the proxy must have that bucket."""
    status, text = http_get(f"{stack['admin']}/metrics")
    assert status == 200
    assert re.search(r'http_server_request_duration_seconds_bucket\{[^}]*le="0\.25"', text), \
        'the latency SLI needs the le="0.25" bucket of http_server_request_duration_seconds'


# The filter a filter metric belongs to: its series exist once a chain has that filter.
FILTER_OF = {"timeouts": "timeout", "rate_limited": "rate_limit", "concurrency_rejected": "concurrency_limit",
             "retry": "retry", "circuit_breaker": "circuit_breaker"}


def filter_of(metric: str) -> str | None:
    rest = metric.removeprefix("sidetrace_filter_")
    if rest == metric:
        return None
    return next(f for prefix, f in FILTER_OF.items() if rest.startswith(prefix))


def test_every_metric_the_dashboards_use_is_emitted(stack, rendered):
    status, text = http_get(f"{stack['admin']}/metrics")
    exposed = {family_of(n) for n in exposed_names(text)}
    configured = {name for f in (yaml.safe_load(config_of(rendered)) or {}).get("filters") or [] for name in f}
    # A filter's metrics are emitted when the chain has it: the chart's config is checked for the
    # filters it configures, and every filter metric is checked by name against the proxy's own tests.
    exposed |= {m for m in FILTERS if filter_of(m) not in configured}
    used = set()
    for name in DASHBOARD_FILES:
        for _, expr in expressions(load_dashboard(name)):
            used |= {family_of(n) for n in metric_names(substitute(expr)) if not n.startswith("sidetrace:")}
    missing = sorted(used - exposed)
    assert missing == [], (f"the dashboards query metrics sidetrace does not emit: {missing} (DESIGN section 6; "
                           "register counters at start so they show up at 0 before the first event)")


def test_dashboard_queries_run_on_live_data(stack):
    """Every dashboard query evaluates without error on the scraped series (catches what parsing
    cannot: many-to-many matches, duplicate series in `or`/`label_replace`)."""
    errors = []
    queried = 0
    for name in DASHBOARD_FILES:
        for where, expr in expressions(load_dashboard(name)):
            try:
                prom_query(stack["base"], substitute(expr))
                queried += 1
            except ValueError as e:
                errors.append(f"{name} {where}: {e}")
    assert queried and errors == []
