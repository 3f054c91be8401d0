"""The chart's list of proxy metrics (proxy_metrics.py) is DESIGN section 6, no more, no less.

The rules and dashboards are checked against that list (test_rules.py, test_dashboards.py) and
against a running proxy (test_live.py); this test keeps the list itself honest.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import CI, REPO
from proxy_metrics import COUNTERS, FAMILIES, GAUGES, HISTOGRAMS, PROCESS, metric_names


def design_section_6() -> str:
    for candidate in (REPO.parent / "shared" / "DESIGN.md", Path("/work/shared/DESIGN.md")):
        if candidate.is_file():
            text = candidate.read_text()
            m = re.search(r"^## 6\..*?(?=^## 7\.)", text, re.M | re.S)
            assert m, "DESIGN.md has no section 6"
            return m.group(0)
    if CI:
        pytest.fail("DESIGN.md not found beside the repository (../shared/DESIGN.md)")
    pytest.skip("DESIGN.md not found beside the repository")


def test_catalog_matches_design_section_6():
    section = design_section_6()
    named = set()
    for token in re.findall(r"`([a-z_]+)(?:\{[^`]*\})?`", section):
        if token.endswith("_") or "_" not in token:
            continue
        if re.fullmatch(r"(http|traces|sidetrace)_[a-z_]+", token):
            named.add(token)
    # label names and the like that the regex also catches
    labels = {"http_request_method", "http_response_status_code", "http_route", "network_protocol_version",
              "error_type", "failure_category", "rpc_grpc_status_code", "server_address", "url_scheme",
              "connection_type"}
    named -= labels
    assert named == (HISTOGRAMS | COUNTERS | GAUGES), (
        f"only in DESIGN: {sorted(named - FAMILIES)}; only in the chart's list: {sorted(FAMILIES - PROCESS - named)}")
    assert "`process_*`" in section and all(p.startswith("process_") for p in PROCESS)


@pytest.mark.parametrize("expr, names", [
    ('sum by (le) (rate(a_bucket{x="y"}[5m]))', {"a_bucket"}),
    ("b_total / on (namespace) group_left() (1 - c:d:e)", {"b_total", "c:d:e"}),
    ('label_replace(sum by (server) (rate(t_total[1h])), "id", "$1", "server", "(.*)")', {"t_total"}),
    ("histogram_quantile(0.99, sum by (route, le) (rate(h_bucket[5m]))) > 14.4 * (100 - 99.9) / 100", {"h_bucket"}),
    ("vector(99.9 / 100)", set()),
])
def test_metric_name_extraction(expr, names):
    assert metric_names(expr) == names
