#!/usr/bin/env bash
# Several banksim instances on one database behind HAProxy, on this machine, for tests and demos.
#
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/banksim scripts/cluster.sh up      # starts, prints the LB URL
#   scripts/cluster.sh status                                                           # each instance and the LB
#   scripts/cluster.sh kill 2                                                           # SIGKILL instance 2
#   scripts/cluster.sh start 2                                                          # starts it again
#   scripts/cluster.sh down                                                             # stops everything
#
# Settings (environment, read by `up`; later commands find them in the cluster folder):
#   DATABASE_URL     the database every instance shares (required; PostgreSQL, or one SQLite file)
#   INSTANCES        how many instances (default 3)
#   LB_PORT          the load balancer's port on 127.0.0.1 (default 8090)
#   BASE_PORT        instance i listens on BASE_PORT + i (default 18100)
#   CLUSTER_DIR      where configuration, logs, pid files and data folders go (default /tmp/banksim-cluster)
#   BANKSIM_BIN      the binary (default target/release/banksim, else target/debug/banksim)
# Every other variable of the environment (REDIS_URL, NATS_URL, JWT_SECRET, SCHEDULER_*, …) reaches the instances.
# When JWT_SECRET is unset, `up` makes one for the cluster, since the instances must share it.
#
# HAProxy (Debian: haproxy) checks GET /readyz of each instance every second and sends traffic only to the
# instances that answer 200; it sets X-Forwarded-For, which the instances believe from 127.0.0.1 only
# (TRUSTED_PROXIES).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${CLUSTER_DIR:-/tmp/banksim-cluster}

die() { echo "cluster: $*" >&2; exit 2; }

# The settings `up` was given, for the other commands.
load_settings() {
    [ -f "$dir/settings" ] || die "no cluster in $dir (run: scripts/cluster.sh up)"
    # shellcheck disable=SC1091
    . "$dir/settings"
}

instance_pid() { cat "$dir/instance-$1.pid" 2>/dev/null || true; }

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

start_instance() { # index
    local i=$1 port=$((BASE_PORT + $1))
    mkdir -p "$dir/data-$i"
    (
        cd "$dir"
        set -a
        # shellcheck disable=SC1091
        . "$dir/instance.env"
        set +a
        PORT=$port HOST=127.0.0.1 DATA_DIR="$dir/data-$i" TRUSTED_PROXIES=127.0.0.1 \
            exec "$BANKSIM_BIN" serve >>"$dir/instance-$i.log" 2>&1
    ) &
    echo $! >"$dir/instance-$i.pid"
    for _ in $(seq 1 100); do
        if "$BANKSIM_BIN" health --url "http://127.0.0.1:$port" --timeout-secs 1 >/dev/null 2>&1; then return 0; fi
        alive "$(instance_pid "$i")" || { tail -n 20 "$dir/instance-$i.log" >&2; die "instance $i exited"; }
        sleep 0.2
    done
    die "instance $i did not become ready (log: $dir/instance-$i.log)"
}

write_haproxy_config() {
    {
        cat <<EOF
# Written by scripts/cluster.sh: $INSTANCES banksim instances on 127.0.0.1 behind one frontend.
global
    maxconn 4096
    pidfile $dir/haproxy.pid

defaults
    mode http
    option forwardfor
    option http-server-close
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout queue 10s

frontend http
    bind 127.0.0.1:$LB_PORT
    # The client may not choose the address banksim rate-limits and audits.
    http-request del-header X-Forwarded-For
    default_backend banksim

backend banksim
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    # Another instance only for a request that never reached the first (safe for money movements).
    retries 2
    option redispatch
    default-server check inter 1s fall 2 rise 1
EOF
        for i in $(seq 1 "$INSTANCES"); do
            echo "    server banksim-$i 127.0.0.1:$((BASE_PORT + i))"
        done
    } >"$dir/haproxy.cfg"
    haproxy -c -q -f "$dir/haproxy.cfg" || die "haproxy refused $dir/haproxy.cfg"
}

