#!/usr/bin/env bash
# run_store_pg.sh COMMAND [ARGS...] - starts a private PostgreSQL server, runs
# COMMAND with QUERN_TEST_PG set to its URL, and stops it. CTest runs the store
# contract suite (core_test_store: every case on SQLite, then on PostgreSQL,
# then the server-restart test) and the registry's black-box tests (the
# harness passes --db $QUERN_TEST_PG?schema=... to the registry) this way.
#
# The server is ours alone: a cluster made by initdb in a temp dir (trust
# authentication, no locale: byte-order collation as SQLite's, UTF-8), its
# unix socket in that dir, a free loopback port picked at start, fsync off
# (throwaway data). PostgreSQL refuses to run as root, so as root the cluster
# belongs to the user `postgres` (created by the Debian package) and the
# server commands run through runuser. Whatever happens, the trap stops the
# server (pg_ctl stop -m immediate) and removes the temp dir. Exit 77 (CTest:
# skipped) when the server binaries are not installed.
#
# QUERN_TEST_BIND (default 127.0.0.1) is the address the server listens on
# (the multi-host fault test gives the address of a network namespace's veth;
# clients in the same subnet are then trusted too: pg_hba "samenet").
#
# Internal: "run_store_pg.sh --ctl DIR stop|start|restart" drives the server
# of DIR; the restart test calls it through QUERN_TEST_PG_CTL.
set -euo pipefail

PG_BIN=${QUERN_PG_BIN:-/usr/lib/postgresql/15/bin}
BIND=${QUERN_TEST_BIND:-127.0.0.1}

# Runs a server binary as the cluster's owner.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_ctl_do() {
    local dir=$1 action=$2
    # shellcheck disable=SC1091
    . "$dir/env.sh"
    case "$action" in
    start | restart)
        as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-p $PGPORT -k $dir -c listen_addresses=$BIND -c fsync=off" "$action" >/dev/null
        ;;
    stop)
        as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -w -t 60 -m fast stop >/dev/null
        ;;
    *)
        echo "run_store_pg: unknown action $action" >&2
        return 2
        ;;
    esac
}

if [ "${1:-}" = "--ctl" ]; then
    pg_ctl_do "$2" "$3"
    echo "run_store_pg: server $3 done" >&2
    exit 0
fi

: "${1:?usage: run_store_pg.sh COMMAND [ARGS...]}"
if [ ! -x "$PG_BIN/initdb" ] || [ ! -x "$PG_BIN/pg_ctl" ]; then
    echo "run_store_pg: PostgreSQL server binaries not found in $PG_BIN (scripts/deps.sh); skipping" >&2
    exit 77
fi
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    echo "run_store_pg: running as root and there is no user postgres to own the cluster; skipping" >&2
    exit 77
fi

# /tmp rather than QUERN_TEST_WORK: the owner must be able to reach it.
dir=$(mktemp -d /tmp/quern-pg.XXXXXX)
cleanup() {
    local rc=$?
    set +e
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -w -t 30 -m immediate stop >/dev/null 2>&1
    fi
    if [ $rc -ne 0 ] && [ -f "$dir/server.log" ]; then
        echo "run_store_pg: failed ($rc); server log tail:" >&2
        tail -20 "$dir/server.log" >&2
    fi
    rm -rf "$dir"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
port=$(/usr/bin/python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$BIND")
echo "export PGPORT=$port" > "$dir/env.sh"

t0=$(date +%s)
as_owner "$PG_BIN/initdb" -D "$dir/data" -U quern --auth=trust --no-locale -E UTF8 --no-sync \
    > "$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
if [ "$BIND" != 127.0.0.1 ]; then
    echo "host all all samenet trust" >> "$dir/data/pg_hba.conf"
fi
pg_ctl_do "$dir" start
"$PG_BIN/createdb" -h "$BIND" -p "$port" -U quern quern
echo "run_store_pg: server up on $BIND:$port in $(( $(date +%s) - t0 )) s" >&2

export QUERN_TEST_PG="postgres://quern@$BIND:$port/quern"
export QUERN_TEST_PG_CTL="bash '$0' --ctl '$dir'"
"$@"
