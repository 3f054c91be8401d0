"""The metrics the proxy emits on admin /metrics (DESIGN section 6), and PromQL name extraction.

The chart's rules and dashboards may only use these (or the chart's own recording rules).
test_metrics_contract.py checks this list against DESIGN.md, and test_live.py against the real
/metrics of a running sidetrace once the binary exists.
"""

from __future__ import annotations

import re

HISTOGRAMS = {
    "http_server_request_duration_seconds",
    "http_server_request_body_size_bytes",
    "http_server_response_body_size_bytes",
    "http_client_request_duration_seconds",
    "traces_service_graph_request_server_seconds",
    "traces_service_graph_request_client_seconds",
}
COUNTERS = {
    "traces_service_graph_request_total",
    "traces_service_graph_request_failed_total",
    "sidetrace_spans_exported_total",
    "sidetrace_spans_dropped_total",
    "sidetrace_export_errors_total",
    "sidetrace_config_reloads_total",
    "sidetrace_metric_overflow_total",
}
GAUGES = {
    "http_server_active_requests",
    "sidetrace_connections_open",
    "sidetrace_build_info",
}
# DESIGN lists `process_*`: the standard process collector names the dashboards use.
PROCESS = {"process_resident_memory_bytes", "process_cpu_seconds_total"}

FAMILIES = HISTOGRAMS | COUNTERS | GAUGES | PROCESS
# Beyond DESIGN section 6: what the configured filters do (docs/metrics.md, "Filter metrics"); they
# exist once a chain has the filter, so the rules never depend on them.
FILTERS = {
    "sidetrace_filter_timeouts_total",
    "sidetrace_filter_rate_limited_total",
    "sidetrace_filter_concurrency_rejected_total",
    "sidetrace_filter_retry_attempts_total",
    "sidetrace_filter_retry_budget_exhausted_total",
    "sidetrace_filter_circuit_breaker_state",
    "sidetrace_filter_circuit_breaker_transitions_total",
    "sidetrace_filter_circuit_breaker_rejected_total",
}


def series_names() -> set[str]:
    """Every sample name the proxy exposes (histograms as _bucket, _count, _sum)."""
    names = set(COUNTERS | GAUGES | PROCESS | FILTERS)
    for h in HISTOGRAMS:
        names |= {f"{h}_bucket", f"{h}_count", f"{h}_sum"}
    return names


def family_of(sample_name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if sample_name.endswith(suffix) and sample_name[: -len(suffix)] in HISTOGRAMS:
            return sample_name[: -len(suffix)]
    return sample_name


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
             "bool", "offset", "inf", "nan", "atan2", "le"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a small lexer, enough for our expressions).

    Drops string literals, label matchers in braces, grouping label lists, range/duration
    brackets and function calls, then keeps the remaining identifiers.
    """
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # string literals
    e = re.sub(r"\{[^{}]*\}", " ", e)                        # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                        # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if rest.startswith("("):                             # function or aggregation
            continue
        if word.lower() in _KEYWORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names
