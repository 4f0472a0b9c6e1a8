#!/usr/bin/env bash
# A local pg_auto_failover formation for tests and demos: a monitor, a primary and a secondary, each a PostgreSQL of
# its own (own port, own data folder under HA_DIR), each node kept by its `pg_autoctl run` keeper. When the primary
# is lost, the monitor promotes the secondary; banksim follows it through a multi-host URL.
#
#   scripts/pg-ha.sh up          # prints the multi-host URL for DATABASE_URL
#   scripts/pg-ha.sh status      # the formation as the monitor sees it
#   scripts/pg-ha.sh failover    # loses the primary as a crash would (keeper killed, pg_ctl stop -m immediate),
#                                # then waits until the other node is promoted and commits; says how long it took
#   scripts/pg-ha.sh lose-primary  # only the loss: prints the node it stopped and returns at once
#   scripts/pg-ha.sh down        # stops everything and removes HA_DIR
#
# Settings: HA_DIR (default /tmp/banksim-ha), HA_BASE_PORT (monitor on it, nodes on +1 and +2; default 16100),
# HA_DATABASE (default banksim), PG_BIN (default /usr/lib/postgresql/15/bin).
# Needs Debian's postgresql-15-auto-failover and pg-auto-failover-cli. Run as root, every server runs as `postgres`.
set -euo pipefail

dir=${HA_DIR:-/tmp/banksim-ha}
base_port=${HA_BASE_PORT:-16100}
database=${HA_DATABASE:-banksim}
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
export PATH=$pg_bin:$PATH

die() { echo "pg-ha: $*" >&2; exit 2; }

# Runs a command as the servers' account, with pg_autoctl's state kept under HA_DIR.
as_server() {
    local env=(env "PATH=$PATH" "XDG_CONFIG_HOME=$dir/config" "XDG_DATA_HOME=$dir/share")
    if [ "$(id -u)" = 0 ]; then
        (cd "$dir" && runuser -u postgres -- "${env[@]}" "$@")
    else
        (cd "$dir" && "${env[@]}" "$@")
    fi
}

monitor_url() { echo "postgres://autoctl_node@127.0.0.1:$base_port/pg_auto_failover?sslmode=disable"; }

node_port() { echo $((base_port + $1)); }

# The state the monitor reports for node N ("primary", "secondary", …).
reported_state() {
    psql -h 127.0.0.1 -p "$base_port" -U autoctl_node -d pg_auto_failover -qAtc \
        "SELECT reportedstate FROM pgautofailover.node WHERE nodename = 'node$1'" 2>/dev/null || true
}

wait_for() { # description, seconds, command...
    local what=$1 seconds=$2
    shift 2
    for _ in $(seq 1 $((seconds * 5))); do
        if "$@"; then return 0; fi
        sleep 0.2
    done
    show_logs
    die "timed out waiting for $what (logs in $dir)"
}

# The last lines of every server's and keeper's log, for a failure's message (a test removes HA_DIR after it).
show_logs() {
    local log
    for log in "$dir"/*.log; do
        [ -f "$log" ] || continue
        echo "--- ${log##*/}" >&2
        tail -n 25 "$log" >&2
    done
}

keeper() { # name
    as_server pg_autoctl run --pgdata "$dir/$1" >>"$dir/$1.log" 2>&1 &
    echo $! >"$dir/$1.keeper.pid"
}

is_ready() { pg_isready -q -h 127.0.0.1 -p "$1"; }
is_state() { [ "$(reported_state "$1")" = "$2" ]; }

