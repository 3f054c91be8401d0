#!/usr/bin/env bash
# Tests of the Helm chart (charts/sidetrace) and the example user chart (charts/examples).
#
# Installs what the tests need on a fresh Debian machine, idempotently (fast when present):
#   apt:  prometheus (promtool, prometheus), prometheus-alertmanager (amtool), nodejs + npm
#   pip:  charts/sidetrace/tests/requirements.txt into a venv under the cache directory
#   apt:  openssl (certificates for the webhook test)
#   npm:  @kubernetes-models/prometheus-operator and @kubernetes-models/cert-manager (validators
#         compiled from the CRD schemas)
# then runs the pytest suite in charts/sidetrace/tests. The live test scrapes a running
# sidetrace: it uses SIDETRACE_BIN (default target/debug/sidetrace, built by scripts/test.sh) and
# fails under CI=true when the binary is missing.
#
# Environment: SIDETRACE_CHART_CACHE (default ~/.cache/sidetrace-chart), SIDETRACE_BIN,
# PYTEST_ADDOPTS (extra pytest flags).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SIDETRACE_CHART_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidetrace-chart}"
REQS="$ROOT/charts/sidetrace/tests/requirements.txt"
NPM_PKGS="@kubernetes-models/prometheus-operator@6.0.0 @kubernetes-models/cert-manager@6.0.0"
mkdir -p "$CACHE"

log() { printf '[test-chart] %s\n' "$*" >&2; }

# --- system packages -------------------------------------------------------------------------
missing=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if ((${#missing[@]})); then
  log "installing ${missing[*]} with apt-get"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python venv with pinned packages --------------------------------------------------------
VENV="$CACHE/venv"
stamp="$(cat "$REQS" <(python3 --version) | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]]; then
  log "creating $VENV"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    log "python3 -m venv failed: installing python3-venv"
    if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
  echo "$stamp" >"$VENV/.stamp"
fi

# --- npm validators of the prometheus-operator and cert-manager CRDs ----------------------
NODE_DIR="$CACHE/node"
if [[ "$(cat "$NODE_DIR/.stamp" 2>/dev/null)" != "$NPM_PKGS" ]]; then
  log "installing $NPM_PKGS"
  rm -rf "$NODE_DIR"
  mkdir -p "$NODE_DIR"
  # shellcheck disable=SC2086  # one word per package
  npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error $NPM_PKGS >/dev/null
  echo "$NPM_PKGS" >"$NODE_DIR/.stamp"
fi

# --- tests ----------------------------------------------------------------------------------
export SIDETRACE_CHART_NODE_MODULES="$NODE_DIR/node_modules"
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in the work tree
export SIDETRACE_BIN="${SIDETRACE_BIN:-$ROOT/target/debug/sidetrace}"
cd "$ROOT"
log "running pytest (charts/sidetrace/tests)"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider -q -rs charts/sidetrace/tests "$@"
