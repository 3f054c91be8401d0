"""What goes wrong on a real cluster, checked at render time: OTLP exports that would fail."""

from __future__ import annotations

import re

import pytest

from conftest import by_kind, helm, objects, render

GRPC = "http://otel-collector.observability:4317"
HTTP = "http://otel-collector.observability:4318"


def render_error(values: dict) -> str:
    errors = helm().errors
    with pytest.raises((errors.HelmValuesError, errors.HelmRenderError)) as info:
        render(values)
    return str(info.value)


def env_of(rendered: dict[str, str], name: str) -> dict[str, str]:
    """The env of every sidetrace container in a render, by container, merged."""
    out: dict[str, str] = {}
    for o in objects(rendered):
        spec = o.get("spec", {})
        pod = (spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template") or {}).get("spec")
        if not pod:
            continue
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            if c["name"] == name:
                out.update({e["name"]: e.get("value") for e in c.get("env", [])})
    return out


# === OTLP: exports that arrive ===

def test_example_chart_exports_grpc_to_the_grpc_port(example_render):
    objs = objects(example_render)
    envs = []
    for o in by_kind(objs, "Deployment") + by_kind(objs, "CronJob"):
        spec = o["spec"]
        pod = spec["template"]["spec"] if o["kind"] == "Deployment" else spec["jobTemplate"]["spec"]["template"]["spec"]
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            if c["name"] == "sidetrace":
                envs.append({e["name"]: e.get("value") for e in c["env"]})
    assert len(envs) == 2, envs
    for env in envs:
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":4317")
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"


@pytest.mark.parametrize("otel, config, expected", [
    ({"endpoint": GRPC}, {}, ["port 4317", "not set (the proxy's default is http/protobuf)",
                              "sidetrace.otel.protocol: grpc"]),
    ({"tracesEndpoint": GRPC + "/"}, {}, ["port 4317"]),
    ({"endpoint": GRPC, "protocol": "http/protobuf"}, {}, ["port 4317", '"http/protobuf"']),
    ({}, {"tracing": {"export": {"endpoint": GRPC}}}, ["port 4317"]),
    ({"endpoint": HTTP, "protocol": "grpc"}, {}, ["port 4318", '"grpc"']),
    ({}, {"tracing": {"export": {"endpoint": HTTP, "protocol": "grpc"}}}, ["port 4318"]),
])
def test_chart_refuses_an_otlp_port_that_contradicts_the_protocol(otel, config, expected):
    message = render_error({"sidetrace": {"otel": otel, "config": config}})
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize("otel, config", [
    ({"endpoint": GRPC, "protocol": "grpc"}, {}),
    ({"endpoint": HTTP}, {}),
    ({"endpoint": HTTP, "protocol": "http/protobuf"}, {}),
    # the OTEL_* variable wins over the config file, as in the proxy
    ({"protocol": "grpc"}, {"tracing": {"export": {"endpoint": GRPC, "protocol": "http/protobuf"}}}),
    ({}, {"tracing": {"export": {"endpoint": GRPC, "protocol": "grpc"}}}),
    ({"endpoint": "http://collector:14317"}, {}),  # not a well-known port: the user's choice
])
def test_chart_accepts_matching_otlp_settings(otel, config):
    values = {"sidetrace": {"otel": otel, "config": config},
              "fronting": {"enabled": True, "upstream": "http://legacy.internal:8080"}}
    rendered = render(values)
    env = env_of(rendered, "sidetrace")
    if otel.get("protocol"):
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == otel["protocol"]
    else:
        assert "OTEL_EXPORTER_OTLP_PROTOCOL" not in env


# === shutdown without refused connections ===

def proxy_config(rendered: dict[str, str]) -> dict:
    import yaml

    cms = [o for o in by_kind(objects(rendered), "ConfigMap") if o["metadata"]["name"].endswith("-config")]
    return yaml.safe_load(cms[0]["data"]["sidetrace.yaml"])


def test_the_proxy_keeps_accepting_after_sigterm(example_render):
    assert proxy_config(example_render)["drain_delay"] == "5s"
    assert proxy_config(render({"sidetrace": {"drainDelaySeconds": 0}}))["drain_delay"] == "0s"


