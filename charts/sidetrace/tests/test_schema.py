"""values.schema.json rejects typos and wrong types; templates reject impossible combinations.

Each case renders through the Helm engine (which validates values against the schema, as
`helm install` does) and checks that the error names the offending key and what is wrong.
"""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import CHART, helm, load_values, objects, render

SCHEMA_CASES = {
    "typo at top level": ({"enviroment": "prod"}, ["additional properties 'enviroment' not allowed"]),
    "typo in sidetrace": ({"sidetrace": {"imagee": {"repository": "x"}}}, ["/sidetrace", "imagee", "not allowed"]),
    "unknown environment": ({"environment": "qa"}, ["/environment", "dev", "staging", "prod"]),
    "replicas as string": ({"fronting": {"replicas": "3"}}, ["/fronting/replicas", "integer"]),
    "port out of range": ({"sidetrace": {"ports": {"admin": 70000}}}, ["/sidetrace/ports/admin", "want 65,535"]),
    "bad upstream protocol": ({"sidetrace": {"upstreamProtocol": "http2"}}, ["/sidetrace/upstreamProtocol"]),
    "bad log format": ({"sidetrace": {"log": {"format": "xml"}}}, ["/sidetrace/log/format"]),
    "config key not in DESIGN": ({"sidetrace": {"config": {"tracing": {"sampler": {"rate": 0.1}}}}},
                                 ["/sidetrace/config/tracing/sampler", "rate", "not allowed"]),
    "unknown filter": ({"sidetrace": {"config": {"filters": [{"retries": {"attempts": 2}}]}}},
                       ["/sidetrace/config/filters/0", "retries", "not allowed"]),
    "bad duration": ({"sidetrace": {"config": {"filters": [{"timeout": {"request": "5 seconds"}}]}}},
                     ["/sidetrace/config/filters/0/timeout/request"]),
    "bare on key (YAML 1.1 boolean)": ({"sidetrace": {"config": {"filters": [{"retry": {True: ["connect_error"]}}]}}},
                                       ["/sidetrace/config/filters/0/retry", "true", "not allowed"]),
    "sampler ratio above 1": ({"sidetrace": {"config": {"tracing": {"sampler": {"ratio": 1.5}}}}},
                              ["/sidetrace/config/tracing/sampler/ratio"]),
    "unknown admin endpoint group": ({"sidetrace": {"config": {"admin": {"expose": ["metrics"]}}}},
                                     ["/sidetrace/config/admin/expose/0"]),
    "admin listen set in the config": ({"sidetrace": {"config": {"admin": {"listen": "0.0.0.0:1"}}}},
                                       ["/sidetrace/config/admin", "listen", "not allowed"]),
    "objective of 100 %": ({"slo": {"availability": {"objective": 100}}}, ["/slo/availability/objective"]),
    "unknown severity": ({"slo": {"severities": {"page": "sms"}}}, ["/slo/severities/page", "page", "ticket", "info"]),
    "bad scrape interval": ({"monitoring": {"podMonitor": {"interval": "30 seconds"}}},
                            ["/monitoring/podMonitor/interval"]),
    "enabled as string": ({"slo": {"enabled": "yes"}}, ["/slo/enabled", "boolean"]),
    "unknown metrics temporality": ({"sidetrace": {"config": {"metrics": {"export": {"temporality": "both"}}}}},
                                    ["/sidetrace/config/metrics/export/temporality"]),
    "unknown filter in a route": ({"sidetrace": {"config": {"routes": [
        {"prefix": "/a", "name": "a", "filters": [{"retries": {"attempts": 2}}]}]}}},
        ["/sidetrace/config/routes/0/filters/0", "retries", "not allowed"]),
    "max_body without a unit it knows": ({"sidetrace": {"config": {"filters": [{"max_body": {"bytes": "1mib"}}]}}},
                                         ["/sidetrace/config/filters/0/max_body/bytes"]),
    "route method not a method": ({"sidetrace": {"config": {"routes": [
        {"prefix": "/a", "name": "a", "method": "GET HEAD"}]}}}, ["/sidetrace/config/routes/0/method"]),
    "metrics push interval in ms": ({"sidetrace": {"config": {"metrics": {"export": {"interval": 30000}}}}},
                                    ["/sidetrace/config/metrics/export/interval"]),
}


