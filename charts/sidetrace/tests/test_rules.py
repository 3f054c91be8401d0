"""The PrometheusRule: promtool check rules, and promtool test rules with synthetic series.

The rendered PrometheusRule groups are written as a Prometheus rule file (what the operator
mounts into Prometheus). Unit tests strip the annotations (their text embeds $value; the
templates are parsed by `promtool check rules` instead) and feed series in the shape the proxy
exports after the PodMonitor relabelings (namespace, service, environment labels).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import CASES, NAMESPACE, load_values, prometheus_rule_groups, render, render_case, run, tool, \
    write_rule_file
from proxy_metrics import metric_names, series_names

SERVICE = "checkout"
SEL = f'namespace="{NAMESPACE}",service="{SERVICE}",environment="prod"'
REQ = "http_server_request_duration_seconds"
WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
BURN = "SidetraceAvailabilityErrorBudgetBurn"
LAT_BURN = "SidetraceLatencyErrorBudgetBurn"


def slo_groups(extra: dict | None = None) -> list[dict]:
    values = {"sidetrace": {"serviceName": SERVICE}, "slo": {"enabled": True}}
    if extra:
        values["slo"].update(extra)
    return prometheus_rule_groups(render(values))


def all_rules(groups):
    return [r for g in groups for r in g["rules"]]


# === static checks ===

@pytest.mark.parametrize("case", [c for c in sorted(CASES) if load_values(*CASES[c]).get("slo", {}).get("enabled")])
def test_promtool_check_rules(case, tmp_path):
    path = write_rule_file(prometheus_rule_groups(render_case(case)), tmp_path / "rules.yaml")
    p = run([tool("promtool"), "check", "rules", str(path)])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def test_recording_rules_cover_every_window_and_sli():
    records = {r["record"] for r in all_rules(slo_groups()) if "record" in r}
    for w in WINDOWS:
        assert f"sidetrace:slo_availability_errors:ratio_rate{w}" in records
        assert f"sidetrace:slo_latency_errors:ratio_rate{w}" in records


def test_alert_tiers_and_runbooks():
    alerts = [r for r in all_rules(slo_groups()) if "alert" in r]
    tiers = sorted((a["alert"], a["labels"]["long_window"], a["labels"]["short_window"], a["labels"]["burn_rate"],
                    a["labels"]["severity"]) for a in alerts if "long_window" in a["labels"])
    expected = []
    for name in (BURN, LAT_BURN):
        expected += [(name, "1h", "5m", "14.4", "page"), (name, "6h", "30m", "6", "page"),
                     (name, "1d", "2h", "3", "ticket"), (name, "3d", "6h", "1", "ticket")]
    assert tiers == sorted(expected)
    by_name = {a["alert"]: a for a in alerts}
    assert by_name["SidetraceNetworkFailures"]["labels"]["failure_severity"] == "high"
    assert by_name["SidetraceInternalFailures"]["labels"]["failure_severity"] == "critical"
    assert by_name["SidetraceValidationFailures"]["labels"]["failure_severity"] == "medium"
    assert "SidetraceSpansDropped" in by_name
    runbooks = (Path(__file__).resolve().parents[3] / "docs" / "runbooks.md").read_text()
    anchors = {re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
               for h in re.findall(r"^#+\s+(.+)$", runbooks, re.M)}
    for a in alerts:
        url = a["annotations"]["runbook_url"]
        assert url.split("#")[0].endswith("docs/runbooks.md")
        assert url.split("#")[1] in anchors, f"{a['alert']}: no heading for #{url.split('#')[1]} in docs/runbooks.md"
        assert a["annotations"]["summary"] and a["annotations"]["description"]


def test_rules_use_only_emitted_metrics():
    emitted = series_names()
    groups = slo_groups()
    recorded = {r["record"] for r in all_rules(groups) if "record" in r}
    for r in all_rules(groups):
        for name in metric_names(r["expr"]):
            assert name in emitted or name in recorded, f"{name} in {r.get('record') or r.get('alert')}"
    # the latency SLI reads a bucket the proxy has by default
    lat = [r for r in all_rules(groups) if r.get("record") == "sidetrace:slo_latency_errors:ratio_rate5m"][0]
    assert 'le="0.25"' in lat["expr"]


# === promtool test rules: synthetic series that must and must not fire ===

def counter(labels: str, per_min: float, minutes: int, name: str = f"{REQ}_count") -> dict:
    return {"series": f"{name}{{{SEL}{',' + labels if labels else ''}}}", "values": f"0+{per_min:g}x{minutes}"}


def traffic(ok_per_min: float, minutes: int, bad: dict[str, float] | None = None,
            fast_share: float = 1.0) -> list[dict]:
    """Request counters (and the le=0.25 bucket) of one service: ok requests without
    failure_category, failed ones with it; fast_share of every kind is under 0.25 s."""
    series = [counter("", ok_per_min, minutes),
              counter('le="0.25"', ok_per_min * fast_share, minutes, name=f"{REQ}_bucket")]
    for category, per_min in (bad or {}).items():
        series.append(counter(f'failure_category="{category}"', per_min, minutes))
        series.append(counter(f'failure_category="{category}",le="0.25"', per_min * fast_share, minutes,
                              name=f"{REQ}_bucket"))
    return series


def burn_alert(severity: str, long: str, short: str, factor: str, slo: str = "availability") -> dict:
    return {"exp_labels": {"severity": severity, "slo": slo, "long_window": long, "short_window": short,
                           "burn_rate": factor, "namespace": NAMESPACE, "service": SERVICE,
                           "environment": "prod"}}


PAGE_FAST = burn_alert("page", "1h", "5m", "14.4")
PAGE_SLOW = burn_alert("page", "6h", "30m", "6")
TICKET_1D = burn_alert("ticket", "1d", "2h", "3")
TICKET_3D = burn_alert("ticket", "3d", "6h", "1")

SCENARIOS = {
    # 2 % errors = 20x the 0.1 % budget: the fast page fires within minutes ("for: 2m").
    "two-percent-errors-page": {
        "interval": "1m",
        "input_series": traffic(98, 240, {"NETWORK": 2}),
        "alert_rule_test": [
            {"eval_time": "2m", "alertname": BURN, "exp_alerts": []},           # pending
            {"eval_time": "5m", "alertname": BURN, "exp_alerts": [PAGE_FAST]},
            {"eval_time": "20m", "alertname": BURN, "exp_alerts": [PAGE_FAST, PAGE_SLOW]},
            {"eval_time": "20m", "alertname": "SidetraceNetworkFailures", "exp_alerts": []},  # 2 % < 5 %
            {"eval_time": "20m", "alertname": LAT_BURN, "exp_alerts": []},
        ],
        "promql_expr_test": [
            # promtool 2.42 compares floats exactly: compare parts per million
            {"expr": "round(sidetrace:slo_availability_errors:ratio_rate5m * 1e6)", "eval_time": "10m",
             "exp_samples": [{"labels": f"{{{SEL}}}", "value": 20000}]},
            {"expr": "sidetrace:slo_latency_errors:ratio_rate1h", "eval_time": "10m",
             "exp_samples": [{"labels": f"sidetrace:slo_latency_errors:ratio_rate1h{{{SEL}}}", "value": 0}]},
        ],
    },
    # 0.05 % errors = half the budget: nothing fires, not even the 1x ticket over 3 days.
    "half-budget-fires-nothing": {
        "evaluation_interval": "5m",   # 3.5 days of rule evaluations; 1m would take a minute
        "interval": "5m",
        "input_series": traffic(9995 * 5, 1000, {"NETWORK": 5 * 5}),
        "alert_rule_test": [
            {"eval_time": t, "alertname": name, "exp_alerts": []}
            for t in ("1h", "7h", "1d", "3d", "3d12h")
            for name in (BURN, LAT_BURN, "SidetraceNetworkFailures", "SidetraceInternalFailures")
        ],
        "promql_expr_test": [
            {"expr": "round(sidetrace:slo_availability_errors:ratio_rate3d * 1e6)", "eval_time": "3d12h",
             "exp_samples": [{"labels": f"{{{SEL}}}", "value": 500}]},
        ],
    },
    # 0.4 % errors = 4x: above the 3x and 1x ticket tiers, below the 6x and 14.4x pages.
    "slow-burn-ticket-only": {
        "interval": "1m",
        "input_series": traffic(996, 300, {"INTERNAL": 4}),
        "alert_rule_test": [
            {"eval_time": "50m", "alertname": BURN, "exp_alerts": []},          # tickets still pending
            {"eval_time": "3h30m", "alertname": BURN, "exp_alerts": [TICKET_1D, TICKET_3D]},
            {"eval_time": "3h30m", "alertname": "SidetraceInternalFailures", "exp_alerts": []},  # 0.4 % < 5 %
        ],
    },
    # No errors at all: the error ratio is 0 (recorded, not absent), nothing fires.
    "healthy": {
        "interval": "1m",
        "input_series": traffic(1000, 120),
        "alert_rule_test": [{"eval_time": "1h", "alertname": n, "exp_alerts": []} for n in (BURN, LAT_BURN)],
        "promql_expr_test": [
            {"expr": "sidetrace:slo_availability_errors:ratio_rate30m", "eval_time": "1h",
             "exp_samples": [{"labels": f"sidetrace:slo_availability_errors:ratio_rate30m{{{SEL}}}", "value": 0}]},
            {"expr": "round(sidetrace:slo_availability:objective_ratio * 1e6)", "eval_time": "1h",
             "exp_samples": [{"labels": f"{{{SEL}}}", "value": 999000}]},
        ],
    },
    # VALIDATION (4xx) failures are the client's: they page nobody and burn no availability budget.
    "validation-is-not-unavailability": {
        "interval": "1m",
        "input_series": traffic(700, 120, {"VALIDATION": 300}),
        "alert_rule_test": [
            {"eval_time": "1h", "alertname": BURN, "exp_alerts": []},
            {"eval_time": "1h", "alertname": "SidetraceValidationFailures", "exp_alerts": [{"exp_labels": {
                "severity": "info", "failure_category": "VALIDATION", "failure_severity": "medium",
                "namespace": NAMESPACE, "service": SERVICE, "environment": "prod"}}]},
        ],
    },
    # 10 % INTERNAL: pages both as a budget burn and as the critical category.
    "internal-errors-critical": {
        "interval": "1m",
        "input_series": traffic(90, 60, {"INTERNAL": 10}),
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "SidetraceInternalFailures", "exp_alerts": [{"exp_labels": {
                "severity": "page", "failure_category": "INTERNAL", "failure_severity": "critical",
                "namespace": NAMESPACE, "service": SERVICE, "environment": "prod"}}]},
            {"eval_time": "10m", "alertname": BURN, "exp_alerts": [PAGE_FAST]},
        ],
    },
    # 12 % NETWORK: the high-severity category alert opens a ticket after 10 minutes.
    "network-errors-high": {
        "interval": "1m",
        "input_series": traffic(88, 60, {"NETWORK": 12}),
        "alert_rule_test": [
            {"eval_time": "8m", "alertname": "SidetraceNetworkFailures", "exp_alerts": []},
            {"eval_time": "15m", "alertname": "SidetraceNetworkFailures", "exp_alerts": [{"exp_labels": {
                "severity": "ticket", "failure_category": "NETWORK", "failure_severity": "high",
                "namespace": NAMESPACE, "service": SERVICE, "environment": "prod"}}]},
        ],
    },
    # 20 % of requests slower than 0.25 s against a 99 % latency objective: 20x, a latency page.
    "slow-requests-latency-page": {
        "interval": "1m",
        "input_series": traffic(1000, 60, fast_share=0.8),
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": LAT_BURN, "exp_alerts": [burn_alert("page", "1h", "5m", "14.4", "latency")]},
            {"eval_time": "10m", "alertname": BURN, "exp_alerts": []},
        ],
    },
    # Spans dropped for 15 minutes: a ticket (requests are unaffected).
    "spans-dropped": {
        "interval": "1m",
        "input_series": traffic(100, 60) + [
            {"series": f'sidetrace_spans_dropped_total{{{SEL},pod="checkout-7d9f",reason="queue_full"}}',
             "values": "0+50x60"},
            {"series": f'sidetrace_spans_dropped_total{{{SEL},pod="checkout-5c2a",reason="queue_full"}}',
             "values": "0+0x60"},
        ],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "SidetraceSpansDropped", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "SidetraceSpansDropped", "exp_alerts": [{"exp_labels": {
                "severity": "ticket", "pod": "checkout-7d9f", "reason": "queue_full",
                "namespace": NAMESPACE, "service": SERVICE, "environment": "prod"}}]},
        ],
    },
}


@pytest.fixture(scope="module")
def rule_file(tmp_path_factory) -> Path:
    return write_rule_file(slo_groups(), tmp_path_factory.mktemp("rules") / "rules.yaml", strip_annotations=True)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_promtool_unit(name, rule_file, tmp_path):
    scenario = dict(SCENARIOS[name])
    test = {"rule_files": [str(rule_file)], "evaluation_interval": scenario.pop("evaluation_interval", "1m"),
            "tests": [scenario]}
    path = tmp_path / f"{name}.test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    p = run([tool("promtool"), "test", "rules", str(path)], timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout + p.stderr


def test_promtool_unit_catches_a_wrong_expectation(rule_file, tmp_path):
    """A scenario with the page alert expected at 0.05 % errors must fail: the tests can fail."""
    wrong = {"interval": "1m", "input_series": traffic(9995, 30, {"NETWORK": 5}),
             "alert_rule_test": [{"eval_time": "20m", "alertname": BURN, "exp_alerts": [PAGE_FAST]}]}
    path = tmp_path / "wrong.test.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [str(rule_file)], "evaluation_interval": "1m",
                                    "tests": [wrong]}, sort_keys=False))
    p = run([tool("promtool"), "test", "rules", str(path)])
    assert p.returncode != 0 and "FAILED" in p.stdout + p.stderr
