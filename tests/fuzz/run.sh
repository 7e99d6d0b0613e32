#!/usr/bin/env bash
# Runs every libFuzzer target built in DIR for SECONDS each, starting from its
# seed corpus (tests/fuzz/corpus/<target>/). New crashes are left as
# crash-* files in the current directory: fix them, then add them to the corpus.
set -euo pipefail
dir=${1:?usage: run.sh BUILD_FUZZ_DIR SECONDS}
secs=${2:-30}
here=$(cd "$(dirname "$0")" && pwd)
status=0
for t in "$dir"/fuzz_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  corpus="$here/corpus/$name"
  mkdir -p "$corpus"
  work=$(mktemp -d)
  echo "== $name ($secs s)"
  if ! "$t" -max_total_time="$secs" -max_len=65536 -timeout=10 "$work" "$corpus" 2>"$work.log"; then
    tail -40 "$work.log"
    status=1
  else
    grep -E '^#[0-9]+.*(DONE|pulse)' "$work.log" | tail -1 || true
  fi
  rm -rf "$work" "$work.log"
done
exit $status
