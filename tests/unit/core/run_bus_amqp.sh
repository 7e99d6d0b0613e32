#!/usr/bin/env bash
# run_bus_amqp.sh COMMAND [ARGS...] - starts a private RabbitMQ broker, runs
# COMMAND with QUERN_TEST_AMQP set to its URL, and stops it. CTest runs the
# bus test binary this way: the contract suite against the broker, then the
# broker-restart test (the broker is killed with SIGKILL mid-stream and started
# again; no confirmed message may be lost). bench/bench_bus runs the same way.
#
# The broker is ours alone: its own epmd, node name, ports (free loopback
# ports picked at start), Mnesia and log directories and Erlang cookie under
# a temp dir. Whatever happens, the trap stops the broker and our epmd by PID
# and removes the temp dir. Exit 77 (CTest: skipped) when rabbitmq-server is
# not installed. Works as root or as a user; needs no running service.
#
# QUERN_TEST_BIND (default 127.0.0.1) is the address AMQP listens on: the
# multi-host fault test runs this script inside a network namespace and gives
# the address of that namespace's veth (Erlang distribution and epmd stay on
# the namespace's loopback).
#
# Internal: "run_bus_amqp.sh --restart DIR" kills and restarts the broker of
# DIR; the test calls it through QUERN_TEST_AMQP_RESTART.
set -euo pipefail

RMQ_BIN=/usr/lib/rabbitmq/bin
BIND=${QUERN_TEST_BIND:-127.0.0.1}
EPMD=$(command -v epmd || true)

# The broker's environment, kept in DIR/env.sh for the restart helper.
write_env() {
    local dir=$1 amqp=$2 dist=$3 epmdp=$4
    mkdir -p "$dir/home" "$dir/mnesia" "$dir/log"
    echo '[].' > "$dir/enabled_plugins"
    printf 'loopback_users = none\nlisteners.tcp.default = %s:%s\n' "$BIND" "$amqp" > "$dir/rabbitmq.conf"
    : > "$dir/rabbitmq-env.conf"
    cat > "$dir/env.sh" <<EOF
export HOME='$dir/home'
export ERL_EPMD_PORT=$epmdp
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_NODENAME=quern-test@localhost
export RABBITMQ_NODE_IP_ADDRESS=$BIND
export RABBITMQ_NODE_PORT=$amqp
export RABBITMQ_DIST_PORT=$dist
export RABBITMQ_MNESIA_BASE='$dir/mnesia'
export RABBITMQ_LOG_BASE='$dir/log'
export RABBITMQ_CONFIG_FILE='$dir/rabbitmq'
export RABBITMQ_ADVANCED_CONFIG_FILE='$dir/advanced.config'
export RABBITMQ_ENABLED_PLUGINS_FILE='$dir/enabled_plugins'
export RABBITMQ_CONF_ENV_FILE='$dir/rabbitmq-env.conf'
export RABBITMQ_PID_FILE='$dir/broker.pid'
EOF
}

# Starts the broker of DIR in the background and waits until it serves.
start_broker() {
    local dir=$1
    # shellcheck disable=SC1091
    . "$dir/env.sh"
    rm -f "$dir/broker.pid"
    setsid "$RMQ_BIN/rabbitmq-server" >> "$dir/server.out" 2>&1 < /dev/null &
    echo $! > "$dir/wrapper.pid"
    local i
    for i in $(seq 1 120); do
        if "$RMQ_BIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" -q await_startup -t 5 \
               >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$(cat "$dir/wrapper.pid")" 2>/dev/null; then
            echo "run_bus_amqp: the broker exited during start" >&2
            tail -30 "$dir/server.out" >&2 || true
            return 1
        fi
        sleep 0.5
    done
    echo "run_bus_amqp: the broker did not start within 60 s" >&2
    tail -30 "$dir/server.out" >&2 || true
    return 1
}

# Kills the broker of DIR (the beam process, then its wrapper) and waits.
kill_broker() {
    local dir=$1 sig=${2:-KILL} pid
    for f in broker.pid wrapper.pid; do
        # the broker removes its PID file when it stops: read it once, tolerantly
        pid=$(cat "$dir/$f" 2>/dev/null || true)
        [ -n "$pid" ] || continue
        kill -"$sig" "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

if [ "${1:-}" = "--restart" ]; then
    dir=$2
    kill_broker "$dir" KILL
    echo "run_bus_amqp: broker killed; restarting" >&2
    sleep 1
    start_broker "$dir"
    echo "run_bus_amqp: broker back" >&2
    exit 0
fi

: "${1:?usage: run_bus_amqp.sh COMMAND [ARGS...]}"
if [ ! -x "$RMQ_BIN/rabbitmq-server" ] || [ -z "$EPMD" ]; then
    echo "run_bus_amqp: rabbitmq-server is not installed (scripts/deps.sh); skipping" >&2
    exit 77
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/quern-rmq.XXXXXX")
epmd_pid=""
cleanup() {
    local rc=$?
    set +e
    if [ -f "$dir/env.sh" ]; then
        # shellcheck disable=SC1091
        . "$dir/env.sh"
        timeout 20 "$RMQ_BIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" -q stop >/dev/null 2>&1 || true
        kill_broker "$dir" TERM
    fi
    if [ -n "$epmd_pid" ]; then
        kill "$epmd_pid" 2>/dev/null || true
        wait "$epmd_pid" 2>/dev/null || true
    fi
    if [ $rc -ne 0 ] && [ -d "$dir/log" ]; then
        echo "run_bus_amqp: failed ($rc); broker log tail:" >&2
        tail -20 "$dir"/log/*.log 2>/dev/null >&2 || true
    fi
    rm -rf "$dir"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Three free loopback ports: AMQP, Erlang distribution, epmd.
read -r amqp_port dist_port epmd_port < <(/usr/bin/python3 - "$BIND" <<'EOF'
import socket, sys
ss = [socket.socket() for _ in range(3)]
ss[0].bind((sys.argv[1], 0))
for s in ss[1:]:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))
EOF
)
write_env "$dir" "$amqp_port" "$dist_port" "$epmd_port"

# Our own epmd in the foreground (not -daemon), so that we can stop it by PID.
"$EPMD" -port "$epmd_port" -address 127.0.0.1 > "$dir/epmd.out" 2>&1 &
epmd_pid=$!
sleep 0.2

t0=$(date +%s)
start_broker "$dir"
echo "run_bus_amqp: broker up on $BIND:$amqp_port in $(( $(date +%s) - t0 )) s" >&2

export QUERN_TEST_AMQP="amqp://guest:guest@$BIND:$amqp_port/"
export QUERN_TEST_AMQP_RESTART="bash '$0' --restart '$dir'"
"$@"
