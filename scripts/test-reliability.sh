#!/usr/bin/env bash
# The reliability part of the test command, after the tests: supply-chain
# checks (cargo deny), a 60 s soak of the real binary, the measured figures
# into docs/reliability.md, and a bounded run of every fuzz target. Installs
# cargo-deny and cargo-fuzz from crates.io when missing. Never skips
# silently: when a step cannot run it says which and why.
#
#   FUZZ_SECONDS=60 scripts/test-reliability.sh   # longer fuzzing (default 10 s per target)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }
fuzz_seconds="${FUZZ_SECONDS:-10}"

cargo_tool() { # name of the cargo subcommand, crate to install
  if ! cargo "$1" --version >/dev/null 2>&1; then
    cargo install "$2" --locked --quiet
  fi
}

log "cargo deny (licenses, bans, sources)"
cargo_tool deny cargo-deny
# The advisory database is a git repository on GitHub, which this machine
# cannot reach: advisories are checked where it can be fetched.
echo "advisories not checked: the RustSec database cannot be fetched here (run 'cargo deny check advisories' with network access)"
# deny reads the metadata of every platform's dependencies, which a build
# for this one never downloaded: fetch them from the registry first.
cargo fetch --locked --quiet
cargo deny --offline --log-level error check licenses bans sources

log "soak: ${SOAK_SECONDS:-60} s of mixed load with the app restarted (SOAK_SECONDS sets more)"
bash scripts/soak.sh

# The figures the tests measured, into docs/reliability.md's generated table.
rows=(target/reliability/*.row)
if [ -e "${rows[0]}" ]; then
  log "docs/reliability.md: ${#rows[@]} measured rows"
  python3 - "${rows[@]}" <<'PY'
import sys
path = "docs/reliability.md"
start, end = "<!-- reliability-table:start", "<!-- reliability-table:end -->"
text = open(path).read()
head = text.index("\n", text.index(start)) + 1
tail = text.index(end)
rows = "".join(open(r).read() for r in sorted(sys.argv[1:]))
table = "| situation | expected | measured |\n|---|---|---|\n" + rows
open(path, "w").write(text[:head] + table + text[tail:])
PY
else
  log "docs/reliability.md unchanged: no measured rows under target/reliability (run cargo test first)"
fi

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  log "fuzzing SKIPPED: no nightly toolchain (cargo-fuzz needs one: rustup toolchain install nightly)"
  exit 0
fi
cargo_tool fuzz cargo-fuzz

# A crash fails the run and leaves its input in <crate>/fuzz/artifacts/<target>/;
# reproduce it with `cargo +nightly fuzz run <target> <file>` and add it as a
# unit test before fixing.
for crate in filters/fuzz proxy/fuzz; do
  log "fuzzing $crate (${fuzz_seconds} s per target)"
  (
    cd "$crate"
    cargo +nightly fuzz build
    for target in $(cargo +nightly fuzz list); do
      corpus="corpus/$target"
      mkdir -p "$corpus"
      seeds=()
      [ -d "seeds/$target" ] && seeds=("seeds/$target")
      echo "-- $target"
      out="$(mktemp)"
      if ! cargo +nightly fuzz run "$target" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$fuzz_seconds" -rss_limit_mb=1024 -print_final_stats=1 >"$out" 2>&1; then
        tail -n 60 "$out" >&2
        echo "fuzz target $target failed: see the input saved under $crate/artifacts/$target/" >&2
        exit 1
      fi
      grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$out" | tr '\n' ' '
      echo
      rm -f "$out"
    done
  )
done

