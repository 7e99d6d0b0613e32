#!/usr/bin/env bash
# callgrind_serve.sh - instructions per request of quern-serve's hot routes,
# counted by valgrind's callgrind: repeatable where wrk's req/s on shared
# cores is not. Same models and bodies as bench_serve.sh; quern-serve runs
# under callgrind with instrumentation off while it loads, then each target
# gets N sequential keep-alive requests (after a warm-up) between a zero and
# a dump, so each figure is (every instruction of every thread) / N.
#
#     bench/callgrind_serve.sh [BUILD_DIR]     env: N (2000), KEEP (dir to keep the dumps)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
n=${N:-2000}
export QUERN_DATASETS=${QUERN_DATASETS:-$build/datasets}
command -v valgrind >/dev/null || { echo "callgrind_serve: valgrind is not installed"; exit 0; }
T=$(mktemp -d /tmp/quern-cg-serve.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp -r "$T"/cg.out.* "$T"/adult* "$T"/lr "$T"/recommend "$KEEP"/ 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT

port_of() {
  for _ in $(seq 600); do
    p=$(grep -m1 '"msg":"listening"' "$1" 2>/dev/null | sed 's/.*"port":\([0-9]*\).*/\1/')
    [ -n "$p" ] && { echo "$p"; return; }
    sleep 0.1
  done
}
wait_ready() { for _ in $(seq 1200); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; return 1; }

export QUERN_HOME=$T/home
mkdir -p "$QUERN_HOME"
"$build/bin/quern-registry" --listen 127.0.0.1:0 --data "$T/registry" 2>"$T/registry.log" &
pids+=($!)
reg=http://127.0.0.1:$(port_of "$T/registry.log")
wait_ready "$reg/readyz" || { echo "registry did not start"; exit 1; }
/usr/bin/python3 "$here/bench_serve.py" setup "$reg" "$T" || exit 1
# The same row as one 2-D tensor [1, 6] (the numpy-matrix form of Triton's FIL
# backend and MLServer), beside bench_serve.py's one-tensor-per-column body.
/usr/bin/python3 - "$T" <<'EOF' || exit 1
import json, sys
cols = json.load(open(sys.argv[1] + "/adult.body"))["inputs"]
row = [c["data"][0] for c in cols]
json.dump({"inputs": [{"name": "input__0", "datatype": "FP64", "shape": [1, len(row)],
                       "data": [row]}]}, open(sys.argv[1] + "/adult2d.body", "w"))
EOF

valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \
  --callgrind-out-file="$T/cg.out.%p" \
  "$build/bin/quern-serve" --listen 127.0.0.1:0 --grpc-listen off --data "$T/serve" \
  --registry "$reg" --models adult,lr,recs 2>"$T/serve.log" &
spid=$!
pids+=($spid)
port=$(port_of "$T/serve.log")
wait_ready "http://127.0.0.1:$port/readyz" || { echo "serve did not become ready"; exit 1; }

# drive NAME METHOD PATH [BODY]: COUNT keep-alive requests on one connection.
drive() {
  /usr/bin/python3 - "$port" "$1" "$2" "$3" "${4:-}" <<'EOF'
import http.client, sys
port, count, method, path, body = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
data = open(body, "rb").read() if body else None
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(count):
    c.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"{path}: {r.status}")
EOF
}

callgrind_control -i on "$spid" >/dev/null 2>&1
# One dump file per thread: the HTTP workers' (the request path: libmicrohttpd,
# routing, parsing, the model, the answer) are summed apart from the rest
# (the prediction log's writer, which sees ~10% of requests; the bus
# subscriber and tickers, which run by the clock, not per request, and so
# weigh more the slower callgrind makes the run).
printf '%-16s %14s %14s %14s %14s\n' "target (N=$n)" "all threads" "request path" "prediction log" "clock-driven"
measure() {
  local name=$1; shift
  drive 200 "$@" || exit 1
  callgrind_control -z "$spid" >/dev/null 2>&1
  drive "$n" "$@" || exit 1
  ls "$T"/cg.out.* >"$T/before" 2>/dev/null
  callgrind_control -d "$name" "$spid" >/dev/null 2>&1
  sleep 1
  local f tot all=0 http=0 plog=0 other=0
  mkdir -p "$T/$name"
  for f in $(ls "$T"/cg.out.* | grep -vxFf "$T/before"); do
    tot=$(awk '/^(summary|totals):/ {print $2; exit}' "$f")
    tot=${tot:-0}
    all=$((all + tot))
    if grep -q 'on_request' "$f"; then http=$((http + tot))
    elif grep -q 'predlog_main' "$f"; then plog=$((plog + tot))
    else other=$((other + tot)); fi
    mv "$f" "$T/$name/"
  done
  printf '%-16s %14d %14d %14d %14d\n' "$name" $((all / n)) $((http / n)) $((plog / n)) $((other / n))
}
measure adult POST /v2/models/adult/infer "$T/adult.body"
measure adult-2d POST /v2/models/adult/infer "$T/adult2d.body"
measure lr POST /v2/models/lr/infer "$T/lr.body"
measure recommend GET "/v1/models/recs/recommend?user=u123&k=10"
