#!/usr/bin/env bash
# make demo: the main job on embedded defaults.
#
# Today it runs the registry on its default port with state under
# $QUERN_HOME (default ./.quern), stores a model file as a content-addressed
# blob, registers it as version N of model "demo-recommender", points the
# "production" alias at it, and prints what happened. Later steps of the
# roadmap grow this into the whole loop (ingest -> prep -> train -> serve ->
# monitor -> retrain).
#
#   DEMO_KEEP=1 make demo    leaves the registry running afterwards
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=build/bin
export QUERN_HOME=${QUERN_HOME:-$PWD/.quern}
ADDR=${QUERN_DEMO_LISTEN:-127.0.0.1:7701}
URL="http://$ADDR"
mkdir -p "$QUERN_HOME/logs"
LOG="$QUERN_HOME/logs/registry.log"

say() { printf '\033[1m%s\033[0m\n' "$*"; }
json() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

if curl -fsS "$URL/healthz" >/dev/null 2>&1; then
  say "A registry already answers on $ADDR; using it."
  PID=""
else
  "$BIN/quern-registry" --listen "$ADDR" >>"$LOG" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    curl -fsS "$URL/readyz" >/dev/null 2>&1 && break
    sleep 0.05
  done
  curl -fsS "$URL/readyz" >/dev/null || { echo "registry did not start; see $LOG"; exit 1; }
  say "quern-registry is up on $ADDR (pid $PID, state in $QUERN_HOME/registry, log $LOG)"
fi
cleanup() { [ -n "$PID" ] && [ -z "${DEMO_KEEP:-}" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" || true; }
trap cleanup EXIT

# The model file: a small popularity model of the real Online Retail data
# (top items by number of purchases), computed here from the shipped data set.
MODEL=$(mktemp)
xz -dc data/online-retail/online_retail.csv.xz | /usr/bin/python3 -c '
import csv, json, sys, collections
c = collections.Counter()
for row in csv.DictReader(sys.stdin):
    if row["CustomerID"] and not row["InvoiceNo"].startswith("C") and float(row["Quantity"]) > 0:
        c[row["StockCode"]] += 1
print(json.dumps({"kind": "popularity", "top": c.most_common(10)}))' > "$MODEL"
DIGEST="sha256:$(sha256sum "$MODEL" | cut -d' ' -f1)"
SIZE=$(stat -c %s "$MODEL")

curl -fsS -X POST "$URL/v1/models" -H 'Content-Type: application/json' \
  -d '{"name":"demo-recommender","description":"Top items of the Online Retail shop","tags":{"use":"demo"}}' \
  >/dev/null 2>&1 && say "Created model demo-recommender" || say "Model demo-recommender exists already"

code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT "$URL/v1/blobs/$DIGEST" \
  -H 'Content-Type: application/octet-stream' --data-binary @"$MODEL")
say "Stored the model file as blob $DIGEST ($SIZE bytes, HTTP $code)"

VERSION=$(curl -fsS -X POST "$URL/v1/models/demo-recommender/versions" -H 'Content-Type: application/json' \
  -d "{\"manifest\":{\"format\":\"quern.model/1\",\"kind\":\"als\",\"files\":{\"popularity.json\":\"$DIGEST\"},
        \"inputs\":[{\"name\":\"user_id\",\"datatype\":\"BYTES\",\"shape\":[-1]}],
        \"outputs\":[{\"name\":\"item_id\",\"datatype\":\"BYTES\",\"shape\":[-1,10]}]},
       \"metrics\":{\"items\":10},\"dataset\":{\"name\":\"online-retail\",\"version\":1}}" | json 'd["version"]')
say "Registered version $VERSION"

PREV=$(curl -fsS -X PUT "$URL/v1/models/demo-recommender/aliases/production" -H 'Content-Type: application/json' \
  -d "{\"version\":$VERSION}" | json 'd["previous_version"]')
say "Moved alias production -> version $VERSION (was: $PREV)"

say "The registry now says:"
curl -fsS "$URL/v1/models/demo-recommender" | json 'json.dumps(d, indent=2)'
say "Events in the outbox (published to the bus in order):"
curl -fsS "$URL/v1/events" | json '"\n".join("  #%d %s %s" % (e["seq"], e["event"]["type"], json.dumps(e["event"]["data"])) for e in d["events"])'
say "Round trip: the blob reads back identical:"
curl -fsS "$URL/v1/blobs/$DIGEST" | sha256sum | sed 's/^/  sha256:/; s/  -$//'
rm -f "$MODEL"
if [ -n "${DEMO_KEEP:-}" ] && [ -n "$PID" ]; then
  say "Leaving quern-registry running (pid $PID). Stop it with: kill $PID"
  trap - EXIT
fi
