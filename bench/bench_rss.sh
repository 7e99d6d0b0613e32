#!/bin/sh
# bench_rss.sh - idle memory of every service: `quern up` on embedded defaults
# in a fresh QUERN_HOME, no traffic, then each service's resident set beside
# the aim (16 MB), with its proportional (PSS) and private (USS) shares: RSS
# counts the pages of shared libraries every service maps (libc, OpenSSL,
# gRPC), PSS divides them among the processes mapping them, USS is what the
# process alone holds. Prints the load average; settles SETTLE seconds first.
#
#     bench/bench_rss.sh [BUILD_DIR] [SETTLE]
set -eu
build=$(cd "${1:-build}" && pwd)
settle=${2:-5}
home=$(mktemp -d "${TMPDIR:-/tmp}/quern_bench_rss.XXXXXX")
export QUERN_HOME="$home" PATH="$build/bin:$PATH"
# Ports away from a default `quern up` that may be running on this machine.
export QUERN_PORT_BASE=${QUERN_PORT_BASE:-17700}
trap 'quern down >/dev/null 2>&1 || true; rm -rf "$home"' EXIT INT TERM
quern up --detach >/dev/null
sleep "$settle"
load=$(cut -d' ' -f1-3 /proc/loadavg)
/usr/bin/python3 - "$home/run/supervisor.json" "$load" <<'PY'
import json, sys
sup = json.load(open(sys.argv[1]))
aim = 16 * 1024
print(f"idle memory after `quern up`, no traffic; load average {sys.argv[2]}")
print(f"{'service':<10}{'RSS MB':>8}{'PSS MB':>8}{'USS MB':>8}{'threads':>9}{'aim MB':>8}  verdict")
for s in sup["services"]:
    pid = s["pid"]
    roll = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            roll[parts[0].rstrip(":")] = int(parts[1])
    threads = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status")
                   if l.startswith("Threads:"))
    rss, pss = roll["Rss"], roll["Pss"]
    uss = roll["Private_Clean"] + roll["Private_Dirty"]
    print(f"{s['name']:<10}{rss / 1024:>8.1f}{pss / 1024:>8.1f}{uss / 1024:>8.1f}{threads:>9}"
          f"{aim / 1024:>8.0f}  {'under' if rss < aim else 'OVER'}")
PY
