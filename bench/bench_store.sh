#!/usr/bin/env bash
# The registry's version-creation rate on SQLite, then on a private PostgreSQL
# (the tests' run_store_pg.sh: initdb in a temp dir, fsync off). bench/README.md.
set -uo pipefail
cd "$(dirname "$0")/.."
export QUERN_BIN=${QUERN_BIN:-$PWD/build/bin}
export QUERN_TEST_WORK=${QUERN_TEST_WORK:-$PWD/build/testwork}
mkdir -p "$QUERN_TEST_WORK"
n=${BENCH_QUICK:+300}
/usr/bin/python3 bench/bench_store.py ${n:-2000} 8
bash tests/unit/core/run_store_pg.sh /usr/bin/python3 bench/bench_store.py ${n:-2000} 8
