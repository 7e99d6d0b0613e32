#!/bin/sh
# bench_prep.sh - a quern-prep run on the full Online Retail pipeline
# (examples/pipelines/online-retail.json, 541,909 rows) beside pandas doing
# the same work (read, the same steps, write CSV), in one run, with peak
# memory beside pandas' and the load average (the cores are shared: read the
# ratio, both sides run under the same load). bench_prep.py says how.
#
#     bench/bench_prep.sh [BUILD_DIR] [extra bench_prep.py options, e.g. --rows 50000]
set -eu
build=${1:-build}
[ $# -gt 0 ] && shift
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
if ! /usr/bin/python3 -c 'import pandas' 2>/dev/null; then
    echo "bench_prep: python3-pandas is not installed (make deps installs it)"; exit 1
fi
exec /usr/bin/python3 "$(dirname "$0")/bench_prep.py" --build "$build" "$@"
