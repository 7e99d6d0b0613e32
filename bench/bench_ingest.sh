#!/bin/sh
# bench_ingest.sh - durable ingest throughput of quern-ingest with NDJSON
# batches of 1,000 small events, beside the limits it runs against: the raw
# write rate of the same SQLite storage (same table, one prepared statement,
# 1,000-row transactions) and the parse rate of ml/records on one thread.
# Runs the service on the embedded SQLite bus, and on RabbitMQ too when
# QUERN_TEST_AMQP=amqp://... names a broker. Then `quern ingest` of the
# shipped Online Retail CSV beside a plain SQLite insert loop of the same rows
# (bench_ingest_csv.py).
#
#     bench/bench_ingest.sh [BUILD_DIR] [SECONDS] [CLIENTS]
set -eu
build=${1:-build}
secs=${2:-10}
clients=${3:-4}
work=$(mktemp -d "${TMPDIR:-/tmp}/quern_bench_ingest.XXXXXX")
pid=

stop() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; pid=; }
trap 'stop; rm -rf "$work"' EXIT

# run NAME BUS: start the service on a free port, drive it, stop it.
run() {
    name=$1
    mkdir -p "$work/$name"
    QUERN_HOME="$work/$name" "$build/bin/quern-ingest" --listen 127.0.0.1:0 --data "$work/$name/ingest" \
        --bus "$2" >"$work/$name/log" 2>&1 &
    pid=$!
    port=
    for _ in $(seq 100); do
        port=$(sed -n 's/.*"msg":"listening".*"port":\([0-9]*\).*/\1/p' "$work/$name/log" | head -1)
        [ -n "$port" ] && break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "$name: the service did not start:"; cat "$work/$name/log"; stop; return 0
    fi
    printf '%-28s' "service, $name bus:"
    "$build/bench/bench_ingest" http "http://127.0.0.1:$port/v1/datasets/bench/events" "$clients" "$secs" 1000 || true
    stop
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-28s' "storage limit:"
"$build/bench/bench_ingest" raw "$work/raw.db" 5 1000
printf '%-28s' "parse limit:"
"$build/bench/bench_ingest" parse 3 1000
run sqlite "sqlite://$work/sqlite/bus.db"
if [ -n "${QUERN_TEST_AMQP:-}" ]; then
    run rabbitmq "$QUERN_TEST_AMQP"
else
    echo "rabbitmq: skipped (set QUERN_TEST_AMQP=amqp://user:pass@host:5672/vhost)"
fi
echo "quern ingest of a CSV file, beside a plain SQLite insert loop (bench_ingest_csv.py):"
/usr/bin/python3 "$(dirname "$0")/bench_ingest_csv.py" --build "$build" || true
