#!/usr/bin/env bash
# bench_serve.sh - quern-serve under wrk beside its baselines, same wrk settings:
#   - single-row infer (REST, JSON) on the Adult XGBoost model (100 trees) and on a
#     logistic model with fitted transforms;
#   - nginx answering a fixed 200 (the ceiling of an HTTP server on this machine);
#   - FastAPI + uvicorn + xgboost doing the same prediction (the usual Python stack);
#   - top-10 recommendations from an ALS model (20k users, 5k items, 64 factors);
#   - resident memory of quern-serve idle (no model loaded) and with the three loaded.
# Everything runs on 127.0.0.1 in a temp dir; every process started here is
# stopped by PID at the end.
#
#     bench/bench_serve.sh [BUILD_DIR]     env: CONC (16), DUR (10s), THREADS (2)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
conc=${CONC:-16}
dur=${DUR:-10s}
wthreads=${THREADS:-2}
export QUERN_DATASETS=${QUERN_DATASETS:-$build/datasets}
for t in wrk nginx; do
  command -v $t >/dev/null || { echo "bench_serve: $t is not installed (scripts/deps.sh)"; exit 0; }
done
T=$(mktemp -d /tmp/quern-bench-serve.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  [ -f "$T/nginx.pid" ] && kill "$(cat "$T/nginx.pid")" 2>/dev/null
  sleep 0.5
  rm -rf "$T"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_of() { # the "listening" log line of a quern service
  for _ in $(seq 200); do
    p=$(grep -m1 '"msg":"listening"' "$1" 2>/dev/null | sed 's/.*"port":\([0-9]*\).*/\1/')
    [ -n "$p" ] && { echo "$p"; return; }
    sleep 0.05
  done
}
wait_ready() { for _ in $(seq 600); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; return 1; }
rss_kb() { awk '/VmRSS/ {print $2}' /proc/"$1"/status; }

export QUERN_HOME=$T/home
mkdir -p "$QUERN_HOME"
"$build/bin/quern-registry" --listen 127.0.0.1:0 --data "$T/registry" 2>"$T/registry.log" &
pids+=($!)
reg=http://127.0.0.1:$(port_of "$T/registry.log")
wait_ready "$reg/readyz" || { echo "registry did not start"; exit 1; }
/usr/bin/python3 "$here/bench_serve.py" setup "$reg" "$T" || exit 1

# idle: a serve with a model that has no version yet (nothing loaded)
"$build/bin/quern-serve" --listen 127.0.0.1:0 --grpc-listen off --data "$T/idle" \
  --registry "$reg" --models absent 2>"$T/idle.log" &
idle=$!
pids+=($idle)
port_of "$T/idle.log" >/dev/null
sleep 1
idle_rss=$(rss_kb $idle)
kill $idle

"$build/bin/quern-serve" --listen 127.0.0.1:0 --grpc-listen off --data "$T/serve" \
  --registry "$reg" --models adult,lr,recs 2>"$T/serve.log" &
spid=$!
pids+=($spid)
sv=http://127.0.0.1:$(port_of "$T/serve.log")
wait_ready "$sv/readyz" || { echo "serve did not become ready"; tail "$T/serve.log"; exit 1; }
loaded_rss=$(rss_kb $spid)

ngport=$(free_port)
mkdir -p "$T/ng"
cat >"$T/nginx.conf" <<EOF
worker_processes 2;
pid $T/nginx.pid;
error_log $T/ng/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $T/ng; proxy_temp_path $T/ng; fastcgi_temp_path $T/ng;
  uwsgi_temp_path $T/ng; scgi_temp_path $T/ng;
  server { listen 127.0.0.1:$ngport; location / { return 200 '{"ok":true}'; } }
}
EOF
nginx -c "$T/nginx.conf" -p "$T" -e "$T/ng/error.log" 2>/dev/null

fa=""
if /usr/bin/python3 -c 'import fastapi, uvicorn' 2>/dev/null; then
  faport=$(free_port)
  (cd "$T" && exec /usr/bin/python3 -m uvicorn fastapi_app:app --host 127.0.0.1 --port "$faport" \
     --workers 2 --log-level warning) 2>"$T/fastapi.log" &
  pids+=($!)
  fa=http://127.0.0.1:$faport
  for _ in $(seq 300); do curl -s -o /dev/null "$fa/docs" && break; sleep 0.1; done
fi

cat >"$T/post.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY"), "r"); wrk.body = f:read("*a"); f:close()
EOF

# run NAME URL [BODY]: prints "name req/s p50 p99 errors"
run() {
  local name=$1 url=$2 body=${3:-} out
  if [ -n "$body" ]; then
    out=$(BODY=$body wrk -t"$wthreads" -c"$conc" -d"$dur" --latency -s "$T/post.lua" "$url" 2>&1)
  else
    out=$(wrk -t"$wthreads" -c"$conc" -d"$dur" --latency "$url" 2>&1)
  fi
  echo "$out" >"$T/wrk-$name.txt"
  local rps p50 p99 non2xx
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  printf '%-44s %12s %10s %10s %8s\n' "$name" "$rps" "$p50" "$p99" "${non2xx:-0}"
}

echo "serve bench: wrk -t$wthreads -c$conc -d$dur, $(nproc) cores shared by server and wrk," \
  "load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-44s %12s %10s %10s %8s\n' "target" "req/s" "p50" "p99" "non-2xx"
run "nginx fixed 200 (ceiling)" "http://127.0.0.1:$ngport/"
run "quern-serve infer adult XGBoost 1 row" "$sv/v2/models/adult/infer" "$T/adult.body"
[ -n "$fa" ] && run "FastAPI+uvicorn+xgboost infer 1 row" "$fa/v2/models/adult/infer" "$T/adult.body"
run "quern-serve infer logistic 1 row" "$sv/v2/models/lr/infer" "$T/lr.body"
run "quern-serve recommend top-10 (ALS)" "$sv/v1/models/recs/recommend?user=u123&k=10"
echo "quern-serve resident memory: idle $((idle_rss / 1024)) MiB, with the 3 models loaded $((loaded_rss / 1024)) MiB (now $(( $(rss_kb $spid) / 1024 )) MiB after the runs)"
