#!/bin/sh
# mkroot.sh OUT BINDIR - lays out the layers of Quern's images under OUT from
# the built binaries in BINDIR (quern, quern-<service>), distroless style: no
# package manager, no shell utilities, only the files the binaries load.
#
#   OUT/runtime/  a root holding the ldd closure of the services that need no
#                 heavy library (registry, ingest, prep, monitor, console) and of the
#                 quern CLI: libc and the dynamic loader, libcurl, libmicrohttpd,
#                 jansson, sqlite, libpq, rabbitmq-c and what they load; /bin/sh
#                 (dash, for the entrypoint), the CA bundle, /etc/passwd and
#                 /etc/group with user quern (10001), nsswitch.conf, /tmp; the
#                 quern CLI and quern-entrypoint
#   OUT/data/     an empty directory: /data, copied with --chown=10001:10001
#                 (COPY makes what it copies root-owned, and a directory it
#                 creates is the user's only when it does not exist before)
#   OUT/ml/       what train and alert load beyond runtime/ (OpenBLAS, LAPACK,
#                 XGBoost, liblinear, libgomp, libstdc++, libgfortran)
#   OUT/grpc/     what serve loads beyond runtime/ and ml/ (gRPC, Abseil, re2,
#                 c-ares, protobuf-c)
#   OUT/bin/      the stripped service binaries, one file each
#
# Each library is stored under the name the binaries ask for (its soname) in
# /usr/lib/x86_64-linux-gnu, a directory the dynamic loader always searches, so
# no ld.so.cache and no symlink farm is needed. The layout is merged-/usr
# (/lib, /lib64 and /bin are symlinks into /usr), like Debian 12's. Run it in
# the build stage of deploy/container/Containerfile, or on a Debian 12 host
# (scripts/image.sh): the closure is whatever `ldd` resolves there.
set -eu

