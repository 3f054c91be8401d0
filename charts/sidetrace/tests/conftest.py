"""Shared helpers of the chart tests: render with the real Helm engine, locate the tools.

The Helm engine is libhelm_c from the PyPI package helm-python-sdk (Helm v4's Go SDK behind a C
ABI, loaded with ctypes): `helm template`, `helm lint` and values-schema validation without a helm
binary. scripts/test-chart.sh installs it and every other tool these tests use.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

TESTS = Path(__file__).resolve().parent
CHART = TESTS.parent
REPO = CHART.parent.parent
EXAMPLE = REPO / "charts" / "examples" / "checkout"
RELEASE = "shop"
NAMESPACE = "shop"
ENVIRONMENTS = ["dev", "staging", "prod"]
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def helm():
    import helm_python

    return helm_python


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_values(*names: str) -> dict:
    """Merge values files (relative to the chart) the way `-f a -f b` does."""
    merged: dict = {}
    for name in names:
        merged = deep_merge(merged, yaml.safe_load((CHART / name).read_text()) or {})
    return merged


def render(values: dict | None = None, chart: Path = CHART, release: str = RELEASE,
           namespace: str = NAMESPACE) -> dict[str, str]:
    """`helm template` through the Helm SDK: template path -> rendered text."""
    with helm().Chart.load(str(chart)) as c:
        return c.render(values or {}, name=release, namespace=namespace, is_install=True)


def objects(rendered: dict[str, str]) -> list[dict]:
    """Every Kubernetes object in a render (NOTES.txt excluded)."""
    out = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                out.append(doc)
    return out


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict], kind: str) -> dict:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


# The render cases: name -> values files layered on values.yaml.
CASES = {
    "default": [],
    **{f"env-{e}": [f"values-{e}.yaml"] for e in ENVIRONMENTS},
    **{f"env-{e}+fronting": ["ci/fronting-minimal-values.yaml", f"values-{e}.yaml"] for e in ENVIRONMENTS},
    "fronting-app": ["ci/fronting-app-values.yaml"],
    "fronting-upstream": ["ci/fronting-upstream-values.yaml"],
}


@lru_cache(maxsize=None)
def _render_case(name: str) -> str:
    return json.dumps(render(load_values(*CASES[name])))


def render_case(name: str) -> dict[str, str]:
    return json.loads(_render_case(name))


@pytest.fixture(scope="session")
def example_chart(tmp_path_factory) -> Path:
    """A copy of the example user chart with its file:// dependency on this chart resolved by
    `helm dependency update` (the repository's own copy is left untouched)."""
    work = tmp_path_factory.mktemp("example") / "checkout"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    chart_yaml = work / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace("file://../../sidetrace", f"file://{CHART}"))
    helm().dependency_update(str(work))
    return work


@pytest.fixture(scope="session")
def example_render(example_chart) -> dict[str, str]:
    return render(chart=example_chart)


# Measurements the tests report at the end of the run (pytest's terminal summary).
REPORTS: list[str] = []


def pytest_terminal_summary(terminalreporter):
    for line in REPORTS:
        terminalreporter.write_line(line)


def tool(name: str) -> str:
    """Path of a required tool; missing tools fail (scripts/test-chart.sh installs them)."""
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found on PATH; run scripts/test-chart.sh, which installs it")
    return path


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)


def prometheus_rule_groups(rendered: dict[str, str]) -> list[dict]:
    rules = by_kind(objects(rendered), "PrometheusRule")
    assert len(rules) == 1, "expected exactly one PrometheusRule"
    return rules[0]["spec"]["groups"]


def write_rule_file(groups: list[dict], path: Path, strip_annotations: bool = False) -> Path:
    """A Prometheus rule file (what the operator hands to Prometheus) from PrometheusRule groups."""
    groups = copy.deepcopy(groups)
    if strip_annotations:
        for g in groups:
            for r in g["rules"]:
                r.pop("annotations", None)
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path
