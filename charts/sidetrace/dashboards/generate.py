#!/usr/bin/env python3
"""Generate sidetrace's Grafana dashboards from one source.

    python3 charts/sidetrace/dashboards/generate.py          # rewrite the JSON files
    python3 charts/sidetrace/dashboards/generate.py --check  # exit 1 if they are stale

Writes red-overview.json, slo.json, service-graph.json and self-health.json next to this file.
The chart ships them as ConfigMaps for the Grafana sidecar (templates/dashboards.yaml), replacing
ENV_TOKEN with the release's `environment`: it becomes part of each uid and title (one dashboard
per environment) and the default of the `environment` variable (dev / staging / prod). The
environment's row of `dashboards.environments` fills the other tokens: REFRESH_TOKEN (30s / 15s /
5s), DATASOURCE_TOKEN (the default of the Prometheus datasource variable: prom-dev / prom-staging /
prom-prod) and P95_TOKEN (the p95 threshold line, 0.2 / 0.15 / 0.1 seconds).

Latency panels ask for exemplars: with exemplar storage on, Grafana marks the trace of a request in
the bucket it fell in, linked through the Prometheus datasource's exemplar link to Tempo or Jaeger.

Every query filters on the labels the chart's PodMonitor/ServiceMonitor relabelings add
(environment, namespace, service) and uses only metrics of DESIGN section 6 or the chart's SLO
recording rules; charts/sidetrace/tests/test_dashboards.py checks both and parses every query.
Standard library only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENV_TOKEN = "__SIDETRACE_ENVIRONMENT__"
REFRESH_TOKEN = "__SIDETRACE_REFRESH__"
DATASOURCE_TOKEN = "__SIDETRACE_DATASOURCE__"
# A number in the rendered JSON: the chart replaces it with its quotes.
P95_TOKEN = "__SIDETRACE_P95_SECONDS__"
ENVIRONMENTS = ["dev", "staging", "prod"]
DS = {"type": "prometheus", "uid": "${datasource}"}

# Opens an exemplar's trace in the tracing datasource the `traces` variable names (Tempo or Jaeger:
# both take a trace id as the query). Grafana applies a panel's links to its exemplar points too.
TRACE_LINK = {
    "title": "Open the trace (${traces})",
    "url": '/explore?left={"datasource":"${traces}","queries":[{"refId":"A","queryType":"traceql",'
           '"query":"${__data.fields.trace_id}"}],"range":{"from":"now-1h","to":"now"}}',
    "targetBlank": True,
}

# The label filter every proxy metric query carries.
F = 'environment="$environment",namespace=~"$namespace",service=~"$service"'
REQ = "http_server_request_duration_seconds"
RI = "$__rate_interval"


# === building blocks ===

def target(expr: str, legend: str = "", ref: str = "A", **extra) -> dict:
    t = {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend or "__auto"}
    t.update(extra)
    return t


class Layout:
    """Places panels left to right in a 24-column grid and numbers them."""

    def __init__(self) -> None:
        self.panels: list[dict] = []
        self.x = 0
        self.y = 0
        self.row_h = 0

    def add(self, panel: dict, w: int = 12, h: int = 8) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        panel.setdefault("datasource", DS)
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def row(self, title: str) -> None:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.panels.append({"id": len(self.panels) + 1, "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}, "panels": []})
        self.y += 1


def timeseries(title: str, targets: list[dict], unit: str = "short", description: str = "",
               thresholds: list[tuple[str, float | None]] | None = None, stack: bool = False) -> dict:
    defaults: dict = {"unit": unit, "custom": {"fillOpacity": 10, "lineWidth": 1,
                                               "stacking": {"mode": "normal" if stack else "none"}}}
    if any(t.get("exemplar") for t in targets):
        defaults["links"] = [TRACE_LINK]
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute",
                                  "steps": [{"color": c, "value": v} for c, v in thresholds]}
        defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
    return {"type": "timeseries", "title": title, "description": description, "targets": targets,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(title: str, expr: str, unit: str, thresholds: list[tuple[str, float | None]], description: str = "",
         decimals: int | None = None) -> dict:
    defaults: dict = {"unit": unit, "thresholds": {"mode": "absolute",
                                                   "steps": [{"color": c, "value": v} for c, v in thresholds]}}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"type": "stat", "title": title, "description": description,
            "targets": [target(expr, instant=True, range=False)],
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "none", "textMode": "auto"}}


def variables(extra: list[dict] | None = None) -> list[dict]:
    def query_var(name: str, label: str, expr: str) -> dict:
        return {"name": name, "label": label, "type": "query", "datasource": DS,
                "query": {"query": expr, "refId": f"{name}-var"}, "definition": expr,
                "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1}

    env_options = [{"text": e, "value": e, "selected": False} for e in ENVIRONMENTS]
    out = [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {"selected": True, "text": DATASOURCE_TOKEN, "value": DATASOURCE_TOKEN},
         "hide": 0, "refresh": 1},
        {"name": "traces", "label": "Traces (Tempo or Jaeger)", "type": "datasource",
         "query": "tempo", "regex": "", "current": {}, "hide": 0, "refresh": 1,
         "description": "Where the latency panels' exemplars open their trace. For Jaeger, set this "
                        "variable's type to jaeger in the dashboard settings."},
        {"name": "environment", "label": "Environment", "type": "custom", "query": ",".join(ENVIRONMENTS),
         "options": env_options, "current": {"selected": True, "text": ENV_TOKEN, "value": ENV_TOKEN},
         "hide": 0, "multi": False, "includeAll": False},
        query_var("namespace", "Namespace",
                  f'label_values({REQ}_count{{environment="$environment"}}, namespace)'),
        query_var("service", "Service",
                  f'label_values({REQ}_count{{environment="$environment",namespace=~"$namespace"}}, service)'),
    ]
    return out + (extra or [])


def dashboard(slug: str, title: str, description: str, layout: Layout, extra_vars: list[dict] | None = None,
              time_from: str = "now-6h") -> dict:
    return {
        "uid": f"sidetrace-{slug}-{ENV_TOKEN}",
        "title": f"sidetrace / {title} ({ENV_TOKEN})",
        "description": description,
        "tags": ["sidetrace", ENV_TOKEN],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": REFRESH_TOKEN,
        "time": {"from": time_from, "to": "now"},
        "templating": {"list": variables(extra_vars)},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["sidetrace"], "asDropdown": True, "title": "sidetrace",
                   "includeVars": True, "keepTime": True}],
        "panels": layout.panels,
    }


# === dashboards ===

def red_overview() -> dict:
    route_var = {"name": "route", "label": "Route", "type": "query", "datasource": DS,
                 "query": {"query": f'label_values({REQ}_count{{{F}}}, http_route)', "refId": "route-var"},
                 "definition": f'label_values({REQ}_count{{{F}}}, http_route)', "refresh": 2,
                 "includeAll": True, "multi": True, "allValue": ".*",
                 "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1}
    FR = F + ',http_route=~"$route"'
    lay = Layout()
    lay.row("Rate, errors, duration (inbound requests through sidetrace)")
    lay.add(stat("Requests/s", f"sum(rate({REQ}_count{{{FR}}}[{RI}]))", "reqps", [("green", None)]), w=6, h=4)
    lay.add(stat("Failed (NETWORK + INTERNAL)",
                 f'sum(rate({REQ}_count{{{FR},failure_category=~"NETWORK|INTERNAL"}}[{RI}])) '
                 f"/ sum(rate({REQ}_count{{{FR}}}[{RI}]))",
                 "percentunit", [("green", None), ("orange", 0.001), ("red", 0.01)], decimals=3), w=6, h=4)
    lay.add(stat("p99 duration", f"histogram_quantile(0.99, sum by (le) (rate({REQ}_bucket{{{FR}}}[{RI}])))",
                 "s", [("green", None), ("orange", 0.25), ("red", 1)]), w=6, h=4)
    lay.add(stat("In flight", f"sum(http_server_active_requests{{{F}}})", "short", [("green", None)]), w=6, h=4)
    lay.add(timeseries("Request rate by service", [
        target(f"sum by (service) (rate({REQ}_count{{{FR}}}[{RI}]))", "{{service}}")], "reqps"))
    lay.add(timeseries("Errors by failure category", [
        target(f'sum by (failure_category) (rate({REQ}_count{{{FR},failure_category!=""}}[{RI}]))',
               "{{failure_category}}")], "reqps",
        description="NETWORK: connect errors, resets, timeouts, 502/503/504. INTERNAL: other 5xx, proxy "
                    "errors, panics. VALIDATION: 4xx and rejected requests.", stack=True))
    lay.add(timeseries("Responses by status code", [
        target(f"sum by (http_response_status_code) (rate({REQ}_count{{{FR}}}[{RI}]))",
               "{{http_response_status_code}}")], "reqps", stack=True))
    lay.add(timeseries("Error ratio by service", [
        target(f'sum by (service) (rate({REQ}_count{{{FR},failure_category=~"NETWORK|INTERNAL"}}[{RI}])) '
               f"/ sum by (service) (rate({REQ}_count{{{FR}}}[{RI}]))", "{{service}}")], "percentunit"))
    lay.row("Latency by route")
    lay.add(timeseries("p95 by route against the environment's threshold", [
        target(f"histogram_quantile(0.95, sum by (http_route, le) (rate({REQ}_bucket{{{FR}}}[{RI}])))",
               "{{http_route}}", exemplar=True)], "s",
        description="The red line is this environment's p95 objective. Dots are exemplars: a sampled "
                    "request in that latency bucket, linked to its trace.",
        thresholds=[("green", None), ("red", P95_TOKEN)]), w=24)
    for q in ("0.5", "0.9", "0.99"):
        lay.add(timeseries(f"p{int(float(q) * 100)} by route", [
            target(f"histogram_quantile({q}, sum by (http_route, le) (rate({REQ}_bucket{{{FR}}}[{RI}])))",
                   "{{http_route}}", exemplar=True)], "s"), w=8)
    lay.row("Upstream and payloads")
    lay.add(timeseries("Upstream p99 by server address (client side of the hop)", [
        target("histogram_quantile(0.99, sum by (server_address, le) "
               f"(rate(http_client_request_duration_seconds_bucket{{{F}}}[{RI}])))", "{{server_address}}")], "s"))
    lay.add(timeseries("Request and response body size p90", [
        target("histogram_quantile(0.9, sum by (le) "
               f"(rate(http_server_request_body_size_bytes_bucket{{{F}}}[{RI}])))", "request", ref="A"),
        target("histogram_quantile(0.9, sum by (le) "
               f"(rate(http_server_response_body_size_bytes_bucket{{{F}}}[{RI}])))", "response", ref="B")],
        "bytes"))
    return dashboard("red", "RED overview", "Rate, errors by failure category and latency percentiles by route "
                     "of every request crossing sidetrace.", lay, [route_var])


def slo() -> dict:
    lay = Layout()
    for sli, title in (("availability", "Availability (not NETWORK / INTERNAL)"),
                       ("latency", "Latency (faster than the threshold)")):
        bad_now = f"sidetrace:slo_{sli}_errors:ratio_rate5m{{{F}}}"
        objective = f"sidetrace:slo_{sli}:objective_ratio{{{F}}}"
        lay.row(f"{title} SLO")
        lay.add(stat("SLI over the dashboard range",
                     f"1 - avg(avg_over_time(sidetrace:slo_{sli}_errors:ratio_rate1h{{{F}}}[$__range]))",
                     "percentunit", [("red", None), ("orange", 0.99), ("green", 0.999)], decimals=3,
                     description="Hourly error ratios averaged over the range (unweighted by traffic)."),
                 w=6, h=5)
        lay.add(stat("Objective", f"max({objective})", "percentunit", [("blue", None)], decimals=2), w=6, h=5)
        lay.add(stat("Error budget left over the range",
                     f"1 - avg(avg_over_time(sidetrace:slo_{sli}_errors:ratio_rate1h{{{F}}}[$__range])) "
                     f"/ (1 - max({objective}))",
                     "percentunit", [("red", None), ("orange", 0.25), ("green", 0.5)], decimals=1), w=6, h=5)
        lay.add(stat("Burn rate now (5m)",
                     f"max({bad_now} / on (namespace, service, environment) (1 - {objective}))",
                     "x", [("green", None), ("orange", 1), ("red", 6)], decimals=2), w=6, h=5)
        lay.add(timeseries("Burn rate per alert window (lines: 14.4x and 6x page, 3x and 1x ticket)", [
            target(f"sidetrace:slo_{sli}_errors:ratio_rate{w}{{{F}}} / on (namespace, service, environment) "
                   f"(1 - {objective})", f"{{{{service}}}} {w}", ref=chr(ord("A") + i))
            for i, w in enumerate(["5m", "30m", "1h", "6h", "1d", "3d"])], "x",
            thresholds=[("green", None), ("yellow", 1), ("orange", 3), ("red", 6), ("dark-red", 14.4)]), w=16)
        lay.add(timeseries("Error ratio (1 - SLI), 1h", [
            target(f"sidetrace:slo_{sli}_errors:ratio_rate1h{{{F}}}", "{{service}}")], "percentunit"), w=8)
    return dashboard("slo", "SLOs and error budget", "Availability and latency SLIs recorded by the chart's "
                     "PrometheusRule, error budget left and burn rates of the multi-window alerts.", lay,
                     time_from="now-7d")


def service_graph() -> dict:
    SG = "traces_service_graph_request"
    E = 'environment="$environment"'
    lay = Layout()
    lay.row("Service graph (calls seen by sidetrace spans)")
    graph = {
        "type": "nodeGraph", "title": "Service graph",
        "description": "Nodes are services, edges are calls (client -> server) with their rate over the range.",
        "targets": [
            # Nodes (fields id, title, mainstat): every server with the rate it serves, then every
            # service seen only as a client, with 0. `or` matches on {id, title}, so a service that
            # is both appears once.
            target(f'sum by (id, title) (label_replace(label_replace(rate({SG}_total{{{E}}}[$__range]), '
                   f'"id", "$1", "server", "(.*)"), "title", "$1", "server", "(.*)")) '
                   f'or sum by (id, title) (label_replace(label_replace(rate({SG}_total{{{E}}}[$__range]), '
                   f'"id", "$1", "client", "(.*)"), "title", "$1", "client", "(.*)")) * 0',
                   "", ref="nodes", format="table", instant=True, range=False),
            # Edges (fields id, source, target, mainstat) as the node graph panel expects.
            target(f'label_replace(label_replace(label_join(sum by (client, server) (rate({SG}_total{{{E}}}[$__range])), '
                   f'"id", "->", "client", "server"), "source", "$1", "client", "(.*)"), "target", "$1", "server", "(.*)")',
                   "", ref="edges", format="table", instant=True, range=False),
        ],
        "transformations": [
            {"id": "organize", "options": {"excludeByName": {"Time": True, "client": True, "server": True},
                                           "renameByName": {"Value #nodes": "mainstat", "Value #edges": "mainstat"}}},
        ],
        "fieldConfig": {"defaults": {"unit": "reqps"}, "overrides": []},
        "options": {"nodes": {"mainStatUnit": "reqps"}, "edges": {"mainStatUnit": "reqps"}},
    }
    lay.add(graph, w=24, h=14)
    lay.add(timeseries("Calls/s per edge", [
        target(f"sum by (client, server) (rate({SG}_total{{{E}}}[{RI}]))", "{{client}} -> {{server}}")], "reqps"))
    lay.add(timeseries("Failed calls per edge", [
        target(f"sum by (client, server) (rate({SG}_failed_total{{{E}}}[{RI}])) "
               f"/ sum by (client, server) (rate({SG}_total{{{E}}}[{RI}]))", "{{client}} -> {{server}}")],
        "percentunit"))
    lay.add(timeseries("Server-side p95 per edge", [
        target(f"histogram_quantile(0.95, sum by (client, server, le) (rate({SG}_server_seconds_bucket{{{E}}}[{RI}])))",
               "{{client}} -> {{server}}")], "s"))
    lay.add(timeseries("Client-side p95 per edge (includes the network)", [
        target(f"histogram_quantile(0.95, sum by (client, server, le) (rate({SG}_client_seconds_bucket{{{E}}}[{RI}])))",
               "{{client}} -> {{server}}")], "s"))
    return dashboard("service-graph", "Service graph", "Who calls whom, how often, how slowly and how often "
                     "it fails, from the traces_service_graph_* metrics.", lay)


def self_health() -> dict:
    lay = Layout()
    lay.row("Span pipeline")
    lay.add(timeseries("Spans exported/s", [
        target(f"sum by (pod) (rate(sidetrace_spans_exported_total{{{F}}}[{RI}]))", "{{pod}}")], "short"))
    lay.add(timeseries("Spans dropped/s by reason (alert: SidetraceSpansDropped)", [
        target(f"sum by (reason) (rate(sidetrace_spans_dropped_total{{{F}}}[{RI}]))", "{{reason}}")], "short",
        thresholds=[("green", None), ("red", 0.0001)]))
    lay.add(timeseries("Export errors/s", [
        target(f"sum by (pod) (rate(sidetrace_export_errors_total{{{F}}}[{RI}]))", "{{pod}}")], "short"))
    lay.add(timeseries("Metric series overflow/s (cardinality guard)", [
        target(f"sum by (pod) (rate(sidetrace_metric_overflow_total{{{F}}}[{RI}]))", "{{pod}}")], "short"))
    lay.row("Filters (timeouts, limits, retries, circuit breakers)")
    lay.add(timeseries("Requests the filters acted on /s", [
        target(f"sum by (filter) (rate(sidetrace_filter_timeouts_total{{{F}}}[{RI}]))", "timeout {{filter}}",
               ref="A"),
        target(f"sum by (filter) (rate(sidetrace_filter_rate_limited_total{{{F}}}[{RI}]))", "429 {{filter}}",
               ref="B"),
        target(f"sum by (filter) (rate(sidetrace_filter_concurrency_rejected_total{{{F}}}[{RI}]))",
               "shed {{filter}}", ref="C"),
        target(f"sum by (filter) (rate(sidetrace_filter_circuit_breaker_rejected_total{{{F}}}[{RI}]))",
               "breaker open {{filter}}", ref="D")], "reqps"), w=8)
    lay.add(timeseries("Retries /s, and retries the budget refused", [
        target(f"sum by (filter) (rate(sidetrace_filter_retry_attempts_total{{{F}}}[{RI}]))", "sent {{filter}}",
               ref="A"),
        target(f"sum by (filter) (rate(sidetrace_filter_retry_budget_exhausted_total{{{F}}}[{RI}]))",
               "refused {{filter}}", ref="B")], "short"), w=8)
    lay.add(timeseries("Circuit breakers open (2), probing (1), closed (0)", [
        target(f"max by (pod, filter) (sidetrace_filter_circuit_breaker_state{{{F}}})", "{{pod}} {{filter}}")],
        "short", thresholds=[("green", None), ("orange", 1), ("red", 2)]), w=8)
    lay.row("Process")
    lay.add(timeseries("Open connections", [
        target(f"sum by (pod) (sidetrace_connections_open{{{F}}})", "{{pod}}")], "short"), w=8)
    lay.add(timeseries("Resident memory (target: under 20 MB)", [
        target(f"max by (pod) (process_resident_memory_bytes{{{F}}})", "{{pod}}")], "bytes",
        thresholds=[("green", None), ("orange", 20 * 1024 * 1024)]), w=8)
    lay.add(timeseries("CPU", [
        target(f"sum by (pod) (rate(process_cpu_seconds_total{{{F}}}[{RI}]))", "{{pod}}")], "percentunit"), w=8)
    lay.add(timeseries("Config reloads by result", [
        target(f"sum by (result) (increase(sidetrace_config_reloads_total{{{F}}}[{RI}]))", "{{result}}")], "short"))
    versions = {"type": "table", "title": "Versions running",
                "targets": [target(f"count by (version) (sidetrace_build_info{{{F}}})", "", format="table",
                                   instant=True, range=False)],
                "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                                   "renameByName": {"Value": "pods"}}}],
                "fieldConfig": {"defaults": {}, "overrides": []}, "options": {"showHeader": True}}
    lay.add(versions)
    return dashboard("self-health", "Self health", "The proxy itself: span export, drops, connections, memory, "
                     "CPU, config reloads and versions.", lay)


DASHBOARDS = {
    "red-overview.json": red_overview,
    "slo.json": slo,
    "service-graph.json": service_graph,
    "self-health.json": self_health,
}


def render() -> dict[str, str]:
    return {name: json.dumps(fn(), indent=2, sort_keys=True) + "\n" for name, fn in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, text in render().items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale dashboards (run {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