def render_error(values: dict) -> str:
    errors = helm().errors
    with pytest.raises((errors.HelmValuesError, errors.HelmRenderError)) as info:
        render(values)
    return str(info.value)


@pytest.mark.parametrize("name", sorted(SCHEMA_CASES))
def test_schema_rejects(name):
    values, expected = SCHEMA_CASES[name]
    message = render_error(values)  # a True key is sent as "true", as Helm's YAML 1.1 parser makes it
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize("values, expected", [
    ({"slo": {"enabled": True, "latency": {"threshold": 0.3}}}, "slo.latency.threshold 0.3 is not one of the histogram buckets"),
    ({"fronting": {"enabled": True}}, "fronting.enabled needs fronting.app.image.repository"),
    ({"fronting": {"enabled": True, "upstream": "http://legacy.internal:8080", "app": {"image": {"repository": "x"}}}},
     "not both"),
    ({"monitoring": {"serviceMonitor": {"enabled": True}}}, "monitoring.serviceMonitor needs fronting.enabled"),
    ({"fronting": {"enabled": True, "upstream": "http://a:1", "autoscaling": {"enabled": True, "minReplicas": 5,
                                                                           "maxReplicas": 2}}},
     "minReplicas must not exceed maxReplicas"),
])
def test_templates_reject_impossible_combinations(values, expected):
    assert expected in render_error(values)


@pytest.mark.parametrize("files", [[], ["values-dev.yaml"], ["values-staging.yaml"], ["values-prod.yaml"],
                                   ["ci/fronting-app-values.yaml"], ["ci/fronting-upstream-values.yaml"]])
def test_shipped_values_pass_the_schema(files):
    with helm().Chart.load(str(CHART)) as chart:
        chart.validate_schema(load_values(*files))


def test_schema_accepts_the_metrics_push_block():
    """metrics.export (the OTLP push of /metrics) with every key the proxy reads."""
    values = {"sidetrace": {"config": {"metrics": {"export": {
        "endpoint": "http://otel-collector:4318", "protocol": "http/protobuf", "timeout": "10s", "gzip": True,
        "interval": "30s", "temporality": "delta"}}}}}
    with helm().Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
    (cm,) = [o for o in objects(render(values))
             if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config")]
    config = yaml.safe_load(cm["data"]["sidetrace.yaml"])
    assert config["metrics"]["export"]["interval"] == "30s"
    assert config["metrics"]["export"]["temporality"] == "delta"


def test_schema_accepts_routes_with_their_own_chains():
    """Per-route policy as the proxy reads it, and the rendered config passes check-config."""
    routes = [
        {"prefix": "/checkout", "name": "checkout", "method": "POST", "filters": [{"timeout": {"request": "2s"}}]},
        {"prefix": "/catalog", "name": "catalog", "method": ["GET", "HEAD"], "host": "*.example.com",
         "inherit": True, "filters": [{"retry": {"attempts": 3, "on": ["connect_error", 503]}}]},
        {"prefix": "/healthz", "name": "health", "sample": "never", "filters": []},
    ]
    values = {"sidetrace": {"config": {"filters": [{"rate_limit": {"per_second": 100}}, {"max_body": {"bytes": "1MiB"}}],
                                       "routes": routes}}}
    with helm().Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
    (cm,) = [o for o in objects(render(values))
             if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config")]
    config = yaml.safe_load(cm["data"]["sidetrace.yaml"])
    assert config["routes"] == routes


def test_every_values_key_is_documented():
    """Every leaf key of values.yaml has a comment right above it, or sits inside a mapping whose
    key has one (resources, securityContext: Kubernetes data documented as a whole). Mapping keys
    are documented by their leaves; sidetrace.config is a proxy config file (DESIGN section 4)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str, bool]] = []
    undocumented = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("-") or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = stripped.split(":", 1)[0]
        above = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        inherited = any(commented for _, _, commented in stack)
        stack.append((indent, key, above.startswith("#")))
        path = [k for _, k, _ in stack]
        if stripped.endswith(":") or inherited or path[:2] == ["sidetrace", "config"]:
            continue
        if not above.startswith("#"):
            undocumented.append(".".join(path))
    assert undocumented == []


def test_schema_closes_every_object():
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                if node.get("additionalProperties") is not False:
                    open_objects.append(path)
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")

    walk(schema, "")
    assert open_objects == []
