#!/usr/bin/env bash
# dockerd.sh start|stop - a private Docker daemon for `make test-deploy`.
#
#   eval "$(bash tests/deploy/dockerd.sh start)"   # prints DOCKER_HOST=... and QUERN_DOCKERD_PID=...
#   bash tests/deploy/dockerd.sh stop              # stops the daemon it started (by its PID)
#
# Debian's dockerd (package docker.io), started by hand: no systemd needed, its
# own socket, exec root and pid file under /run/quern-docker, its data root in
# /var/lib/quern-docker (kept between runs so the images' layers are reused).
# Started without iptables rules, IP forwarding or masquerading: it does not
# touch the host's firewall or forwarding (other tests on the machine use
# network namespaces), containers on its bridge reach each other and the host
# reaches them through the published ports (docker-proxy); builds that fetch
# packages use the host's network (scripts/image.sh builds with --network host).
# If a daemon already answers on that socket it is used and left running.
set -euo pipefail

run=${QUERN_DOCKERD_RUN:-/run/quern-docker}
data=${QUERN_DOCKERD_DATA:-/var/lib/quern-docker}
sock=$run/docker.sock
pidfile=$run/dockerd.pid
log=$run/dockerd.log

case "${1:-}" in
  start)
    command -v dockerd >/dev/null || { echo "dockerd.sh: dockerd missing: run scripts/deps-image.sh" >&2; exit 1; }
    mkdir -p "$run" "$data"
    if DOCKER_HOST=unix://$sock docker info >/dev/null 2>&1; then
      echo "DOCKER_HOST=unix://$sock"
      echo "QUERN_DOCKERD_PID="
      exit 0
    fi
    rm -f "$pidfile"
    setsid dockerd --data-root "$data" --exec-root "$run/exec" --pidfile "$pidfile" \
      -H "unix://$sock" --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
      >"$log" 2>&1 < /dev/null &
    pid=$!
    for _ in $(seq 1 120); do
      if DOCKER_HOST=unix://$sock docker info >/dev/null 2>&1; then
        echo "DOCKER_HOST=unix://$sock"
        echo "QUERN_DOCKERD_PID=$pid"
        exit 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    echo "dockerd.sh: dockerd did not come up; its log:" >&2
    tail -n 30 "$log" >&2
    kill "$pid" 2>/dev/null || true
    exit 1
    ;;
  stop)
    [ -s "$pidfile" ] || exit 0
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || exit 0
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || exit 0
      sleep 0.5
    done
    echo "dockerd.sh: dockerd $pid ignored SIGTERM for 30 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    ;;
  *)
    echo "usage: dockerd.sh start|stop" >&2
    exit 2
    ;;
esac
