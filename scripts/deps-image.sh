#!/usr/bin/env bash
# Installs what `make image` and `make test-deploy` need and nothing else, so
# `make deps` / `make test` never pull container tooling. Idempotent.
#
# The engine is Debian 12's Docker (docker.io), run without systemd: the test
# starts dockerd by hand (tests/deploy/dockerd.sh) and stops it after. It was
# picked over podman + podman-compose because the deploy test needs what only a
# daemon does on its own: restart policies applied when a process dies and
# health checks run on a schedule (podman 4.3 does both through systemd, which
# CI machines and containers often lack), and Debian's docker-compose (1.29)
# honours `depends_on: condition: service_healthy`, which podman-compose 1.0.3
# ignores. See docs/operations.md ("Which engine").
#
# Each package and why it is here:
set -euo pipefail

PKGS=(
  docker.io      # dockerd + containerd + runc, and the docker CLI
  docker-compose # runs deploy/compose.yaml (Compose 1.29; `docker compose` v2 works too)
  debootstrap    # makes debian:bookworm for the source build (QUERN_IMAGE_BUILD=source) when no registry is reachable
  # the compose stack's backends: their images are these packages as installed
  # here (deploy/container/pkgroot.py); `make deps` has them already for the tests
  rabbitmq-server
  postgresql-15
  prometheus
)

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
# policy-rc.d: where systemd runs, the package would start docker.service with
# its iptables rules; the test starts its own daemon instead.
rc_added=
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod 755 /usr/sbin/policy-rc.d
  rc_added=1
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
[ -n "$rc_added" ] && $SUDO rm -f /usr/sbin/policy-rc.d
exit 0
