#!/usr/bin/env bash
# bench_explain.sh - explained rows/s: quern-serve's POST /v1/models/adult/explain
# (exact TreeSHAP through XGBoost's own pred_contribs) beside Python xgboost's
# predict(..., pred_contribs=True) in the same script, on the same model (Adult,
# 100 trees, depth 6, 6 numeric columns) and the same Adult test rows, at 1, 64
# and 1024 rows per request / per call. Three runs of each, the load average
# before each. quern-serve answers over HTTP under wrk (JSON in and out
# included); Python calls xgboost in-process (no HTTP, no JSON) with 1 thread
# per call, as serve runs XGBoost with 1 OpenMP thread per request.
# Everything runs on 127.0.0.1 in a temp dir; every process started here is
# stopped by PID at the end.
#
#     bench/bench_explain.sh [BUILD_DIR]    env: CONC (8), DUR (5s), THREADS (2), RUNS (3)
# (1024-row requests use 2 connections and 3 x DUR.)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
conc=${CONC:-8}
dur=${DUR:-5s}
wthreads=${THREADS:-2}
runs=${RUNS:-3}
export QUERN_DATASETS=${QUERN_DATASETS:-$build/datasets}
command -v wrk >/dev/null || { echo "bench_explain: wrk is not installed (scripts/deps.sh)"; exit 0; }
T=$(mktemp -d /tmp/quern-bench-explain.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  rm -rf "$T"
}
trap cleanup EXIT

port_of() { # the "listening" log line of a quern service
  for _ in $(seq 200); do
    p=$(grep -m1 '"msg":"listening"' "$1" 2>/dev/null | sed 's/.*"port":\([0-9]*\).*/\1/')
    [ -n "$p" ] && { echo "$p"; return; }
    sleep 0.05
  done
}
wait_ready() { for _ in $(seq 600); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; return 1; }
load() { cut -d' ' -f1 /proc/loadavg; }

export QUERN_HOME=$T/home
mkdir -p "$QUERN_HOME"
"$build/bin/quern-registry" --listen 127.0.0.1:0 --data "$T/registry" 2>"$T/registry.log" &
pids+=($!)
reg=http://127.0.0.1:$(port_of "$T/registry.log")
wait_ready "$reg/readyz" || { echo "registry did not start"; exit 1; }
/usr/bin/python3 "$here/bench_explain.py" setup "$reg" "$T" || exit 1
"$build/bin/quern-serve" --listen 127.0.0.1:0 --grpc-listen off --data "$T/serve" \
  --registry "$reg" --models adult 2>"$T/serve.log" &
pids+=($!)
sv=http://127.0.0.1:$(port_of "$T/serve.log")
wait_ready "$sv/readyz" || { echo "serve did not become ready"; tail "$T/serve.log"; exit 1; }
url=$sv/v1/models/adult/explain
echo "largest difference from Python's pred_contribs on 1024 rows:" \
  "$(/usr/bin/python3 "$here/bench_explain.py" check "$url" "$T" 1024)"

cat >"$T/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY"), "r"); wrk.body = f:read("*a"); f:close()
LUA

secs=${dur%s}
echo "explain bench: wrk -t$wthreads -c$conc -d$dur; Python ${secs}s per run;" \
  "$(nproc) cores shared by server, wrk and Python"
printf '%-6s %-4s %-44s %14s %10s %6s\n' "rows" "run" "target" "rows/s" "p50" "load1"
for n in 1 64 1024; do
  for r in $(seq "$runs"); do
    l=$(load)
    # a 1024-row request takes seconds on a loaded machine: fewer connections,
    # a longer window and wrk's timeout well above a request
    c=$conc; d=$dur
    [ "$n" -ge 1024 ] && { c=2; d=$((3 * ${dur%s}))s; }
    out=$(BODY=$T/explain-$n.body wrk -t"$wthreads" -c"$c" -d"$d" --timeout 60s --latency \
            -s "$T/post.lua" "$url" 2>&1)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
    bad=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr -s ' ' | paste -sd';')
    printf '%-6s %-4s %-44s %14.0f %10s %6s%s\n' "$n" "$r" "quern-serve explain (HTTP+JSON, c=$c)" \
      "$(echo "$rps * $n" | bc -l)" "$p50" "$l" "${bad:+  non-2xx: $bad}"
    l=$(load)
    py=$(/usr/bin/python3 "$here/bench_explain.py" python "$T" "$n" "$secs")
    printf '%-6s %-4s %-44s %14s %10s %6s\n' "$n" "$r" "Python xgboost pred_contribs (in-process)" \
      "$py" "-" "$l"
  done
done
