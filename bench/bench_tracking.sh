#!/usr/bin/env bash
# Tracking in quern-registry: runs/search over 100,000 runs and log-batch of
# 1,000 metrics, each beside a hand-written SQLite baseline (bench/README.md).
# BENCH_QUICK: 10,000 runs, one repeat.
set -uo pipefail
cd "$(dirname "$0")/.."
export QUERN_BIN=${QUERN_BIN:-$PWD/build/bin}
export QUERN_TEST_WORK=${QUERN_TEST_WORK:-$PWD/build/testwork}
mkdir -p "$QUERN_TEST_WORK"
if [ -n "${BENCH_QUICK:-}" ]; then
  /usr/bin/python3 bench/bench_tracking.py 10000 1
else
  /usr/bin/python3 bench/bench_tracking.py 100000 3
fi
