#!/usr/bin/env bash
# bench_h2load.sh - quern-serve's gRPC ModelInfer driven by h2load (nghttp2's C
# HTTP/2 load generator; the protobuf body is framed by bench_h2load.py), beside
# REST infer driven by the same tool over HTTP/1.1, in the same run: the Adult
# XGBoost model (100 trees, the 6 numeric columns), one row, sent as one input
# per column and as one 2-D tensor input__0 [1, 6]. Each target runs at
# concurrency 1 (one connection, one stream) and at 16 connections x 8 streams
# (HTTP/1.1: 16 connections, one request each at a time). Every body is checked
# by a real call first; h2load counts HTTP statuses only, so a gRPC error would
# still count as 200: the check is what makes the figures mean calls answered.
#
#     bench/bench_h2load.sh [BUILD_DIR]      env: N (requests per target, 20000)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
n=${N:-20000}
export QUERN_DATASETS=${QUERN_DATASETS:-$build/datasets}
command -v h2load >/dev/null || { echo "bench_h2load: h2load is not installed (nghttp2-client)"; exit 0; }
T=$(mktemp -d /tmp/quern-bench-h2load.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  rm -rf "$T"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_of() {
  for _ in $(seq 200); do
    p=$(grep -m1 '"msg":"listening"' "$1" 2>/dev/null | sed 's/.*"port":\([0-9]*\).*/\1/')
    [ -n "$p" ] && { echo "$p"; return; }
    sleep 0.05
  done
}
wait_ready() { for _ in $(seq 600); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; return 1; }

export QUERN_HOME=$T/home
mkdir -p "$QUERN_HOME"
"$build/bin/quern-registry" --listen 127.0.0.1:0 --data "$T/registry" 2>"$T/registry.log" &
pids+=($!)
reg=http://127.0.0.1:$(port_of "$T/registry.log")
wait_ready "$reg/readyz" || { echo "registry did not start"; exit 1; }
/usr/bin/python3 "$here/bench_serve.py" setup "$reg" "$T" >/dev/null || exit 1

gport=$(free_port)
"$build/bin/quern-serve" --listen 127.0.0.1:0 --grpc-listen "127.0.0.1:$gport" --data "$T/serve" \
  --registry "$reg" --models adult 2>"$T/serve.log" &
pids+=($!)
sv=http://127.0.0.1:$(port_of "$T/serve.log")
wait_ready "$sv/readyz" || { echo "serve did not become ready"; tail "$T/serve.log"; exit 1; }
/usr/bin/python3 "$here/bench_h2load.py" bodies "$T" "$gport" || exit 1

# run NAME PROTOCOL(grpc|rest) BODY CLIENTS STREAMS
run() {
  local name=$1 proto=$2 body=$3 c=$4 m=$5 out log="$T/log-$RANDOM"
  if [ "$proto" = grpc ]; then
    out=$(h2load -n "$n" -c "$c" -m "$m" -d "$body" --log-file="$log" \
      -H 'content-type: application/grpc' -H 'te: trailers' \
      "http://127.0.0.1:$gport/inference.GRPCInferenceService/ModelInfer" 2>&1)
  else
    out=$(h2load --h1 -n "$n" -c "$c" -d "$body" --log-file="$log" \
      -H 'content-type: application/json' "$sv/v2/models/adult/infer" 2>&1)
  fi
  local rps ok
  rps=$(echo "$out" | sed -n 's/.*finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p')
  ok=$(echo "$out" | sed -n 's/^requests:.* \([0-9]*\) succeeded, \([0-9]*\) failed, \([0-9]*\) errored.*/\1/p')
  read -r p50 p99 < <(/usr/bin/python3 "$here/bench_h2load.py" stats "$log")
  printf '%-34s %-9s %10s %9s %9s %9s\n' "$name" "${c}x${m}" "${rps:-?}" "$p50" "$p99" "${ok:-?}/$n"
}

echo "quern-serve, Adult XGBoost, 1 row per call; h2load, $n requests per row;" \
  "$(nproc) cores shared by server and client; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-34s %-9s %10s %9s %9s %9s\n' "target" "conns" "calls/s" "p50 ms" "p99 ms" "2xx"
for cm in "1 1" "16 8"; do
  set -- $cm
  run "gRPC ModelInfer, input per column" grpc "$T/grpc-cols.bin" "$1" "$2"
  run "gRPC ModelInfer, 2-D input__0" grpc "$T/grpc-2d.bin" "$1" "$2"
  run "REST infer, input per column" rest "$T/rest-cols.json" "$1" 1
  run "REST infer, 2-D input__0" rest "$T/rest-2d.json" "$1" 1
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
