"""Shared by the inject and webhook tests: run `sidetrace inject`, read manifests, validate them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from test_live import sidetrace_bin
from test_render import validate_core

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "inject"
STATUS = "sidetrace.io/status"


def inject(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`sidetrace inject ARGS` (stdin when given), bounded in time."""
    return subprocess.run([str(sidetrace_bin()), "--log-format", "text", "inject", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr}"
    return p.stdout


def documents(text: str) -> list[dict]:
    """Every document of YAML or of concatenated JSON objects (empty YAML documents dropped)."""
    if text.lstrip().startswith("{"):
        decoder, out, i = json.JSONDecoder(), [], 0
        while i < len(text):
            if text[i].isspace():
                i += 1
                continue
            obj, i = decoder.raw_decode(text, i)
            out.append(obj)
        return out
    return [d for d in yaml.safe_load_all(text) if d is not None]


def flatten(docs: list[dict]) -> list[dict]:
    """Documents with every List replaced by its items."""
    out = []
    for d in docs:
        out.extend(d["items"] if d.get("kind", "").endswith("List") else [d])
    return out


def validate(docs: list[dict]) -> list[str]:
    """kubernetes-validate (strict) on every object; names are filled in for generated Pods."""
    objs = []
    for o in flatten(docs):
        o = json.loads(json.dumps(o))
        o.setdefault("metadata", {}).setdefault("name", o["metadata"].get("generateName", "x").rstrip("-") or "x")
        objs.append(o)
    return validate_core(objs)


def pod_template(obj: dict) -> dict:
    """The pod template of a workload (the object itself for a Pod)."""
    kind = obj["kind"]
    if kind == "Pod":
        return obj
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    return obj["spec"]["template"]


def without_status(obj: dict) -> dict:
    """A copy without the sidetrace.io/status annotation (which only injection writes)."""
    obj = json.loads(json.dumps(obj))
    ann = pod_template(obj).get("metadata", {}).get("annotations", {})
    ann.pop(STATUS, None)
    return obj
