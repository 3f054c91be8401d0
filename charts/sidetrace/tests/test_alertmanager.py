"""The example Alertmanager config: amtool check-config, routing per severity, and inhibition of
tickets while a page fires, checked on a real Alertmanager (Debian's prometheus-alertmanager) on
127.0.0.1 whose receivers are swapped for a local webhook (nothing leaves the machine)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from conftest import CHART, by_kind, objects, render_case, run, tool
from live import free_port, http_get, stop, wait_until

CONFIG = CHART / "files" / "alertmanager.yaml"


def amtool_check(path: Path):
    p = run([tool("amtool"), "check-config", str(path)])
    assert p.returncode == 0 and "SUCCESS" in p.stdout, p.stdout + p.stderr


def test_check_config_file():
    amtool_check(CONFIG)


def test_check_config_rendered_configmap(tmp_path):
    (cm,) = [o for o in by_kind(objects(render_case("env-prod")), "ConfigMap")
             if o["metadata"]["name"].endswith("-alertmanager")]
    path = tmp_path / "alertmanager.yaml"
    path.write_text(cm["data"]["alertmanager.yaml"])
    assert path.read_text().strip() == CONFIG.read_text().strip()
    amtool_check(path)


@pytest.mark.parametrize("labels, receiver", [
    (["severity=page", "alertname=SidetraceAvailabilityErrorBudgetBurn"], "pager"),
    (["severity=ticket", "alertname=SidetraceSpansDropped"], "team-email"),
    (["severity=info", "alertname=SidetraceValidationFailures"], "digest"),
    (["alertname=SomethingElse"], "digest"),
])
def test_routes(labels, receiver):
    p = run([tool("amtool"), "config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={receiver}",
             *labels])
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == receiver


def test_route_timing_per_tier():
    cfg = yaml.safe_load(CONFIG.read_text())
    routes = {r["receiver"]: r for r in cfg["route"]["routes"]}
    assert routes["pager"]["group_wait"] == "10s"
    assert routes["digest"]["group_interval"] == "24h"    # a digest, once a day


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((self.path.strip("/"), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def local_config(hook_port: int) -> dict:
    """The example config with every receiver replaced by a webhook to 127.0.0.1."""
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["global"] = {"resolve_timeout": "5m"}
    cfg["receivers"] = [{"name": r["name"], "webhook_configs": [{"url": f"http://127.0.0.1:{hook_port}/{r['name']}"}]}
                        for r in cfg["receivers"]]
    return cfg


def test_ticket_inhibited_while_page_fires(tmp_path):
    hook = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    port = free_port()
    cfg_path = tmp_path / "am.yaml"
    cfg_path.write_text(yaml.safe_dump(local_config(hook.server_address[1])))
    binary = shutil.which("prometheus-alertmanager") or tool("alertmanager")  # Debian's name, upstream's
    log = (tmp_path / "am.log").open("w")
    proc = subprocess.Popen([binary, f"--config.file={cfg_path}", f"--storage.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/api/v2"
    try:
        wait_until("alertmanager ready", lambda: http_get(f"{base}/status")[0] == 200, procs=[proc])
        common = {"namespace": "shop", "service": "checkout", "environment": "prod"}
        alerts = [
            {"labels": {"alertname": "SidetraceAvailabilityErrorBudgetBurn", "severity": "page", **common}},
            {"labels": {"alertname": "SidetraceAvailabilityErrorBudgetBurn", "severity": "ticket", **common,
                        "long_window": "1d"}},
            {"labels": {"alertname": "SidetraceAvailabilityErrorBudgetBurn", "severity": "ticket",
                        "namespace": "shop", "service": "payments", "environment": "prod"}},
        ]
        req = urllib.request.Request(f"{base}/alerts", data=json.dumps(alerts).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5).read()

        def states():
            got = json.loads(http_get(f"{base}/alerts")[1])
            return {(a["labels"]["severity"], a["labels"]["service"]): a["status"]["state"] for a in got}

        wait_until("the checkout ticket to be suppressed",
                   lambda: len(states()) == 3 and states()[("ticket", "checkout")] == "suppressed", procs=[proc])
        # the ticket of another service is not inhibited by checkout's page
        assert states() == {("page", "checkout"): "active", ("ticket", "checkout"): "suppressed",
                            ("ticket", "payments"): "active"}
        # the page reaches the pager receiver after its 10s group_wait
        wait_until("the page notification", lambda: any(r == "pager" for r, _ in _Hook.received), procs=[proc])
        pages = [body for r, body in _Hook.received if r == "pager"]
        assert pages[0]["commonLabels"]["severity"] == "page"
        assert not any(r == "team-email" and b["commonLabels"].get("service") == "checkout" for r, b in _Hook.received)
    finally:
        stop(proc)
        log.close()
        hook.shutdown()
