#!/usr/bin/env bash
# Browser tests of the trace viewer (/debug/traces/ui): Debian's Chromium driven by
# playwright-core (no browser download) against the real binary, `sidetrace demo` and
# `sidetrace run` in front of a test upstream. Writes the viewer's screenshots to docs/img/.
#
# Installs what the tests need on a fresh Debian machine, idempotently (fast when present):
#   apt:  chromium, nodejs, npm
#   npm:  playwright-core (pinned) into the cache directory
#
# Environment: SIDETRACE_BROWSER_CACHE (default ~/.cache/sidetrace-browser), SIDETRACE_BIN
# (default target/debug/sidetrace, built by scripts/test.sh), CHROMIUM (default /usr/bin/chromium).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SIDETRACE_BROWSER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidetrace-browser}"
NPM_PKG="playwright-core@1.65.1"
mkdir -p "$CACHE"

log() { printf '[test-browser] %s\n' "$*" >&2; }

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  log "installing ${missing[*]} with apt-get"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

NODE_DIR="$CACHE/node"
if [[ "$(cat "$NODE_DIR/.stamp" 2>/dev/null)" != "$NPM_PKG" ]]; then
  log "installing $NPM_PKG"
  rm -rf "$NODE_DIR"
  mkdir -p "$NODE_DIR"
  # playwright-core has no install script and downloads no browser.
  npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error "$NPM_PKG" >/dev/null
  echo "$NPM_PKG" >"$NODE_DIR/.stamp"
fi

export SIDETRACE_BROWSER_NODE_MODULES="$NODE_DIR/node_modules"
export SIDETRACE_BIN="${SIDETRACE_BIN:-$ROOT/target/debug/sidetrace}"
export CHROMIUM="${CHROMIUM:-$(command -v chromium)}"
if [[ ! -x "$SIDETRACE_BIN" ]]; then
  log "no binary at $SIDETRACE_BIN: run cargo build first"
  exit 1
fi
cd "$ROOT"
log "running node --test proxy/tests/browser/viewer.test.mjs"
exec node --test --test-reporter=spec "$@" proxy/tests/browser/viewer.test.mjs