def test_fronting_grace_period_covers_delay_and_drain():
    rendered = render({"fronting": {"enabled": True, "upstream": "http://legacy:8080",
                                    "terminationGracePeriodSeconds": 40},
                       "sidetrace": {"drainDelaySeconds": 10}})
    cfg = proxy_config(rendered)
    assert cfg["drain_delay"] == "10s" and cfg["drain_timeout"] == "25s"
    message = render_error({"fronting": {"enabled": True, "upstream": "http://legacy:8080",
                                         "terminationGracePeriodSeconds": 5},
                            "sidetrace": {"drainDelaySeconds": 5}})
    assert "leaves no time to drain after sidetrace.waitBeforeExitSeconds (0) and sidetrace.drainDelaySeconds (5)" \
        in message
    assert "/sidetrace/drainDelaySeconds" in render_error({"sidetrace": {"drainDelaySeconds": -1}})
    # a regular container's preStop sleep comes out of the same grace period
    waiting = render({"fronting": {"enabled": True, "upstream": "http://legacy:8080",
                                   "terminationGracePeriodSeconds": 40},
                      "sidetrace": {"drainDelaySeconds": 10, "waitBeforeExitSeconds": 8}})
    assert proxy_config(waiting)["drain_timeout"] == "17s"
    (proxy,) = by_kind(objects(waiting), "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert proxy["lifecycle"] == {"preStop": {"sleep": {"seconds": 8}}}


APP = {"enabled": True, "app": {"image": {"repository": "ghcr.io/acme/app"}}}


def test_native_sidecar_drains_after_the_apps_shutdown():
    """The native sidecar gets SIGTERM only after the app has exited: the app's preStop (the drain
    delay) and shutdown come first, the proxy drains in what is left, with no delay of its own."""
    rendered = render({"fronting": {**APP, "terminationGracePeriodSeconds": 40, "app": {
        **APP["app"], "shutdownSeconds": 15}}, "sidetrace": {"drainDelaySeconds": 6}})
    assert proxy_config(rendered)["drain_timeout"] == "17s"  # 40 - 6 - 15 - 2
    pod = by_kind(objects(rendered), "Deployment")[0]["spec"]["template"]["spec"]
    (proxy,) = pod["initContainers"]
    assert {e["name"]: e.get("value") for e in proxy["env"]}["SIDETRACE_DRAIN_DELAY"] == "0s"
    assert "lifecycle" not in proxy
    (app,) = pod["containers"]
    assert app["lifecycle"] == {"preStop": {"sleep": {"seconds": 6}}}, "the app serves through the delay"
    message = render_error({"fronting": {**APP, "terminationGracePeriodSeconds": 16}})
    assert "leaves the proxy no time to drain" in message and "fronting.app.shutdownSeconds, 10" in message
    no_delay = render({"fronting": APP, "sidetrace": {"drainDelaySeconds": 0}})
    (app,) = by_kind(objects(no_delay), "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert "lifecycle" not in app


def test_regular_sidecar_keeps_the_delay_and_waits_only_when_asked(example_render):
    pods = dict(pods_of(objects(example_render)))
    (regular,) = [c for c in pods[f"shop-checkout"]["containers"] if c["name"] == "sidetrace"]
    env = {e["name"]: e.get("value") for e in regular["env"]}
    assert "SIDETRACE_DRAIN_DELAY" not in env, "the config's drain_delay applies"
    assert "lifecycle" not in regular
    (native,) = pods["shop-checkout-reconcile"]["initContainers"]
    assert {e["name"]: e.get("value") for e in native["env"]}["SIDETRACE_DRAIN_DELAY"] == "0s"


# === names that never collide ===

LONG_RELEASES = ["r" * 40, "checkout-payments-eu-west-1-canary-blue-green-2024", "a" * 52, "b" * 53]


def everything_on() -> dict:
    return {"fronting": {"enabled": True, "upstream": "http://legacy:8080",
                         "podDisruptionBudget": {"enabled": True},
                         "autoscaling": {"enabled": True}},
            "webhook": {"enabled": True, "certManager": True},
            "monitoring": {"serviceMonitor": {"enabled": True}},
            "slo": {"enabled": True}, "dashboards": {"enabled": True},
            "alertmanager": {"configMap": True}, "networkPolicy": {"enabled": True}}


def check_names(objs: list[dict]):
    seen: dict[tuple[str, str], int] = {}
    for o in objs:
        key = (o["kind"], o["metadata"]["name"])
        seen[key] = seen.get(key, 0) + 1
        limit = 52 if o["kind"] == "CronJob" else 63
        assert len(key[1]) <= limit, f"{key}: {len(key[1])} characters"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", key[1]), key
    duplicates = [k for k, n in seen.items() if n > 1]
    assert not duplicates, duplicates


@pytest.mark.parametrize("release", LONG_RELEASES)
def test_long_release_names_never_collide(release):
    objs = objects(render(everything_on(), release=release))
    check_names(objs)
    configmaps = [o["metadata"]["name"] for o in by_kind(objs, "ConfigMap")]
    assert any(n.endswith("-config") for n in configmaps) and any(n.endswith("-alertmanager") for n in configmaps)
    services = sorted(o["metadata"]["name"] for o in by_kind(objs, "Service"))
    assert any(n.endswith("-admin") for n in services), services


@pytest.mark.parametrize("release", ["c" * 52, "checkout"])
def test_example_chart_names_fit_at_any_release_length(example_chart, release):
    objs = objects(render(chart=example_chart, release=release))
    check_names(objs)
    (cron,) = by_kind(objs, "CronJob")
    assert cron["metadata"]["name"].endswith("-reconcile")


def test_inject_names_the_configmap_the_chart_renders_at_a_53_character_release():
    import json

    from inject_helpers import documents, inject, ok

    release = "b" * 53
    (cm,) = [o for o in by_kind(objects(render({}, release=release)), "ConfigMap")
             if o["metadata"]["name"].endswith("-config")]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
           "spec": {"containers": [{"name": "web", "image": "w", "ports": [{"containerPort": 8080}]}]}}
    (out,) = documents(ok(inject("--release", release, "-", stdin=json.dumps(pod))))
    names = [v["configMap"]["name"] for v in out["spec"]["volumes"] if "configMap" in v]
    assert names == [cm["metadata"]["name"]]


# === no silent bypass ===

def validate_strict(objs: list[dict]) -> list[str]:
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    errors = []
    for o in objs:
        if o["apiVersion"].startswith("monitoring.coreos.com") or o["apiVersion"].startswith("cert-manager.io"):
            continue
        try:
            kubernetes_validate.validate(o, latest_version(), strict=True)
        except Exception as e:  # ValidationError, SchemaNotFoundError: both are findings
            errors.append(f"{o['kind']}/{o['metadata']['name']}: {getattr(e, 'message', e)}")
    return errors


def test_network_policy_admits_only_the_proxy_ports_for_fronting_pods():
    objs = objects(render({"fronting": {"enabled": True, "upstream": "http://legacy:8080"},
                           "networkPolicy": {"enabled": True}}))
    (np,) = by_kind(objs, "NetworkPolicy")
    assert validate_strict([np]) == []
    (deploy,) = by_kind(objs, "Deployment")
    assert np["spec"]["podSelector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    assert np["spec"]["policyTypes"] == ["Ingress"]
    inbound, admin = np["spec"]["ingress"]
    assert inbound["ports"] == [{"port": 15080, "protocol": "TCP"}] and "from" not in inbound
    assert admin["ports"] == [{"port": 15090, "protocol": "TCP"}]
    assert admin["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    # nothing else: the app's port (8080) is not admitted
    assert {p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]} == {15080, 15090}


def test_network_policy_for_injected_pods_takes_their_selector_and_peers():
    values = {"networkPolicy": {"enabled": True, "podSelector": {"matchLabels": {"app": "checkout"}},
                                "from": [{"namespaceSelector": {"matchLabels": {"team": "shop"}}}],
                                "metricsFrom": {"podSelector": {"matchLabels": {"app": "prometheus"}}}},
              "sidetrace": {"ports": {"inbound": 16080, "admin": 16090}}}
    objs = objects(render(values))
    (np,) = by_kind(objs, "NetworkPolicy")
    assert validate_strict([np]) == []
    assert np["spec"]["podSelector"] == {"matchLabels": {"app": "checkout"}}
    inbound, admin = np["spec"]["ingress"]
    assert inbound == {"ports": [{"port": 16080, "protocol": "TCP"}],
                       "from": [{"namespaceSelector": {"matchLabels": {"team": "shop"}}}]}
    assert admin["ports"] == [{"port": 16090, "protocol": "TCP"}]
    assert admin["from"][0]["podSelector"] == {"matchLabels": {"app": "prometheus"}}
    assert "needs networkPolicy.podSelector" in render_error({"networkPolicy": {"enabled": True}})
    assert not by_kind(objects(render({})), "NetworkPolicy")  # off by default


# === monitoring that cannot go blind or page on noise ===

def promtool_scenario(groups: list[dict], scenario: dict, tmp_path) -> None:
    import yaml

    from conftest import run, tool, write_rule_file

    rules = write_rule_file(groups, tmp_path / "rules.yaml", strip_annotations=True)
    test = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [scenario]}
    path = tmp_path / "scenario.test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    p = run([tool("promtool"), "test", "rules", str(path)], timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr


def test_quiet_service_with_one_failure_does_not_page(tmp_path):
    from test_rules import BURN, slo_groups, traffic

    # 3 requests a minute, one of them INTERNAL: a third fails, at 0.05 requests/s.
    scenario = {"interval": "1m", "input_series": traffic(2, 60, {"INTERNAL": 1}),
                "alert_rule_test": [{"eval_time": t, "alertname": a, "exp_alerts": []}
                                    for t in ("10m", "30m") for a in (BURN, "SidetraceInternalFailures")]}
    promtool_scenario(slo_groups(), scenario, tmp_path)
    # the same third failing at 0.1 requests/s and above is an outage: it pages
    busy = {"interval": "1m", "input_series": traffic(4, 60, {"INTERNAL": 2}),
            "alert_rule_test": [{"eval_time": "10m", "alertname": "SidetraceInternalFailures",
                                 "exp_alerts": [{"exp_labels": {
                                     "severity": "page", "failure_category": "INTERNAL",
                                     "failure_severity": "critical", "namespace": "shop", "service": "checkout",
                                     "environment": "prod"}}]}]}
    promtool_scenario(slo_groups(), busy, tmp_path)


def test_metrics_absent_alert(tmp_path):
    from test_rules import SEL, slo_groups

    absent = {"exp_alerts": [{"exp_labels": {"severity": "ticket", "namespace": "shop", "service": "checkout"}}]}
    scenario = {"interval": "1m",
                "input_series": [{"series": f'sidetrace_build_info{{{SEL},pod="p1",version="0.1.0"}}',
                                  "values": "1x20 _x40"}],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": "SidetraceMetricsAbsent", "exp_alerts": []},
                    {"eval_time": "33m", "alertname": "SidetraceMetricsAbsent", "exp_alerts": []},  # pending
                    {"eval_time": "40m", "alertname": "SidetraceMetricsAbsent", **absent},
                ]}
    promtool_scenario(slo_groups(), scenario, tmp_path)
    off = slo_groups({"metricsAbsent": {"enabled": False}})
    assert "SidetraceMetricsAbsent" not in {r.get("alert") for g in off for r in g["rules"]}


