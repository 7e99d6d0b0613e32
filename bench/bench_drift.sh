#!/bin/sh
# bench_drift.sh - KS + PSI + Jensen-Shannon over ROWS x COLS (default 1M x 20),
# current against a reference of the same size: quern's C (build/bench/bench_drift)
# against scipy 1.10 (/usr/bin/python3) on the same seeded data file. The C side
# runs two paths in the same process: "old" sorts and bins both samples per
# comparison; "new" (what quern-monitor does with a profile) prepares the
# reference once - sorted, binned; its time is shown apart as "prep" - and sorts
# and bins only the current window. Prints the load average, a table with the
# ratios, and checks that every path computed the same statistics.
#
#     bench/bench_drift.sh [BUILD_DIR] [ROWS] [COLS]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
rows=${2:-1000000}
cols=${3:-20}
data=${TMPDIR:-/tmp}/quern_bench_drift_${rows}x${cols}.bin
[ -f "$data" ] || /usr/bin/python3 "$here/bench_drift.py" gen "$data" "$rows" "$cols"
load0=$(cut -d' ' -f1-3 /proc/loadavg)
c_out=$("$build/bench/bench_drift" "$data")
py_out=$(/usr/bin/python3 "$here/bench_drift.py" run "$data")
load1=$(cut -d' ' -f1-3 /proc/loadavg)
/usr/bin/python3 - "$c_out" "$py_out" "$load0" "$load1" <<'PY'
import json, sys
c, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
worst = {}
for a, b in zip(c["columns"], p["columns"]):
    for k in a:
        if b[k] != 0 or a[k] != 0:
            rel = abs(a[k] - b[k]) / max(abs(b[k]), 1e-300)
            worst[k] = max(worst.get(k, 0), rel)
print(f"drift: {c['rows']} rows x {c['cols']} columns, current vs reference")
print(f"load average (1, 5, 15 min): {sys.argv[3]} before, {sys.argv[4]} after")
print(f"{'stage':<22}{'C old (s)':>11}{'C new (s)':>11}{'scipy (s)':>11}"
      f"{'scipy/new':>11}{'scipy/old':>11}{'old/new':>9}")
for key, name in [("ks_s", "KS two-sample"), ("psi_js_s", "PSI + Jensen-Shannon"),
                  ("total_s", "total")]:
    old, new, sp = c[key], c["new_" + key], p[key]
    print(f"{name:<22}{old:>11.3f}{new:>11.3f}{sp:>11.3f}"
          f"{sp / new:>11.2f}{sp / old:>11.2f}{old / new:>9.2f}")
print(f"new path, reference prepared once per version (sort + bins): {c['prep_s']:.3f} s")
print("old and new C paths: identical statistics (bench_drift checks)")
print("max relative difference C vs scipy: " +
      ", ".join(f"{k} {v:.1e}" for k, v in sorted(worst.items())))
PY
