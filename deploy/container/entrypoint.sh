#!/bin/sh
# quern-entrypoint - the image's ENTRYPOINT: runs the command it is given
# (`quern-registry`, `quern-serve --models adult`, `quern models list`, ...).
#
# Inside a container a service must listen on every interface to be reached,
# while the binaries default to 127.0.0.1 (safe on a laptop). So for a
# quern-<service> command with neither --listen nor QUERN_LISTEN, this sets
# QUERN_LISTEN=0.0.0.0:<its port from DESIGN.md>, and likewise the gRPC port
# of quern-serve. It then execs the command, which becomes PID 1: signals
# (SIGTERM drains) reach it directly, and `quern healthcheck` finds its
# listen address in /proc/1.
set -eu
[ $# -gt 0 ] || set -- quern --help

case "$1" in
  quern-registry) port=7701 ;;
  quern-ingest)   port=7702 ;;
  quern-prep)     port=7703 ;;
  quern-train)    port=7704 ;;
  quern-serve)    port=7705 ;;
  quern-monitor)  port=7707 ;;
  quern-alert)    port=7708 ;;
  quern-console)  port=7709 ;;
  *)              port= ;;
esac

has_flag() {
  flag=$1
  shift
  for a in "$@"; do
    case "$a" in "$flag" | "$flag"=*) return 0 ;; esac
  done
  return 1
}

if [ -n "$port" ] && [ -z "${QUERN_LISTEN:-}" ] && ! has_flag --listen "$@"; then
  export QUERN_LISTEN="0.0.0.0:$port"
fi
if [ "$1" = quern-serve ] && [ -z "${QUERN_GRPC_LISTEN:-}" ] && ! has_flag --grpc-listen "$@"; then
  export QUERN_GRPC_LISTEN="0.0.0.0:7706"
fi
exec "$@"
