#!/bin/sh
# runtime-packages.sh BIN... - prints the Debian packages that provide the
# shared libraries the given binaries load, one per line, sorted. The build
# stage of the Containerfile runs it over the freshly built binaries, and the
# runtime stage installs exactly that list, so the image carries the libraries
# the binaries need and nothing else, and stays right as services gain
# dependencies. Fails if a library belongs to no package (a library built from
# source would be missing from the image).
set -eu
libs=$(for bin in "$@"; do ldd "$bin"; done | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u)
for lib in $libs; do
  # usrmerge: ldd may say /lib/... where dpkg recorded /usr/lib/...; an
  # alternatives symlink (libopenblas.so.0, liblapack.so.3) resolves to the
  # file its package ships.
  for cand in "$lib" "/usr$lib" "$(readlink -f "$lib")"; do
    if owner=$(dpkg-query -S "$cand" 2>/dev/null); then
      echo "${owner%%:*}"
      continue 2
    fi
  done
  echo "runtime-packages: no package owns $lib" >&2
  exit 1
done | sort -u
