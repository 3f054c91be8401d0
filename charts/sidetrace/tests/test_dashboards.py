"""Grafana dashboards: generated from one source, valid JSON, every PromQL expression parses
(promtool check rules on a rule file holding each expression), and every metric they query is
one the proxy emits (DESIGN section 6) or one of the chart's recording rules."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import CHART, ENVIRONMENTS, by_kind, objects, prometheus_rule_groups, render, render_case, run, tool
from proxy_metrics import metric_names, series_names

DASH_DIR = CHART / "dashboards"
FILES = sorted(p.name for p in DASH_DIR.glob("*.json"))
TOKEN = "__SIDETRACE_ENVIRONMENT__"
# Grafana variables -> values that make the expression plain PromQL for parsing.
SUBSTITUTIONS = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m", "$environment": "prod",
                 "$namespace": "shop", "$service": "checkout", "$route": "orders"}


def load(name: str) -> dict:
    return json.loads((DASH_DIR / name).read_text())


def panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def expressions(dash: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    out = [(f"{p['title']}/{t['refId']}", t["expr"]) for p in panels(dash) for t in p.get("targets", [])]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_]+)\)", v["query"]["query"], re.S)
            assert m, f"variable {v['name']}: unexpected query {v['query']['query']}"
            out.append((f"variable {v['name']}", m.group(1)))
    return out


def substitute(expr: str) -> str:
    for k in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(k, SUBSTITUTIONS[k])
    assert "$" not in re.sub(r'"\$\d"', "", expr), f"unsubstituted variable in {expr}"
    return expr


def promtool_parse(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    rules = [{"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-exprs.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-exprs", "rules": rules}]}))
    return run([tool("promtool"), "check", "rules", str(path)])


def test_four_dashboards():
    assert FILES == ["red-overview.json", "self-health.json", "service-graph.json", "slo.json"]


def test_generated_files_are_up_to_date():
    p = subprocess.run([sys.executable, str(DASH_DIR / "generate.py"), "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("name", FILES)
def test_dashboard_structure(name):
    dash = load(name)
    assert dash["uid"].startswith("sidetrace-") and dash["uid"].endswith(TOKEN)
    assert dash["schemaVersion"] >= 36
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    env = variables["environment"]
    assert env["type"] == "custom" and env["query"] == "dev,staging,prod"
    assert [o["value"] for o in env["options"]] == ENVIRONMENTS
    for p in panels(dash):
        if p["type"] != "row":
            assert p["targets"], p["title"]
            assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24


@pytest.mark.parametrize("name", FILES)
def test_every_expression_parses(name, tmp_path):
    exprs = [substitute(e) for _, e in expressions(load(name))]
    assert exprs
    p = promtool_parse(exprs, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr


def test_parse_check_catches_bad_promql(tmp_path):
    assert promtool_parse(["sum(rate(http_server_request_duration_seconds_count[5m])"], tmp_path).returncode != 0


@pytest.mark.parametrize("name", FILES)
def test_every_metric_is_emitted_or_recorded(name):
    recorded = {r["record"] for g in prometheus_rule_groups(render({"slo": {"enabled": True}}))
                for r in g["rules"] if "record" in r}
    allowed = series_names() | recorded
    for where, expr in expressions(load(name)):
        names = metric_names(substitute(expr))
        assert names, f"{where}: no metric in {expr}"
        assert names <= allowed, f"{where}: {sorted(names - allowed)} not emitted by the proxy (DESIGN 6)"


def test_dashboards_cover_the_issue():
    red = json.dumps(load("red-overview.json"))
    for q in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({q}, sum by (http_route, le)" in red
    assert "sum by (failure_category)" in red
    graph = load("service-graph.json")
    assert any(p["type"] == "nodeGraph" for p in panels(graph))
    node_graph = [p for p in panels(graph) if p["type"] == "nodeGraph"][0]
    assert {t["refId"] for t in node_graph["targets"]} == {"nodes", "edges"}
    slo_text = json.dumps(load("slo.json"))
    assert "sidetrace:slo_availability:objective_ratio" in slo_text and "Error budget" in slo_text
    health = json.dumps(load("self-health.json"))
    for metric in ("sidetrace_spans_exported_total", "sidetrace_spans_dropped_total", "sidetrace_connections_open",
                   "process_resident_memory_bytes"):
        assert metric in health


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_configmaps_per_environment(env):
    cms = [o for o in by_kind(objects(render_case(f"env-{env}")), "ConfigMap") if "-dashboard-" in o["metadata"]["name"]]
    assert len(cms) == len(FILES)
    uids = set()
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        (key, text), = cm["data"].items()
        assert key.endswith(f"-{env}.json")
        assert TOKEN not in text
        dash = json.loads(text)
        assert dash["uid"].endswith(f"-{env}") and len(dash["uid"]) <= 40
        assert f"({env})" in dash["title"]
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        assert variables["environment"]["current"]["value"] == env
        # The environment's row: refresh, datasource default, p95 threshold line.
        want_refresh, want_p95 = {"dev": ("30s", 0.2), "staging": ("15s", 0.15), "prod": ("5s", 0.1)}[env]
        assert dash["refresh"] == want_refresh
        assert variables["datasource"]["current"]["value"] == f"prom-{env}"
        assert "__SIDETRACE_" not in text
        if key.endswith(f"-red-overview-{env}.json"):
            (p95,) = [p for p in panels(dash) if p["title"].startswith("p95 by route")]
            steps = p95["fieldConfig"]["defaults"]["thresholds"]["steps"]
            assert steps[-1] == {"color": "red", "value": want_p95}
        uids.add(dash["uid"])
    assert len(uids) == len(FILES)


def test_latency_panels_ask_for_exemplars():
    red = load("red-overview.json")
    latency = [p for p in panels(red)
               if p["type"] == "timeseries" and p["title"].startswith(("p50", "p90", "p95", "p99"))]
    assert len(latency) == 4
    for p in latency:
        assert all(t.get("exemplar") is True for t in p["targets"]), p["title"]
        # An exemplar opens its trace in the datasource the `traces` variable names.
        (link,) = p["fieldConfig"]["defaults"]["links"]
        assert "${traces}" in link["url"] and "${__data.fields.trace_id}" in link["url"], link
    traces = {v["name"]: v for v in red["templating"]["list"]}["traces"]
    assert traces["type"] == "datasource" and traces["query"] == "tempo"


def test_environment_settings_can_be_overridden():
    objs = objects(render({"environment": "staging",
                           "dashboards": {"environments": {"staging": {"refresh": "1m", "datasource": "thanos",
                                                                       "p95ThresholdMs": 250}}}}))
    (cm,) = [o for o in by_kind(objs, "ConfigMap") if "-dashboard-red-overview-" in o["metadata"]["name"]]
    dash = json.loads(next(iter(cm["data"].values())))
    assert dash["refresh"] == "1m"
    assert {v["name"]: v for v in dash["templating"]["list"]}["datasource"]["current"]["value"] == "thanos"
    (p95,) = [p for p in panels(dash) if p["title"].startswith("p95 by route")]
    assert p95["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 0.25