[ $# -eq 2 ] || { echo "usage: mkroot.sh OUT BINDIR" >&2; exit 2; }
out=$1
bindir=$2
here=$(cd "$(dirname "$0")" && pwd)
multiarch=x86_64-linux-gnu
libdir=usr/lib/$multiarch

light="quern quern-registry quern-ingest quern-prep quern-monitor quern-console"
ml="quern-train quern-alert"
grpc="quern-serve"

for b in $light $ml $grpc; do
  [ -x "$bindir/$b" ] || { echo "mkroot: $bindir/$b missing (build it first)" >&2; exit 1; }
done

rm -rf "$out"
mkdir -p "$out/runtime" "$out/ml" "$out/grpc" "$out/bin" "$out/data"
# What ldconfig knows, read once (a call per library took most of a minute
# under load).
cache=$out/.cache
mkdir -p "$cache"
ldconfig -p > "$cache/ldconfig"

# present ROOT... NAME: true when some earlier layer already holds NAME.
present() {
  name=$1
  shift
  for r in "$@"; do
    [ -e "$r/$libdir/$name" ] && return 0
  done
  return 1
}

# closure LAYER EARLIER_LAYERS BIN...: copies the libraries BIN... load into
# LAYER unless an earlier layer has them. ldd's lines are
# "soname => /path (addr)" or "/lib64/ld-linux-x86-64.so.2 (addr)".
closure() {
  layer=$1
  earlier=$2
  shift 2
  for b in "$@"; do
    list=$(ldd "$bindir/$b") || { echo "mkroot: $b is not a dynamic executable" >&2; exit 1; }
    # Libraries the binary opens itself on first use (src/ml/libs.c: XGBoost,
    # OpenBLAS/LAPACKE, liblinear) are not in ldd's answer; their sonames are
    # strings in the binary. Each is found by ldconfig, and what it loads in
    # turn by ldd.
    for soname in $(strings -n 8 "$bindir/$b" | grep -E '^lib[A-Za-z0-9_+-]+[.]so[.][0-9]+$' | sort -u); do
      path=$(awk -v s="$soname" '$1 == s && /x86-64/ { print $NF; exit }' "$cache/ldconfig")
      [ -n "$path" ] || { echo "mkroot: $b opens $soname, which is not installed" >&2; exit 1; }
      # Each library's ldd once (the binaries open the same few).
      [ -f "$cache/$soname" ] || ldd "$path" > "$cache/$soname"
      list="$list
	$soname => $path (0x0)
$(cat "$cache/$soname")"
    done
    if printf '%s\n' "$list" | grep -q 'not found'; then
      echo "mkroot: $b: a library is missing:" >&2
      printf '%s\n' "$list" | grep 'not found' >&2
      exit 1
    fi
    printf '%s\n' "$list" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' > "$out/.libs"
    while read -r soname path; do
      # shellcheck disable=SC2086
      present "$soname" $earlier "$layer" && continue
      mkdir -p "$layer/$libdir"
      cp -L "$path" "$layer/$libdir/$soname"
    done < "$out/.libs"
    rm -f "$out/.libs"
  done
}

rt=$out/runtime
# merged-/usr skeleton
mkdir -p "$rt/usr/bin" "$rt/usr/local/bin" "$rt/$libdir" "$rt/usr/lib64" "$rt/etc/ssl/certs" \
         "$rt/tmp" "$rt/run"
ln -s usr/lib "$rt/lib"
ln -s usr/lib64 "$rt/lib64"
ln -s usr/bin "$rt/bin"
ln -s usr/bin "$rt/sbin"
chmod 1777 "$rt/tmp"

# The dynamic loader, at the path every binary names.
cp -L /lib64/ld-linux-x86-64.so.2 "$rt/usr/lib64/ld-linux-x86-64.so.2"
# shellcheck disable=SC2086
closure "$rt" "" $light
# /bin/sh for the entrypoint: dash (130 kB, libc only).
cp -L /bin/dash "$rt/usr/bin/dash"
ln -s dash "$rt/usr/bin/sh"

for b in $light; do
  [ "$b" = quern ] && install -m 0755 "$bindir/quern" "$rt/usr/local/bin/quern" && continue
  install -m 0755 "$bindir/$b" "$out/bin/$b"
done
install -m 0755 "$here/entrypoint.sh" "$rt/usr/local/bin/quern-entrypoint"

# CA certificates for https:// sources (ingest, registry URLs, OTLP).
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp -L /etc/ssl/certs/ca-certificates.crt "$rt/etc/ssl/certs/ca-certificates.crt"
fi
# UTC is the services' only time zone; the file lets localtime() agree.
if [ -f /usr/share/zoneinfo/Etc/UTC ]; then
  mkdir -p "$rt/usr/share/zoneinfo/Etc"
  cp -L /usr/share/zoneinfo/Etc/UTC "$rt/usr/share/zoneinfo/Etc/UTC"
  ln -s ../usr/share/zoneinfo/Etc/UTC "$rt/etc/localtime"
fi
cat > "$rt/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
quern:x:10001:10001:quern:/data:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat > "$rt/etc/group" <<'EOF'
root:x:0:
quern:x:10001:
nogroup:x:65534:
EOF
cat > "$rt/etc/nsswitch.conf" <<'EOF'
passwd: files
group:  files
hosts:  files dns
EOF
chmod 0644 "$rt/etc/passwd" "$rt/etc/group" "$rt/etc/nsswitch.conf"
chmod 0750 "$out/data"

# shellcheck disable=SC2086
closure "$out/ml" "$rt" $ml
# shellcheck disable=SC2086
closure "$out/grpc" "$rt $out/ml" $grpc
for b in $ml $grpc; do
  install -m 0755 "$bindir/$b" "$out/bin/$b"
done
# Stripped here too when the build did not (strip is in binutils, present
# wherever the binaries were built).
if command -v strip >/dev/null 2>&1; then
  strip --strip-unneeded "$out"/bin/* "$rt/usr/local/bin/quern" 2>/dev/null || true
fi
rm -rf "$cache"
for d in runtime ml grpc bin; do
  echo "mkroot: $d $(du -sk "$out/$d" | cut -f1) kB"
done
