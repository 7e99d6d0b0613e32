#!/usr/bin/env bash
# Builds the Quern image (deploy/container/Containerfile) with podman or docker,
# whichever works here. `make image` calls it.
#
#   scripts/image.sh [TAG]          default TAG: quern:$(version) and quern:latest
#   QUERN_ENGINE=docker|podman      force the engine
#   QUERN_BASE=local                always rebuild the base images with debootstrap
#
# The Containerfile is standard: it starts FROM debian:bookworm and
# debian:bookworm-slim. Where Docker Hub is reachable those are pulled as usual.
# Where no image registry is reachable (this build machine), the two bases are
# made locally: debootstrap --variant=minbase of bookworm from the Debian mirror
# this machine's apt already uses, imported under the same names. The slim one
# drops docs, man pages and locales the way the official slim variant does.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^project(quern VERSION \([0-9.]*\).*/\1/p' "$here/CMakeLists.txt")
tag=${1:-quern:$version}

say() { echo "image: $*" >&2; }

pick_engine() {
  if [ -n "${QUERN_ENGINE:-}" ]; then echo "$QUERN_ENGINE"; return; fi
  if command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1; then echo podman; return; fi
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker; return; fi
  say "neither podman nor a running docker daemon found; run scripts/deps-image.sh"
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

make_bases() {
  command -v debootstrap >/dev/null 2>&1 || { say "debootstrap missing: run scripts/deps-image.sh"; exit 1; }
  local mirror root
  mirror=$(host_mirror)
  work=$(mktemp -d /var/tmp/quern-base.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  root=$work/rootfs
  say "debootstrap bookworm (minbase) from $mirror"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

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
  tar -C "$root" --numeric-owner -cf "$work/bookworm.tar" .
  $engine import --change 'CMD ["bash"]' "$work/bookworm.tar" debian:bookworm >/dev/null

  # Slim: what the official -slim variant leaves out (docs, man, locales),
  # also for packages installed later (dpkg path-exclude).
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/groff/* "$root"/usr/share/info/* \
         "$root"/usr/share/lintian/* "$root"/usr/share/linda/*
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
  say "import debian:bookworm-slim"
  tar -C "$root" --numeric-owner -cf "$work/slim.tar" .
  $engine import --change 'CMD ["bash"]' "$work/slim.tar" debian:bookworm-slim >/dev/null
  rm -rf "$work"
}

ensure_bases() {
  if [ "${QUERN_BASE:-}" = local ]; then make_bases; return; fi
  local missing=0 img
  for img in debian:bookworm debian:bookworm-slim; do have_image "$img" || missing=1; done
  [ $missing -eq 0 ] && return
  for img in debian:bookworm debian:bookworm-slim; do
    have_image "$img" && continue
    if timeout 60 $engine pull -q "docker.io/library/$img" >/dev/null 2>&1; then
      [ "$engine" = podman ] && podman tag "docker.io/library/$img" "$img"
      continue
    fi
    say "cannot pull $img: making the base images locally"
    make_bases
    return
  done
}

ensure_bases

opts=()
if [ "$engine" = podman ]; then
  # The bases may exist only locally: never ask a registry for them. Docker
  # image format, because the OCI format has no HEALTHCHECK.
  opts+=(--pull=never --format docker)
  # Podman asks for nofile/nproc limits above what some sandboxes allow
  # (runc: "error setting rlimit ... operation not permitted"); then build
  # with limits the host grants.
  if ! podman run --rm debian:bookworm-slim true >/dev/null 2>&1; then
    say "default container rlimits refused here: building with nofile/nproc 4096"
    opts+=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
  fi
fi
[ -n "${JOBS:-}" ] && opts+=(--build-arg "JOBS=$JOBS")
say "build $tag"
$engine build "${opts[@]}" -f "$here/deploy/container/Containerfile" \
  --build-arg QUERN_VERSION="$version" -t "$tag" -t quern:latest "$here"
size=$($engine image inspect --format '{{.Size}}' "$tag")
say "built $tag: $size bytes ($((size / 1000000)) MB)"
