#!/bin/sh
# runtime-packages.sh BIN... - prints the Debian packages that provide the
# shared libraries the given binaries load, one per line, sorted. The build
# stage of the Containerfile runs it over the freshly built binaries, and the
# runtime stage installs exactly that list, so the image carries the libraries
# the binaries need and nothing else, and stays right as services gain
# dependencies. Fails if a library belongs to no package (a library built from
# source would be missing from the image).
set -eu
# Kept out of pipelines: a failure inside one would be lost (no pipefail in sh).
all=
for bin in "$@"; do
  out=$(ldd "$bin") || { echo "runtime-packages: $bin is not a dynamic executable" >&2; exit 1; }
  all="$all
$out"
  # Libraries the binary opens itself on first use (src/ml/libs.c: XGBoost,
  # OpenBLAS/LAPACKE, liblinear) are not in ldd's answer; their sonames are
  # strings in the binary. Each is resolved by ldconfig, then ldd'ed for what
  # it loads in turn.
  for soname in $(strings -n 8 "$bin" | grep -E '^lib[A-Za-z0-9_+-]+\.so\.[0-9]+$' | sort -u); do
    path=$(ldconfig -p | awk -v s="$soname" '$1 == s && /x86-64|x86_64|AArch64|aarch64/ {print $NF; exit}')
    [ -n "$path" ] || { echo "runtime-packages: $bin opens $soname, which is not installed" >&2; exit 1; }
    out=$(ldd "$path")
    all="$all
$soname => $path (0)
$out"
  done
done
libs=$(printf '%s\n' "$all" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u)
# One dpkg-query for every candidate path (one per library took a minute on a
# loaded machine: each call reads dpkg's whole file database). usrmerge: ldd
# may say /lib/... where dpkg recorded /usr/lib/...; an alternatives symlink
# (libopenblas.so.0, liblapack.so.3) resolves to the file its package ships.
cands=
for lib in $libs; do
  cands="$cands $lib /usr$lib $(readlink -f "$lib")"
done
# Exit 1 when some candidate is unowned, which is expected: the check is below.
# shellcheck disable=SC2086
owners=$(dpkg-query -S $cands 2>/dev/null) || true
pkgs=
for lib in $libs; do
  owner=
  for cand in "$lib" "/usr$lib" "$(readlink -f "$lib")"; do
    owner=$(printf '%s\n' "$owners" | awk -v p="$cand" '{ i = index($0, ": "); if (substr($0, i + 2) == p) { print substr($0, 1, i - 1); exit } }')
    [ -n "$owner" ] && break
  done
  if [ -z "$owner" ]; then
    echo "runtime-packages: no package owns $lib" >&2
    exit 1
  fi
  # A path two packages share (diversions, multiarch) lists both: take the first.
  owner=${owner%%,*}
  pkgs="$pkgs ${owner%%:*}"
done
printf '%s\n' $pkgs | sort -u
