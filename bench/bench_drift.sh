#!/bin/sh
# bench_drift.sh - KS + PSI + Jensen-Shannon over ROWS x COLS (default 1M x 20),
# current against a reference of the same size: quern's C (build/bench/bench_drift)
# against scipy 1.10 (/usr/bin/python3) on the same seeded data file. Prints a
# table with the ratio and checks that both computed the same statistics.
#
#     bench/bench_drift.sh [BUILD_DIR] [ROWS] [COLS]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
rows=${2:-1000000}
cols=${3:-20}
data=${TMPDIR:-/tmp}/quern_bench_drift_${rows}x${cols}.bin
[ -f "$data" ] || /usr/bin/python3 "$here/bench_drift.py" gen "$data" "$rows" "$cols"
c_out=$("$build/bench/bench_drift" "$data")
py_out=$(/usr/bin/python3 "$here/bench_drift.py" run "$data")
/usr/bin/python3 - "$c_out" "$py_out" <<'PY'
import json, sys
c, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
worst = {}
for a, b in zip(c["columns"], p["columns"]):
    for k in a:
        if b[k] != 0 or a[k] != 0:
            rel = abs(a[k] - b[k]) / max(abs(b[k]), 1e-300)
            worst[k] = max(worst.get(k, 0), rel)
print(f"drift: {c['rows']} rows x {c['cols']} columns, current vs reference")
print(f"{'stage':<22}{'C (s)':>10}{'scipy (s)':>12}{'scipy/C':>10}")
for key, name in [("ks_s", "KS two-sample"), ("psi_js_s", "PSI + Jensen-Shannon"),
                  ("total_s", "total")]:
    print(f"{name:<22}{c[key]:>10.3f}{p[key]:>12.3f}{p[key] / c[key]:>10.2f}")
print("max relative difference C vs scipy: " +
      ", ".join(f"{k} {v:.1e}" for k, v in sorted(worst.items())))
PY
