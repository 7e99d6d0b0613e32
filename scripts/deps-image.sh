#!/usr/bin/env bash
# Installs what `make image` needs and nothing else, so `make deps` / `make test`
# never pull container tooling. Idempotent. Skipped entirely when a working
# docker or podman is already on PATH and the base images can be pulled.
#
# Each package and why it is here (see also docs/operations.md):
set -euo pipefail

PKGS=(
  podman        # builds and runs the OCI image (daemonless; works as root without systemd)
  runc          # OCI runtime podman hands containers to (crun also works)
  debootstrap   # makes debian:bookworm(-slim) locally when no image registry is reachable
  fuse-overlayfs # podman storage on kernels/filesystems where native overlay is refused
)

have_working_docker() {
  command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

if have_working_docker; then
  echo "deps-image: a running docker daemon is present; nothing to install"
  exit 0
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps-image: all ${#PKGS[@]} packages present"
  exit 0
fi

echo "deps-image: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show "${missing[0]}" >/dev/null 2>&1; then
  $SUDO apt-get update -qq
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