up() {
    [ -n "${DATABASE_URL:-}" ] || die "set DATABASE_URL to the database the instances share"
    command -v haproxy >/dev/null 2>&1 || die "needs haproxy on PATH (Debian: apt-get install haproxy)"
    if [ -f "$dir/settings" ]; then die "a cluster already runs in $dir (scripts/cluster.sh down first)"; fi
    local bin=${BANKSIM_BIN:-}
    if [ -z "$bin" ]; then
        bin=$repo/target/release/banksim
        [ -x "$bin" ] || bin=$repo/target/debug/banksim
    fi
    [ -x "$bin" ] || die "no banksim binary (cargo build --release, or set BANKSIM_BIN)"
    bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
    mkdir -p "$dir"
    chmod 700 "$dir"
    cat >"$dir/settings" <<EOF
INSTANCES=${INSTANCES:-3}
LB_PORT=${LB_PORT:-8090}
BASE_PORT=${BASE_PORT:-18100}
BANKSIM_BIN=$bin
EOF
    load_settings
    # The instances' environment: this one, with a shared JWT secret (each instance would otherwise make its own).
    export JWT_SECRET=${JWT_SECRET:-$(head -c 48 /dev/urandom | base64 | tr -d '\n/+=')}
    export -p | sed -n 's/^declare -x //p' | grep '=' \
        | grep -v -E '^(PORT|HOST|DATA_DIR|TRUSTED_PROXIES|OLDPWD|PWD|SHLVL|_|SHELLOPTS|BASHOPTS)=' >"$dir/instance.env"
    chmod 600 "$dir/instance.env"
    # Migrations once, before the instances start side by side.
    "$BANKSIM_BIN" migrate >/dev/null
    for i in $(seq 1 "$INSTANCES"); do start_instance "$i"; done
    write_haproxy_config
    haproxy -D -f "$dir/haproxy.cfg"
    for _ in $(seq 1 100); do
        if "$BANKSIM_BIN" health --url "http://127.0.0.1:$LB_PORT" --timeout-secs 1 >/dev/null 2>&1; then
            echo "http://127.0.0.1:$LB_PORT"
            return 0
        fi
        sleep 0.2
    done
    die "the load balancer on port $LB_PORT did not answer"
}

status() {
    load_settings
    for i in $(seq 1 "$INSTANCES"); do
        local pid ready=down
        pid=$(instance_pid "$i")
        if alive "$pid"; then
            ready=$("$BANKSIM_BIN" health --url "http://127.0.0.1:$((BASE_PORT + i))" --timeout-secs 1 \
                >/dev/null 2>&1 && echo ready || echo "not ready")
        fi
        echo "banksim-$i  127.0.0.1:$((BASE_PORT + i))  pid ${pid:-none}  $ready"
    done
    if alive "$(cat "$dir/haproxy.pid" 2>/dev/null || true)"; then
        echo "haproxy    127.0.0.1:$LB_PORT  pid $(cat "$dir/haproxy.pid")"
    else
        echo "haproxy    not running"
    fi
}

kill_instance() { # index
    load_settings
    local pid
    pid=$(instance_pid "$1")
    alive "$pid" || die "instance $1 is not running"
    kill -9 "$pid"
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.05; done
    rm -f "$dir/instance-$1.pid"
}

down() {
    [ -f "$dir/settings" ] || { echo "cluster: nothing runs in $dir"; return 0; }
    load_settings
    local pid
    pid=$(cat "$dir/haproxy.pid" 2>/dev/null || true)
    if alive "$pid"; then kill "$pid"; fi
    for i in $(seq 1 "$INSTANCES"); do
        pid=$(instance_pid "$i")
        if alive "$pid"; then kill -TERM "$pid"; fi
    done
    for i in $(seq 1 "$INSTANCES"); do
        pid=$(instance_pid "$i")
        for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
        if alive "$pid"; then kill -9 "$pid"; fi
    done
    rm -rf "$dir"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    kill) [ -n "${2:-}" ] || die "usage: cluster.sh kill N"; kill_instance "$2" ;;
    start)
        [ -n "${2:-}" ] || die "usage: cluster.sh start N"
        load_settings
        alive "$(instance_pid "$2")" && die "instance $2 is running"
        start_instance "$2"
        ;;
    *) echo "usage: scripts/cluster.sh up|down|status|kill N|start N" >&2; exit 2 ;;
esac
