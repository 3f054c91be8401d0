#!/usr/bin/env bash
# The one test command: installs the real peers the tests use, then runs
# formatting, lints, docs, every Rust test, the trace viewer's browser tests
# and the Helm chart's suite.
# Works on a fresh Debian machine with Rust; CI calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

log "installing test peers"
apt_need=()
command -v curl >/dev/null || apt_need+=(curl)
# proxy/tests/admin_exposure.rs reaches the admin server from a network namespace.
command -v ip >/dev/null || apt_need+=(iproute2)
command -v python3 >/dev/null || apt_need+=(python3 python3-pip)
if [ ${#apt_need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_need[@]}" >/dev/null
  else
    echo "missing ${apt_need[*]}: install them or run as root" >&2
    exit 1
  fi
fi
if ! python3 -c 'import grpc' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check grpcio==1.85.3 ||
    python3 -m pip install -q --disable-pip-version-check --break-system-packages grpcio==1.85.3
fi

log "docs stand alone"
# Users have docs/ and the README, nothing else: no pointer to an internal design document.
if grep -rn "DESIGN" docs/ README.md; then
  echo "docs refer to a design document users do not have" >&2
  exit 1
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

log "cargo test"
cargo build --workspace --bins --locked
cargo test --workspace --locked

# Supply chain (cargo deny), a 60 s soak, the measured figures into
# docs/reliability.md, and every fuzz target for a bounded time; it installs
# cargo-deny and cargo-fuzz, and says so when fuzzing cannot run.
log "reliability"
bash scripts/test-reliability.sh

# The trace viewer in Debian's Chromium (installs chromium and playwright-core itself).
log "trace viewer in a browser"
SIDETRACE_BIN="$PWD/target/debug/sidetrace" bash scripts/test-browser.sh

if [ -x scripts/test-chart.sh ]; then
  log "helm chart"
  SIDETRACE_BIN="$PWD/target/debug/sidetrace" bash scripts/test-chart.sh
fi

log "all green"
