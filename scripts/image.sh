#!/usr/bin/env bash
# Builds Quern's container images with docker or podman, whichever answers.
# `make image` calls it; `make test-deploy` calls it with `all`.
#
#   scripts/image.sh [quern|stack|all]    default: quern
#     quern   quern-registry, -ingest, -prep, -train, -serve, -monitor, -alert, -console
#             (one image per service) and quern (every binary, the CLI), tagged
#             :$(version) and :latest
#     stack   quern-rabbitmq, quern-postgres, quern-prometheus: the compose
#             stack's backends, from Debian 12's packages as this host has them
#             installed (deploy/container/pkgroot.py)
#     all     both, at the same time
#   QUERN_ENGINE=docker|podman      force the engine
#   QUERN_IMAGE_BUILD=host|source   host (default): the binaries of $BUILD
#                                   (`make build`) and the libraries they load
#                                   here (needs a Debian 12 host, as CI is);
#                                   source: compile inside debian:bookworm
#                                   (deploy/container/Containerfile)
#   QUERN_CACHE_DIR                 where the debootstrap tarball of the source
#                                   build's debian:bookworm is kept between runs
#                                   (default /var/cache/quern)
#   BUILD                           the host build directory (default build)
#
# The Quern images are FROM scratch: a root holding only what the binaries load
# (deploy/container/mkroot.sh). The backends' images start from a root of
# Debian's packages copied from this host's installation (rabbitmq-server,
# postgresql-15, prometheus and what they depend on, with Debian's Essential
# set: deploy/container/pkgroot.py), imported as quern-<backend>-root and
# labelled with a hash of the packages' versions: it is made again only when
# one changes, and no registry, mirror or debootstrap is needed. Only the
# source build starts FROM debian:bookworm: where Docker Hub is reachable it is
# pulled as usual; where no registry is (this build machine, CI) it is made
# here: debootstrap --variant=minbase of bookworm from the mirror apt already
# uses, cached as a tarball so the second run takes seconds.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^project(quern VERSION \([0-9.]*\).*/\1/p' "$here/CMakeLists.txt")
what=${1:-quern}
mode=${QUERN_IMAGE_BUILD:-host}
cache=${QUERN_CACHE_DIR:-/var/cache/quern}
build=${BUILD:-build}
case "$build" in /*) ;; *) build=$here/$build ;; esac
SERVICES=(registry ingest prep train serve monitor alert console)

t0=$(date +%s)
say() { echo "image: [$(( $(date +%s) - t0 ))s] $*" >&2; }

case "$what" in quern | stack | all) ;; *) say "unknown target '$what' (quern, stack or all)"; exit 2 ;; esac
case "$mode" in host | source) ;; *) say "QUERN_IMAGE_BUILD must be host or source, not '$mode'"; exit 2 ;; esac

pick_engine() {
  if [ -n "${QUERN_ENGINE:-}" ]; then echo "$QUERN_ENGINE"; return; fi
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker; return; fi
  if command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1; then echo podman; return; fi
  say "no running docker daemon and no podman; run scripts/deps-image.sh (and start dockerd)"
  exit 1
}
engine=$(pick_engine)
say "engine: $engine"

have_image() {
  if [ "$engine" = podman ]; then podman image exists "$1"; else docker image inspect "$1" >/dev/null 2>&1; fi
}

# The Debian mirror apt is configured with here (deb822 or one-line format).
host_mirror() {
  local m
  m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
  if [ -z "$m" ]; then
    m=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | grep -v -- '-security' | awk '{print $2}' | head -n1 || true)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

# debian:bookworm for the source build (deploy/container/Containerfile), made here.
make_bookworm() {
  local mirror root tarball=$cache/bookworm-minbase.tar
  mirror=$(host_mirror)
  work=$(mktemp -d /var/tmp/quern-base.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  root=$work/rootfs
  mkdir -p "$root" "$cache"
  if [ -s "$tarball" ]; then
    say "base: cached debootstrap tree $tarball"
    tar -C "$root" --numeric-owner -xf "$tarball"
  else
    command -v debootstrap >/dev/null 2>&1 || { say "debootstrap missing: run scripts/deps-image.sh"; exit 1; }
    say "debootstrap bookworm (minbase) from $mirror (once; cached in $tarball)"
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
      || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
    tar -C "$root" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
  fi

  # apt sources as the official images have them (deb822, main + updates + security).
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Containers have no init: never start daemons from maintainer scripts.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/90quern-norecommends"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
         "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/*

  say "import debian:bookworm"
  tar -C "$root" --numeric-owner -cf - . | $engine import --change 'CMD ["bash"]' - debian:bookworm >/dev/null
  rm -rf "$work"
  trap - EXIT
}

# The source build fetches Debian packages; with dockerd started without
# iptables (tests/deploy/dockerd.sh) only the host's network reaches the mirror.
opts=(--network host)
if [ "$engine" = podman ]; then
  # The bases may exist only locally: never ask a registry for them. Docker
  # image format, because the OCI format has no HEALTHCHECK.
  opts+=(--pull=never --format docker)
fi
# rlimits IMAGE: before a build whose RUN steps start containers of IMAGE (the
# source build's; the other builds run no container). Podman asks for
# nofile/nproc limits above what some sandboxes allow (runc: "error setting
# rlimit ... operation not permitted"); then build with limits the host grants.
rlimits() {
  [ "$engine" = podman ] || return 0
  if ! podman run --rm "$1" true >/dev/null 2>&1; then
    say "default container rlimits refused here: building with nofile/nproc 4096"
    opts+=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
  fi
}

# The docker CLI's notice that its legacy builder is deprecated, once per build:
# noise (BuildKit needs the buildx plugin, which Debian 12 does not package).
quiet() { grep -v -e 'legacy builder is deprecated' -e 'buildx' -e '^[[:space:]]*$' >&2 || true; }

build_target() {  # FILE CONTEXT TARGET TAG...
  local file=$1 ctx=$2 target=$3
  shift 3
  local tags=()
  for t in "$@"; do tags+=(-t "$t"); done
  say "build $* (target $target)"
  $engine build -q "${opts[@]}" -f "$file" --target "$target" \
    --build-arg QUERN_VERSION="$version" --label "org.opencontainers.image.version=$version" \
    "${tags[@]}" "$ctx" 2> >(quiet) >/dev/null
}

quern_images() {
  local file ctx bins=()
  if [ "$mode" = host ]; then
    for b in quern "${SERVICES[@]/#/quern-}"; do
      [ -x "$build/bin/$b" ] || { say "$build/bin/$b missing: run make build first"; exit 1; }
      bins+=("$build/bin/$b")
    done
    ctx=$build/image-roots
    # The roots again only when a binary, the layout or a library changed
    # (mkroot.sh is half a minute under load; the engine's cache does the rest).
    local key
    key=$(cat "$here/deploy/container/mkroot.sh" "$here/deploy/container/entrypoint.sh" \
              "${bins[@]}" /var/lib/dpkg/status | sha256sum | cut -c1-32)
    if [ "$(cat "$ctx/.mkroot-key" 2>/dev/null)" = "$key" ]; then
      say "roots in $ctx unchanged (key $key)"
    else
      sh "$here/deploy/container/mkroot.sh" "$ctx" "$build/bin" >&2
      echo "$key" > "$ctx/.mkroot-key"
    fi
    cp "$here/deploy/container/Containerfile.roots" "$ctx/Containerfile"
    file=$ctx/Containerfile
  else
    have_image debian:bookworm || make_bookworm
    rlimits debian:bookworm
    [ -n "${JOBS:-}" ] && opts+=(--build-arg "JOBS=$JOBS")
    ctx=$here
    file=$here/deploy/container/Containerfile
  fi
  for s in "${SERVICES[@]}"; do
    build_target "$file" "$ctx" "quern-$s" "quern-$s:$version" "quern-$s:latest"
  done
  build_target "$file" "$ctx" quern "quern:$version" quern:latest
}

# stack_root NAME USER ARGS...: quern-NAME-root:latest, a root of the packages
# in ARGS and what they depend on as installed here (deploy/container/pkgroot.py,
# which ARGS are given to), made again only when its key (the packages'
# versions, the arguments) differs from the image's label.
stack_root() {
  local name=$1 user=$2 key have tmp
  shift 2
  local img=quern-$name-root:latest args=(--user "$user" "$@")
  key=$(/usr/bin/python3 "$here/deploy/container/pkgroot.py" --key "${args[@]}")
  [ -n "$key" ] || { say "no key for $img"; exit 1; }
  have=$($engine image inspect --format '{{index .Config.Labels "org.quern.pkgroot"}}' "$img" 2>/dev/null || true)
  if [ "$have" = "$key" ]; then
    say "$img: packages unchanged (key $key)"
    return
  fi
  tmp=$(mktemp -d /var/tmp/quern-root.XXXXXX)
  /usr/bin/python3 "$here/deploy/container/pkgroot.py" --out "$tmp/rootfs" "${args[@]}" \
    || { rm -rf "$tmp"; exit 1; }
  say "import $img (key $key)"
  tar -C "$tmp/rootfs" --numeric-owner -cf - . \
    | $engine import --change "LABEL org.quern.pkgroot=$key" - "$img" >/dev/null \
    || { rm -rf "$tmp"; say "import of $img failed"; exit 1; }
  rm -rf "$tmp"
}

stack_image() {  # NAME USER PKG-AND-DIR-ARGS...
  local s=$1
  stack_root "$@"
  say "build quern-$s:latest (on quern-$s-root)"
  $engine build -q "${opts[@]}" -f "$here/deploy/$s/Containerfile" -t "quern-$s:$version" \
    -t "quern-$s:latest" "$here/deploy/$s" 2> >(quiet) >/dev/null
}

# One after the other: each is mostly file copying, which two at once only
# slows. The directories are what each package's postinst (or the official
# image) makes for the service's user.
stack_images() {
  stack_image rabbitmq rabbitmq --user epmd \
    --dir /etc/rabbitmq:rabbitmq:rabbitmq:0755 --dir /var/lib/rabbitmq:rabbitmq:rabbitmq:0755 \
    --dir /var/log/rabbitmq:rabbitmq:rabbitmq:0755 rabbitmq-server
  stack_image postgres postgres \
    --dir /var/lib/postgresql/data:postgres:postgres:0700 --dir /run/postgresql:postgres:postgres:2775 \
    --dir /docker-entrypoint-initdb.d:root:root:0755 postgresql-15
  stack_image prometheus prometheus --dir /prometheus:prometheus:prometheus:0755 prometheus
}

size_of() {
  $engine image inspect --format '{{.Size}}' "$1"
}

report() {
  local imgs=("$@") i s
  printf '%-22s %10s\n' image bytes >&2
  for i in "${imgs[@]}"; do
    s=$(size_of "$i")
    printf '%-22s %10s  (%s MB)\n' "$i" "$s" "$(awk -v s="$s" 'BEGIN { printf "%.1f", s / 1e6 }')" >&2
  done
}

built=()
pids=()
# The Quern images and the backends' at the same time: each side waits on the
# engine and the disk for much of its time.
if [ "$what" = quern ] || [ "$what" = all ]; then
  quern_images &
  pids+=($!)
  for s in "${SERVICES[@]}"; do built+=("quern-$s:latest"); done
  built+=(quern:latest)
fi
if [ "$what" = stack ] || [ "$what" = all ]; then
  stack_images &
  pids+=($!)
  built+=(quern-rabbitmq:latest quern-postgres:latest quern-prometheus:latest)
fi
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
[ "$failed" = 0 ] || { say "a build failed (above)"; exit 1; }
say "done"
report "${built[@]}"