@pytest.mark.parametrize("spelling", ["1", "1.0"])
def test_latency_sli_reads_the_bucket_as_prometheus_2_and_3_write_it(spelling, tmp_path):
    from test_rules import LAT_BURN, REQ, SEL, burn_alert, counter

    # 20 % of 1000 requests/min slower than 1 s against a 99 % objective: a latency page
    series = [counter("", 1000, 60), counter(f'le="{spelling}"', 800, 60, name=f"{REQ}_bucket")]
    scenario = {"interval": "1m", "input_series": series,
                "alert_rule_test": [{"eval_time": "10m", "alertname": LAT_BURN,
                                     "exp_alerts": [burn_alert("page", "1h", "5m", "14.4", "latency")]}],
                "promql_expr_test": [{"expr": "round(sidetrace:slo_latency_errors:ratio_rate5m * 1e6)",
                                      "eval_time": "10m",
                                      "exp_samples": [{"labels": f"{{{SEL}}}", "value": 200000}]}]}
    from test_rules import slo_groups

    promtool_scenario(slo_groups({"latency": {"threshold": 1}}), scenario, tmp_path)


# === fronting mode that works in production ===

def restricted_violations(pod: dict) -> list[str]:
    """The `restricted` Pod Security Standard (v1.30), as the API server's admission checks it."""
    out = []
    psc = pod.get("securityContext", {})
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            out.append(f"{name}: capabilities.drop must include ALL")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: capabilities.add beyond NET_BIND_SERVICE")
        if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
            out.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{name}: runAsUser 0")
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
    for v in pod.get("volumes", []):
        allowed = {"configMap", "secret", "emptyDir", "projected", "downwardAPI", "persistentVolumeClaim",
                   "csi", "ephemeral"}
        if not (set(v) - {"name"}) <= allowed:
            out.append(f"volume {v['name']}: type not allowed")
    return out


