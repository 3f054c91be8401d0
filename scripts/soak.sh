#!/usr/bin/env bash
# Soak: the real binary under a mixed HTTP/1.1 + h2c + gRPC open-loop load
# with faults injected (the app is killed and restarted every 20 s), sampling
# the proxy's RSS and open descriptors every 2 s. Checks: no connection left
# open once the load ends, /metrics counts every request the load sent, and
# reports the slope of RSS and descriptors over the run (a leak shows as a
# steady slope). Writes a row for docs/reliability.md.
#
#   scripts/soak.sh            # 60 s (what the README's test command runs)
#   SOAK_SECONDS=600 scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${SOAK_SECONDS:-60}"
bin="${SIDETRACE_BIN:-$PWD/target/debug/sidetrace}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
app_port=$(free_port); in_port=$(free_port); admin_port=$(free_port)

start_app() { "$bin" echo --listen "127.0.0.1:$app_port" >"$work/app.log" 2>&1 & app=$!; pids+=("$app"); }
start_app
"$bin" run --inbound "127.0.0.1:$in_port" --upstream "http://127.0.0.1:$app_port" \
  --admin "127.0.0.1:$admin_port" --log-level warn >"$work/proxy.log" 2>&1 &
proxy=$!; pids+=("$proxy")
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$admin_port/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$admin_port/ready" >/dev/null || { cat "$work/proxy.log" >&2; echo "proxy not ready" >&2; exit 1; }

sample() { # seconds rss_kB fds
  printf '%s %s %s\n' "$SECONDS" "$(awk '/^VmRSS:/{print $2}' "/proc/$proxy/status")" "$(ls "/proc/$proxy/fd" | wc -l)"
}
base="http://127.0.0.1:$in_port"
SECONDS=0
for spec in "http1 100 /soak" "h2c 100 /soak" "grpc 50 /sidetrace.echo.v1.Echo/Unary"; do
  set -- $spec
  "$bin" bench -p "$1" -r "$2" -c 4 -d "${secs}s" --timeout 5s --json --no-progress "$base$3" \
    >"$work/bench-$1.json" 2>"$work/bench-$1.log" &
  pids+=("$!"); loads+=("$!")
done
: >"$work/samples"
next_fault=20
while [ "$SECONDS" -lt "$secs" ]; do
  sample >>"$work/samples"
  if [ "$SECONDS" -ge "$next_fault" ]; then
    # Fault: the app dies mid-load and comes back a second later.
    kill -9 "$app" 2>/dev/null || true
    wait "$app" 2>/dev/null || true
    sleep 1
    start_app
    next_fault=$((next_fault + 20))
  fi
  sleep 2
done
# bench exits non-zero when requests failed; the failures are counted below.
for p in "${loads[@]}"; do wait "$p" || true; done
sleep 3
sample >>"$work/samples"
curl -fs "http://127.0.0.1:$admin_port/metrics" >"$work/metrics"

python3 - "$work" "$secs" <<'PY'
import json, sys, re, os
work, secs = sys.argv[1], int(sys.argv[2])
sent = ok = 0
parts = []
for proto in ("http1", "h2c", "grpc"):
    r = json.load(open(f"{work}/bench-{proto}.json"))
    sent += r["requests"]; ok += r["succeeded"]
    parts.append(f'{proto} {r["requests"]} ({r["failed"]} failed, p99 {r["latency_us"]["p99"]/1000:.1f} ms)')
metrics = open(f"{work}/metrics").read()
def total(name, where=""):
    s = 0.0
    for line in metrics.splitlines():
        if line.startswith(name) and where in line and not line.startswith("#"):
            s += float(line.rsplit(" ", 1)[1])
    return s
counted = total("http_server_request_duration_seconds_count{", 'listener="inbound"') or total("http_server_request_duration_seconds_count")
open_conns = total("sidetrace_connections_open")
rows = [tuple(map(float, l.split())) for l in open(f"{work}/samples") if len(l.split()) == 3]
# Slopes over the steady part: after the first quarter (warm-up: connections,
# allocator arenas), while the load runs.
steady = [r for r in rows[:-1] if r[0] >= secs / 4] or rows
def slope(i):
    xs = [r[0] for r in steady]; ys = [r[i] for r in steady]
    n = len(xs); mx = sum(xs)/n; my = sum(ys)/n
    den = sum((x-mx)**2 for x in xs) or 1.0
    return sum((x-mx)*(y-my) for x, y in zip(xs, ys)) / den * 60
rss0, rss1 = rows[0][1]/1024, rows[-1][1]/1024
fd0, fd1 = int(rows[0][2]), int(rows[-1][2])
fd_peak = max(int(r[2]) for r in rows[:-1])
measured = (f"{sent} sent ({'; '.join(parts)}), {sent-ok} failed during the app's restarts; /metrics counted {int(counted)}; "
            f"{int(open_conns)} connections open after; RSS {rss0:.0f} → {rss1:.0f} MB (steady-state slope {slope(1)/1024:+.2f} MB/min), "
            f"fds {fd0} → {fd1} (peak {fd_peak}, slope {slope(2):+.2f}/min)")
print("soak:", measured)
errors = []
if int(counted) != sent:
    errors.append(f"/metrics counted {int(counted)} requests, the load sent {sent}")
if open_conns != 0:
    errors.append(f"{open_conns} connections still open after the load")
# After the load the proxy may keep idle keep-alive connections to the app
# (its pool), never more descriptors than the load itself needed.
fd_peak = max(int(r[2]) for r in rows[:-1])
if fd1 > fd_peak:
    errors.append(f"descriptors after the load ({fd1}) exceed the peak during it ({fd_peak})")
os.makedirs("target/reliability", exist_ok=True)
with open("target/reliability/50-soak.row", "w") as f:
    f.write(f"| soak ({secs} s, real binary): open-loop HTTP/1.1 100/s + h2c 100/s + gRPC 50/s, the app killed and restarted every 20 s | "
            f"/metrics counts every request sent, no connection left open, RSS and descriptors flat | {measured} |\n")
if errors:
    sys.exit("soak failed: " + "; ".join(errors))
PY
