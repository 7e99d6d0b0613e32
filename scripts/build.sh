#!/usr/bin/env bash
# build.sh BUILD_DIR JOBS - `make build`: cmake --build showing only what a
# person needs to read: compiler (and CMake) warnings and errors in full, then
# one summary line. make's directory chatter and the per-file progress lines
# are dropped. Exits with cmake's status, so a failing build fails `make build`.
set -u
dir=$1
jobs=$2
noise='^\[ *[0-9]+%\] |^g?make(\[[0-9]+\])?: (Entering|Leaving) directory|^Consolidate compiler generated dependencies|^Scanning dependencies of target |^-- '
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$SECONDS
cmake --build "$dir" -j "$jobs" 2>&1 | tee "$log" | grep --line-buffered -vE "$noise"
rc=${PIPESTATUS[0]}
warnings=$(grep -c 'warning:' "$log")
secs=$((SECONDS - start))
if [ "$rc" -eq 0 ]; then
    echo "build: ok in ${secs}s, ${warnings} warning(s); binaries in $dir/bin/"
else
    echo "build: FAILED (cmake --build exit $rc) after ${secs}s, ${warnings} warning(s); the errors are above" >&2
fi
exit "$rc"
