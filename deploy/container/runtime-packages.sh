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
done
libs=$(printf '%s\n' "$all" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u)
pkgs=
for lib in $libs; do
  # usrmerge: ldd may say /lib/... where dpkg recorded /usr/lib/...; an
  # alternatives symlink (libopenblas.so.0, liblapack.so.3) resolves to the
  # file its package ships.
  owner=
  for cand in "$lib" "/usr$lib" "$(readlink -f "$lib")"; do
    if owner=$(dpkg-query -S "$cand" 2>/dev/null); then
      break
    fi
    owner=
  done
  if [ -z "$owner" ]; then
    echo "runtime-packages: no package owns $lib" >&2
    exit 1
  fi
  pkgs="$pkgs ${owner%%:*}"
done
printf '%s\n' $pkgs | sort -u