up() {
    command -v pg_autoctl >/dev/null 2>&1 || die "needs pg_autoctl (Debian: pg-auto-failover-cli, postgresql-15-auto-failover)"
    [ -e "$dir" ] && die "$dir exists: a formation runs there (scripts/pg-ha.sh down first)"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    as_server pg_autoctl create monitor --pgdata "$dir/monitor" --pgport "$base_port" --hostname 127.0.0.1 \
        --auth trust --no-ssl >>"$dir/monitor.log" 2>&1
    keeper monitor
    wait_for "the monitor" 60 is_ready "$base_port"
    # Detect a lost primary sooner than the defaults (20 s unhealthy, 5 s checks): this is a local formation.
    psql -h 127.0.0.1 -p "$base_port" -U postgres -d pg_auto_failover -qc \
        "ALTER SYSTEM SET pgautofailover.health_check_period = 1000" \
        -c "ALTER SYSTEM SET pgautofailover.health_check_timeout = 1000" \
        -c "ALTER SYSTEM SET pgautofailover.health_check_max_retries = 1" \
        -c "ALTER SYSTEM SET pgautofailover.health_check_retry_delay = 500" \
        -c "ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = 5000" \
        -c "ALTER SYSTEM SET pgautofailover.primary_demote_timeout = 5000" \
        -c "SELECT pg_reload_conf()" >/dev/null
    for n in 1 2; do
        as_server pg_autoctl create postgres --pgdata "$dir/node$n" --pgport "$(node_port "$n")" \
            --hostname 127.0.0.1 --name "node$n" --auth trust --no-ssl --dbname "$database" \
            --monitor "$(monitor_url)" >>"$dir/node$n.log" 2>&1
        keeper "node$n"
        if [ "$n" = 1 ]; then
            wait_for "node1 to be a primary" 120 is_ready "$(node_port 1)"
        fi
    done
    # The standby's base backup waits for a checkpoint of the primary; ask for it rather than wait for one.
    for _ in $(seq 1 60); do
        is_state 2 secondary && break
        psql -h 127.0.0.1 -p "$(node_port 1)" -U postgres -d postgres -qc "CHECKPOINT" >/dev/null 2>&1 || true
        sleep 1
    done
    wait_for "node2 to be a secondary" 120 is_state 2 secondary
    wait_for "node1 to be the primary" 60 is_state 1 primary
    url
}

url() {
    echo "postgres://postgres@127.0.0.1:$(node_port 1),127.0.0.1:$(node_port 2)/$database?target_session_attrs=read-write"
}

status() {
    [ -d "$dir/monitor" ] || die "no formation in $dir"
    as_server pg_autoctl show state --pgdata "$dir/monitor"
}

# The node that is primary now (1 or 2), by asking each node itself.
current_primary() {
    for n in 1 2; do
        if [ "$(psql -h 127.0.0.1 -p "$(node_port "$n")" -U postgres -d postgres -qAtc \
            'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; then
            echo "$n"
            return 0
        fi
    done
    return 1
}

# SIGKILL to a process and every process under it (pg_autoctl's workers rename themselves, so no name matches).
kill_tree() {
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$child"; done
    kill -9 "$1" 2>/dev/null || true
}

# Whether node N commits a transaction that has an id (so it would wait for a synchronous standby) within 1 s.
commits() {
    timeout 1 psql -h 127.0.0.1 -p "$(node_port "$1")" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 \
        -c "BEGIN" -c "SELECT txid_current()" -c "COMMIT" >/dev/null 2>&1
}

# Loses the primary as a crashed machine would: its keeper (which would restart it) and its PostgreSQL, at once.
# Prints the node it stopped (1 or 2).
lose_primary() {
    local primary
    primary=$(current_primary) || die "no node is a primary now"
    kill_tree "$(cat "$dir/node$primary.keeper.pid")"
    as_server pg_ctl stop -D "$dir/node$primary" -m immediate >/dev/null 2>&1 || true
    echo "$primary"
}

failover() {
    local primary started=$SECONDS
    primary=$(lose_primary)
    echo "node$primary stopped; waiting for the monitor to promote the other node" >&2
    local other=$((3 - primary))
    # Promoted is not enough: until the monitor lets it write alone, a commit waits for a synchronous standby.
    wait_for "node$other to commit writes" 90 commits "$other"
    echo "node$other is the primary and commits ($((SECONDS - started)) s after node$primary stopped)" >&2
}

down() {
    [ -d "$dir" ] || return 0
    local keeper
    for keeper in "$dir"/*.keeper.pid; do
        [ -f "$keeper" ] && kill_tree "$(cat "$keeper")"
    done
    for node in node1 node2 monitor; do
        [ -d "$dir/$node" ] && as_server pg_ctl stop -D "$dir/$node" -m immediate >/dev/null 2>&1 || true
    done
    rm -rf "$dir"
}

case "${1:-}" in
    up) up ;;
    url) url ;;
    status) status ;;
    failover) failover ;;
    lose-primary) lose_primary ;;
    down) down ;;
    *) echo "usage: scripts/pg-ha.sh up|url|status|failover|lose-primary|down" >&2; exit 2 ;;
esac
