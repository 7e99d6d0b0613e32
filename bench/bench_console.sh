#!/usr/bin/env bash
# bench_console.sh: quern-console's first paint per page, asset bytes and idle
# memory with a registry of 1,000 versions and 500 drift reports
# (bench/bench_console.py). BENCH_VERSIONS / BENCH_REPORTS shrink it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x build/bin/quern-console ] || [ ! -x /usr/bin/chromium ]; then
  echo "bench_console: needs build/bin/quern-console and /usr/bin/chromium (make deps, make build)"
  exit 0
fi
exec /usr/bin/python3 bench/bench_console.py
