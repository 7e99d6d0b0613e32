#!/usr/bin/env bash
# make bench: every benchmark, each printing its figures beside its baseline.
# Benchmarks are measurements, not tests: nothing here fails on a slow run.
#
#   BENCH_QUICK=1 make bench    smaller inputs, for a check that they all run
#   BENCH_ONLY=als make bench   one benchmark (als, recommend, drift, bus, ingest, prep, grpc, serve,
#                               h2load, explain, store, tracking, monitor, console, rss)
set -uo pipefail
cd "$(dirname "$0")/.."
B=build/bench
quick=${BENCH_QUICK:-}
only=${BENCH_ONLY:-}

want() { [ -z "$only" ] || [ "$only" = "$1" ]; }
head() { printf '\n=== %s ===\n' "$*"; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"

if want als && [ -x $B/bench_als ]; then
  head "ALS training (synthetic last.fm 360k shape, 64 factors, 2 threads)"
  if [ -n "$quick" ]; then $B/bench_als --scale 0.1 --iterations 2; else $B/bench_als --iterations 4; fi
fi
if want recommend && [ -x $B/bench_recommend ]; then
  head "Top-10 recommendation latency (4,070 items, 64 factors)"
  $B/bench_recommend
fi
if want drift && [ -x bench/bench_drift.sh ]; then
  head "Drift: KS + PSI + Jensen-Shannon, C vs scipy"
  if [ -n "$quick" ]; then sh bench/bench_drift.sh build 100000 5; else sh bench/bench_drift.sh build; fi
fi
for extra in bus ingest prep grpc serve h2load explain store tracking monitor console rss; do
  if want $extra && [ -x bench/bench_$extra.sh ]; then
    head "$extra"
    bash bench/bench_$extra.sh
  fi
done
echo
echo "Figures and how they compare: bench/README.md"
