"""Exemplars end to end: a real Prometheus with exemplar storage scrapes the proxy's /metrics in the
OpenMetrics format, and the trace ids it stores for the request-duration buckets are traces the proxy
recorded.

Starts `sidetrace echo` (the app) and `sidetrace run` (every request sampled, spans kept by the embedded
store), then Prometheus (Debian package) with `--enable-feature=exemplar-storage`, which asks for
`application/openmetrics-text`. All servers listen on free ports on 127.0.0.1; every wait is bounded;
every process started is stopped.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request

import yaml

from conftest import run, tool
from live import free_port, http_get, stop, wait_until
from test_live import sidetrace_bin


def test_prometheus_stores_exemplars_that_lead_to_the_proxys_traces(tmp_path):
    binary = sidetrace_bin()
    procs: list[subprocess.Popen] = []

    def start(name, cmd):
        log = (tmp_path / f"{name}.log").open("w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        procs.append(p)
        return p

    try:
        up, inbound, admin, prom = free_port(), free_port(), free_port(), free_port()
        echo = start("echo", [str(binary), "echo", "--listen", f"127.0.0.1:{up}"])
        config = tmp_path / "sidetrace.yaml"
        config.write_text("routes:\n  - { prefix: /api/orders, name: orders }\n"
                          "tracing:\n  sampler: { type: always_on }\n")
        proxy = start("sidetrace", [str(binary), "run", "-f", str(config), "--inbound", f"127.0.0.1:{inbound}",
                                    "--admin", f"127.0.0.1:{admin}", "--upstream", f"http://127.0.0.1:{up}"])
        wait_until("sidetrace /ready", lambda: http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200,
                   procs=[echo, proxy])

        # The Prometheus text is unchanged for a scraper that does not ask for OpenMetrics.
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert "# EOF" not in r.read().decode()

        prom_cfg = tmp_path / "prometheus.yml"
        prom_cfg.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [{"job_name": "sidetrace", "static_configs": [{"targets": [f"127.0.0.1:{admin}"]}]}],
        }))
        p = run([tool("promtool"), "check", "config", str(prom_cfg)])
        assert p.returncode == 0, p.stdout + p.stderr
        prometheus = start("prometheus", [tool("prometheus"), f"--config.file={prom_cfg}",
                                          f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                          f"--web.listen-address=127.0.0.1:{prom}",
                                          "--enable-feature=exemplar-storage"])
        base = f"http://127.0.0.1:{prom}"
        wait_until("prometheus ready", lambda: http_get(f"{base}/-/ready")[0] == 200, procs=[prometheus])

        start_s = time.time() - 5
        for i in range(30):
            status, _ = http_get(f"http://127.0.0.1:{inbound}/api/orders/{i}")
            assert status == 200
        for _ in range(5):
            http_get(f"http://127.0.0.1:{inbound}/slow?delay_ms=120")

        def exemplars():
            query = urllib.parse.urlencode({
                "query": "http_server_request_duration_seconds_bucket",
                "start": f"{start_s:.3f}", "end": f"{time.time() + 60:.3f}"})
            status, body = http_get(f"{base}/api/v1/query_exemplars?{query}")
            assert status == 200, body
            return [(s["seriesLabels"], e) for s in json.loads(body)["data"] for e in s["exemplars"]]

        wait_until("exemplars in Prometheus", lambda: len(exemplars()) >= 2, procs=[prometheus, proxy])

        # The scrape in the OpenMetrics format is healthy (Prometheus rejects the whole scrape if not).
        status, body = http_get(f"{base}/api/v1/targets")
        (target,) = json.loads(body)["data"]["activeTargets"]
        assert target["health"] == "up", target

        found = exemplars()
        routes = {labels.get("http_route") for labels, _ in found}
        assert "orders" in routes, found
        for labels, e in found:
            trace_id = e["labels"]["trace_id"]
            assert len(e["labels"]["span_id"]) == 16, e
            status, body = http_get(f"http://127.0.0.1:{admin}/debug/traces/{trace_id}")
            assert status == 200, f"exemplar {trace_id} of {labels} is not a stored trace: {body}"
            trace = json.loads(body)
            assert any(s["span_id"] == e["labels"]["span_id"] for s in trace["spans"]), trace
            # The exemplar's value is that request's duration, inside the bucket it annotates.
            assert float(e["value"]) <= float(labels["le"]) if labels["le"] != "+Inf" else True
    finally:
        for p in reversed(procs):
            stop(p)
        for log in sorted(tmp_path.glob("*.log")):
            tail = log.read_text(errors="replace")[-1500:]
            if tail:
                print(f"--- {log.name} (tail) ---\n{tail}")
