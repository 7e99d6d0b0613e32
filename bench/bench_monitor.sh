#!/bin/sh
# bench_monitor.sh - quern-monitor rows/s with the label join (logged
# predictions + one feedback per prediction, joined by request id) beside the
# raw bus consume rate (quern-events receive + ack) over the same events in
# the same run (bench_monitor.py). Prints the load average before and after.
#
#     bench/bench_monitor.sh [BUILD_DIR] [PREDICTIONS]     (default build 20000)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
n=${2:-20000}
load0=$(cut -d' ' -f1-3 /proc/loadavg)
out=$(/usr/bin/python3 "$here/bench_monitor.py" "$build" "$n")
load1=$(cut -d' ' -f1-3 /proc/loadavg)
/usr/bin/python3 - "$out" "$load0" "$load1" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"monitor: {r['predictions']} logged predictions ({r['prediction_events']} events of 100) + "
      f"{r['feedback']} feedback events = {r['rows']} rows, {r['events']} events")
print(f"load average (1, 5, 15 min): {sys.argv[2]} before, {sys.argv[3]} after")
print(f"{'path':<38}{'s':>9}{'rows/s':>12}{'events/s':>11}")
print(f"{'raw bus consume (receive + ack)':<38}{r['raw_s']:>9.2f}{r['raw_rows_per_s']:>12.0f}{r['raw_events_per_s']:>11.0f}")
print(f"{'quern-monitor (windows + label join)':<38}{r['monitor_s']:>9.2f}{r['monitor_rows_per_s']:>12.0f}"
      f"{r['monitor_events_per_s']:>11.0f}")
print(f"monitor / raw: {r['ratio']:.2f} (aim >= 0.5); joined {r['joined']}, unjoined {r['unjoined']}, "
      f"quality reports {r['quality_reports']}")
PY