def pods_of(objs: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((o["metadata"]["name"], o["spec"]["template"]["spec"]))
        elif o["kind"] == "CronJob":
            out.append((o["metadata"]["name"], o["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return out


@pytest.mark.parametrize("values", [
    {"fronting": {"enabled": True, "app": {"image": {"repository": "ghcr.io/acme/app"}}},
     "webhook": {"enabled": True, "certManager": True}},
    {"fronting": {"enabled": True, "upstream": "http://legacy:8080"}},
], ids=["fronting-app+webhook", "fronting-upstream"])
def test_every_pod_passes_the_restricted_profile(values):
    pods = pods_of(objects(render(values)))
    assert len(pods) >= 1
    for name, pod in pods:
        assert restricted_violations(pod) == [], name


def test_example_chart_pods_pass_the_restricted_profile(example_render):
    pods = pods_of(objects(example_render))
    assert len(pods) == 2
    for name, pod in pods:
        assert restricted_violations(pod) == [], name


def test_restricted_check_finds_violations():
    bad = {"containers": [{"name": "x", "securityContext": {"privileged": True}}],
           "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}
    found = restricted_violations(bad)
    assert len(found) == 6, found


def test_fronting_app_is_probed_and_rolled_on_config_change():
    values = {"fronting": {"enabled": True, "app": {"image": {"repository": "ghcr.io/acme/app"}}}}
    objs = objects(render(values))
    (deploy,) = by_kind(objs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (app,) = pod["containers"]
    assert app["readinessProbe"]["tcpSocket"] == {"port": "app"}
    assert app["livenessProbe"]["tcpSocket"] == {"port": "app"}
    assert deploy["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "app"
    checksum = deploy["spec"]["template"]["metadata"]["annotations"]["checksum/sidetrace-config"]
    changed = objects(render({**values, "sidetrace": {"config": {"routes": [{"prefix": "/a", "name": "a"}]}}}))
    assert by_kind(changed, "Deployment")[0]["spec"]["template"]["metadata"]["annotations"][
        "checksum/sidetrace-config"] != checksum
    same = objects(render(values))
    assert by_kind(same, "Deployment")[0]["spec"]["template"]["metadata"]["annotations"][
        "checksum/sidetrace-config"] == checksum
    custom = objects(render({"fronting": {"enabled": True, "app": {
        "image": {"repository": "ghcr.io/acme/app"}, "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "app"}}}}}))
    (app,) = by_kind(custom, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert app["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert app["readinessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("values, expected", [
    ({"fronting": {"enabled": True, "autoscaling": {"enabled": True},
                   "app": {"image": {"repository": "ghcr.io/acme/app"}}}}, "set fronting.app.resources.requests.cpu"),
    ({"fronting": {"enabled": True, "autoscaling": {"enabled": True}, "upstream": "http://legacy:8080"},
      "sidetrace": {"resources": {"requests": {"cpu": None}}}}, "set sidetrace.resources.requests.cpu"),
])
def test_hpa_without_cpu_requests_is_refused(values, expected):
    assert expected in render_error(values)


def test_one_scrape_path_per_proxy():
    both = {"fronting": {"enabled": True, "upstream": "http://legacy:8080"},
            "monitoring": {"podMonitor": {"enabled": True}, "serviceMonitor": {"enabled": True}}}
    assert "counted twice" in render_error(both)
    for monitor in ("podMonitor", "serviceMonitor"):
        objs = objects(render({"fronting": {"enabled": True, "upstream": "http://legacy:8080"},
                               "monitoring": {monitor: {"enabled": True}}}))
        ann = by_kind(objs, "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]
        assert not any(k.startswith("prometheus.io/") for k in ann), (monitor, ann)
    plain = objects(render({"fronting": {"enabled": True, "upstream": "http://legacy:8080"}}))
    ann = by_kind(plain, "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"


def test_example_with_a_pod_monitor_has_no_scrape_annotations(example_render):
    objs = objects(example_render)
    assert by_kind(objs, "PodMonitor")
    for name, pod in pods_of(objs):
        owner = [o for o in objs if o["metadata"]["name"] == name][0]
        tmpl = owner["spec"]["template"] if owner["kind"] == "Deployment" else \
            owner["spec"]["jobTemplate"]["spec"]["template"]
        ann = tmpl["metadata"].get("annotations") or {}
        assert not any(k.startswith("prometheus.io/") for k in ann), (name, ann)


def dashboard_uids(rendered: dict[str, str]) -> dict[str, str]:
    import json

    out = {}
    for cm in by_kind(objects(rendered), "ConfigMap"):
        if "-dashboard-" in cm["metadata"]["name"]:
            (key, text), = cm["data"].items()
            out[key] = json.loads(text)["uid"]
    return out


def test_dashboard_uids_and_files_are_unique_per_release():
    a = dashboard_uids(render({}, release="shop"))
    b = dashboard_uids(render({}, release="billing"))
    other_ns = dashboard_uids(render({}, release="shop", namespace="eu"))
    assert len(a) == 4 and len(set(a.values())) == 4
    for x, y in ((a, b), (a, other_ns)):
        assert not set(x) & set(y), "Grafana sidecar file names collide"
        assert not set(x.values()) & set(y.values()), "uids collide"
    assert a == dashboard_uids(render({}, release="shop")), "stable across upgrades"
    assert all(len(u) <= 40 for u in a.values())


def test_dashboards_are_off_when_the_chart_is_a_dependency(example_chart):
    assert dashboard_uids(render(chart=example_chart)) == {}
    on = render({"sidetrace": {"dashboards": {"enabled": True}}}, chart=example_chart)
    assert len(dashboard_uids(on)) == 4
    assert dashboard_uids(render({"dashboards": {"enabled": False}})) == {}


# === the schema accepts what the proxy accepts ===

@pytest.mark.parametrize("sampler", ["parent_ratio", "parent_always_on", "ratio", "always_on", "always_off"])
def test_every_proxy_setting_passes_the_schema_and_the_proxy(sampler, tmp_path):
    import os

    import yaml

    from conftest import run
    from test_live import sidetrace_bin

    tracing = {"sampler": {"type": sampler, "ratio": 0.5, "keep_errors": True},
               "export": {"endpoint": "http://collector:4318", "timeout": "3s", "gzip": True,
                          "batch_size": 256, "queue_size": 4096},
               "access_log": False, "store_traces": 50}
    cfg = proxy_config(render({"sidetrace": {"config": {"tracing": tracing}}}))
    # values merge with the chart's defaults (max_per_second: 100 stays)
    assert cfg["tracing"]["sampler"] == {**tracing["sampler"], "max_per_second": 100}
    assert cfg["tracing"]["export"]["gzip"] is True and cfg["tracing"]["export"]["timeout"] == "3s"
    assert cfg["tracing"]["access_log"] is False and cfg["tracing"]["store_traces"] == 50
    path = tmp_path / "sidetrace.yaml"
    path.write_text(yaml.safe_dump(cfg))
    p = run([str(sidetrace_bin()), "check-config", "--without-files", str(path)], timeout=30,
            env={**os.environ, "SIDETRACE_UPSTREAM": "http://127.0.0.1:8080"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert f'"{sampler}"' in p.stdout, p.stdout  # the effective config names the sampler


@pytest.mark.parametrize("tracing, where", [
    ({"sampler": {"type": "sometimes"}}, "/sidetrace/config/tracing/sampler/type"),
    ({"export": {"timeout": "3 seconds"}}, "/sidetrace/config/tracing/export/timeout"),
    ({"export": {"gzip": "yes"}}, "/sidetrace/config/tracing/export/gzip"),
    ({"store_traces": 0}, "/sidetrace/config/tracing/store_traces"),
])
def test_schema_still_rejects_wrong_proxy_settings(tracing, where):
    assert where in render_error({"sidetrace": {"config": {"tracing": tracing}}})


# === selector labels that never change on upgrade ===

def selectors(values: dict) -> dict[tuple[str, str], dict]:
    """Every selector of the release's objects (Deployments, PDB, Services, NetworkPolicy), and
    the Deployments' pod labels, which must keep matching them."""
    out = {}
    for o in objects(render(values)):
        kind, name, spec = o["kind"], o["metadata"]["name"], o.get("spec", {})
        if kind == "Deployment":
            out[(kind, name)] = spec["selector"]["matchLabels"]
            labels = spec["template"]["metadata"]["labels"]
            assert spec["selector"]["matchLabels"].items() <= labels.items(), (name, labels)
        elif kind == "PodDisruptionBudget":
            out[(kind, name)] = spec["selector"]["matchLabels"]
        elif kind == "Service":
            out[(kind, name)] = spec["selector"]
        elif kind == "NetworkPolicy":
            out[(kind, name)] = spec["podSelector"]
    return out


def test_selector_labels_never_change_on_upgrade():
    """A Deployment's selector is immutable: an upgrade that changed it would fail with "field is
    immutable". Nothing but the release (and nameOverride) may move it."""
    base = {"fronting": {"enabled": True, "app": {"image": {"repository": "ghcr.io/acme/app"}},
                         "podDisruptionBudget": {"enabled": True}},
            "webhook": {"enabled": True, "certManager": True}, "networkPolicy": {"enabled": True}}
    before = selectors(base)
    assert {k for k, _ in before} == {"Deployment", "PodDisruptionBudget", "Service", "NetworkPolicy"}
    upgrades = [
        {"sidetrace": {"serviceName": "renamed"}},
        {"sidetrace": {"config": {"service": {"name": "from-config"}}}},
        {"environment": "staging"},
        {"sidetrace": {"image": {"tag": "9.9.9"}, "appPort": 9090}},
        {"fronting": {"app": {"image": {"tag": "2.0"}}, "podLabels": {"team": "payments"}, "replicas": 3}},
        {"commonLabels": {"cost-center": "42"}},
    ]
    import copy

    from conftest import deep_merge
    for change in upgrades:
        assert selectors(deep_merge(copy.deepcopy(base), change)) == before, change


# === bind addresses for IPv6-only and dual-stack clusters ===

def test_dual_stack_binds_every_listener_to_the_ipv6_any_address():
    values = {"fronting": {"enabled": True, "upstream": "http://legacy:8080"},
              "webhook": {"enabled": True, "certManager": True}}
    for dual, host in ((False, "0.0.0.0"), (True, "[::]")):
        objs = objects(render({**values, "sidetrace": {"dualStack": dual}}))
        deploys = {o["metadata"]["name"]: o for o in by_kind(objs, "Deployment")}
        (proxy,) = deploys["shop-sidetrace"]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in proxy["env"]}
        assert env["SIDETRACE_INBOUND"] == f"{host}:15080" and env["SIDETRACE_ADMIN"] == f"{host}:15090"
        assert env["SIDETRACE_UPSTREAM"] == "http://legacy:8080"
        (webhook,) = deploys["shop-sidetrace-webhook"]["spec"]["template"]["spec"]["containers"]
        assert f"--listen={host}:8443" in webhook["args"]


def test_the_proxy_bound_to_the_ipv6_any_address_serves_ipv4_and_ipv6(tmp_path):
    """The real binary with the dual-stack container's environment: check-config takes [::], and
    the listeners answer over IPv4 (as mapped addresses) and IPv6; the admin port still counts an
    IPv4 loopback peer, arriving as ::ffff:127.0.0.1, as loopback."""
    import os
    import subprocess

    import yaml

    from conftest import run
    from live import free_port, http_get, stop, wait_until
    from test_live import container_env, sidetrace_bin

    binary = sidetrace_bin()
    rendered = render({"fronting": {"enabled": True, "upstream": "http://legacy:8080"},
                       "sidetrace": {"dualStack": True}})
    (proxy,) = by_kind(objects(rendered), "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    config = tmp_path / "sidetrace.yaml"
    config.write_text(yaml.safe_dump(proxy_config(rendered)))
    up, inbound, admin = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIDETRACE_", "OTEL_", "K8S_"))}
    rendered_env = container_env(proxy, {"SIDETRACE_CONFIG": str(config)})
    assert rendered_env["SIDETRACE_INBOUND"].startswith("[::]:")
    env.update(rendered_env)
    # the rendered addresses as they are, only the ports made free
    env.update({"SIDETRACE_INBOUND": f"[::]:{inbound}", "SIDETRACE_ADMIN": f"[::]:{admin}",
                "SIDETRACE_UPSTREAM": f"http://127.0.0.1:{up}"})
    # check-config reads files, not the environment: the rendered addresses as the file's keys
    in_file = tmp_path / "listen.yaml"
    cfg = proxy_config(rendered)
    cfg["inbound"] = {**cfg.get("inbound", {}), "listen": rendered_env["SIDETRACE_INBOUND"]}
    cfg["admin"] = {**cfg.get("admin", {}), "listen": rendered_env["SIDETRACE_ADMIN"]}
    in_file.write_text(yaml.safe_dump(cfg))
    p = run([str(binary), "check-config", "--without-files", str(in_file)], timeout=30, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert '"inbound": "[::]:15080"' in p.stdout and '"admin": "[::]:15090"' in p.stdout, p.stdout
    procs = []
    try:
        procs.append(subprocess.Popen([str(binary), "echo", "--listen", f"127.0.0.1:{up}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([str(binary), *proxy["args"]], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        wait_until("admin /ready over IPv6", lambda: http_get(f"http://[::1]:{admin}/ready")[0] == 200, procs=procs)
        for host in ("127.0.0.1", "[::1]"):
            assert http_get(f"http://{host}:{admin}/ready")[0] == 200, host
            assert http_get(f"http://{host}:{inbound}/orders")[0] == 200, host
            assert http_get(f"http://{host}:{admin}/config")[0] == 200, f"{host} is loopback"
    finally:
        for proc in reversed(procs):
            stop(proc)


# === a sidecar-sized runtime ===

def test_worker_threads_are_a_value():
    for values, expected in (({}, "2"), ({"sidetrace": {"workerThreads": 4}}, "4")):
        rendered = render({**values, "fronting": {"enabled": True, "upstream": "http://legacy:8080"}})
        assert env_of(rendered, "sidetrace")["SIDETRACE_WORKER_THREADS"] == expected
    for bad in (0, 1025, "2"):
        assert "/sidetrace/workerThreads" in render_error({"sidetrace": {"workerThreads": bad}})


# === the escape hatch ===

def test_extra_container_fields_are_merged_last_and_validate():
    extra = {"terminationMessagePolicy": "FallbackToLogsOnError", "resources": {"limits": {"cpu": "1"}},
             "securityContext": {"runAsUser": 1000}}
    rendered = render({"fronting": {"enabled": True, "upstream": "http://legacy:8080"},
                       "sidetrace": {"extraContainerFields": extra}})
    from test_render import validate_core

    objs = objects(rendered)
    assert validate_core([o for o in objs if o["kind"] == "Deployment"]) == []
    (proxy,) = by_kind(objs, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert proxy["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert proxy["resources"] == {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi", "cpu": "1"}}
    assert proxy["securityContext"]["runAsUser"] == 1000 and proxy["securityContext"]["readOnlyRootFilesystem"]
    assert proxy["name"] == "sidetrace" and proxy["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert "/sidetrace/extraContainerFields" in render_error({"sidetrace": {"extraContainerFields": {"name": "x"}}})


@pytest.mark.parametrize("kube, expected", [("v1.29.0", False), ("v1.30.0", True), ("v1.36.0", True)])
def test_the_apps_prestop_sleep_only_where_kubernetes_has_the_sleep_action(tmp_path, kube, expected):
    """The sleep action of lifecycle hooks is on by default from Kubernetes 1.30; on 1.29 the API
    server would refuse the pod. `helm lint --kube-version` renders a copy of the chart with a probe
    template that fails when the fronting Deployment carries a preStop sleep."""
    import shutil

    from conftest import CHART

    chart = tmp_path / "sidetrace"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("tests", "charts"))
    # (lint logs `fail` instead of failing: the probe writes broken YAML, which lint reports)
    (chart / "templates" / "zz-probe.yaml").write_text(
        '{{- if contains "sleep:" (include (print $.Template.BasePath "/deployment.yaml") .) }}'
        'prestop-sleep: [{{- end }}\n')
    values = {"fronting": {"enabled": True, "app": {"image": {"repository": "ghcr.io/acme/app"}}}}
    report = helm().lint(str(chart), values, kube_version=kube)
    text = str(report)
    assert ("zz-probe.yaml" in text) is expected, text
    no_delay = helm().lint(str(chart), {**values, "sidetrace": {"drainDelaySeconds": 0}}, kube_version=kube)
    assert "zz-probe.yaml" not in str(no_delay), "no delay, no sleep"
