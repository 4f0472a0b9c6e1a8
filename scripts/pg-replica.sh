#!/usr/bin/env bash
# A real physical streaming replica of a PostgreSQL primary, for banksim's DATABASE_REPLICA_URL.
#
#   scripts/pg-replica.sh start    # base backup + a standby on its own port; prints the replica's URL
#   scripts/pg-replica.sh status   # exit 0 while it runs (prints its replay position and lag), 3 when it does not
#   scripts/pg-replica.sh stop     # stops it, drops its replication slot, removes its folder
#
# Settings (environment):
#   PRIMARY_HOST (127.0.0.1), PRIMARY_PORT (5432), PRIMARY_USER (postgres): the primary, reached over TCP; the
#     user needs the REPLICATION attribute (a superuser has it).
#   REPLICA_PORT (5433): the standby's port (it listens on 127.0.0.1 only).
#   REPLICA_DIR (${TMPDIR:-/tmp}/banksim-replica-$REPLICA_PORT): the standby's folder (data, log, socket).
#   REPLICA_SLOT (banksim_replica_$REPLICA_PORT): the physical replication slot kept on the primary, so it keeps
#     the WAL the standby has not received yet.
#   REPLICA_DATABASE (postgres): the database named in the printed URL.
#   PG_OS_USER (postgres): the account the server runs as when this script runs as root (PostgreSQL refuses root).
#   PG_BIN: the folder of pg_ctl and pg_basebackup (default: the primary's major version under
#     /usr/lib/postgresql, else PATH).
#
# Idempotent: `start` on a running standby prints its URL again; `stop` on a stopped one cleans what is left.
# When the primary's pg_hba.conf lets no replication connection in from this machine, `start` adds one line for
# 127.0.0.1 (with the authentication method of the primary's other local TCP rule) and reloads the primary with
# pg_reload_conf() — never a restart; the last `stop` removes that line again. Everything goes to stderr except
# the URL, so `URL=$(scripts/pg-replica.sh start)` works.
set -euo pipefail

PRIMARY_HOST=${PRIMARY_HOST:-127.0.0.1}
PRIMARY_PORT=${PRIMARY_PORT:-5432}
PRIMARY_USER=${PRIMARY_USER:-postgres}
REPLICA_PORT=${REPLICA_PORT:-5433}
REPLICA_DIR=${REPLICA_DIR:-${TMPDIR:-/tmp}/banksim-replica-$REPLICA_PORT}
REPLICA_SLOT=${REPLICA_SLOT:-banksim_replica_$REPLICA_PORT}
REPLICA_DATABASE=${REPLICA_DATABASE:-postgres}
PG_OS_USER=${PG_OS_USER:-postgres}
DATA="$REPLICA_DIR/data"
HBA_MARK="# banksim scripts/pg-replica.sh"

log() { printf 'pg-replica: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Runs a command as the server's account when we are root (initdb, postgres and pg_ctl refuse root).
as_pg() {
  if [ "$(id -u)" -ne 0 ]; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    runuser -u "$PG_OS_USER" -- "$@"
  else
    su "$PG_OS_USER" -s /bin/sh -c "$(printf '%q ' "$@")"
  fi
}

primary_sql() {
  psql -X -q -v ON_ERROR_STOP=1 -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$PRIMARY_USER" -d postgres -tAc "$1"
}

replica_sql() {
  psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$REPLICA_PORT" -U "$PRIMARY_USER" -d postgres -tAc "$1"
}

replica_url() {
  printf 'postgres://%s@127.0.0.1:%s/%s\n' "$PRIMARY_USER" "$REPLICA_PORT" "$REPLICA_DATABASE"
}

# The folder of the server binaries: PG_BIN, else the primary's major version under /usr/lib/postgresql (a
# pg_basebackup older than the server cannot copy it), else whatever PATH has.
find_bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  local major
  major=$(primary_sql "SELECT current_setting('server_version_num')::int / 10000" 2>/dev/null || true)
  if [ -n "$major" ] && [ -x "/usr/lib/postgresql/$major/bin/pg_ctl" ]; then
    echo "/usr/lib/postgresql/$major/bin"
  elif command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
  else
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
  fi
}

running() {
  [ -f "$DATA/PG_VERSION" ] && as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

# Whether a replication connection from here is let in (IDENTIFY_SYSTEM over the replication protocol).
replication_allowed() {
  psql -X -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$PRIMARY_USER" \
    "dbname=replication replication=true" -c "IDENTIFY_SYSTEM" >/dev/null 2>&1
}

# Adds a replication rule for 127.0.0.1 to the primary's pg_hba.conf (same authentication as its local TCP rule)
# and reloads it. Only for a primary on this machine: its pg_hba.conf is a file here.
allow_replication() {
  replication_allowed && return 0
  case "$PRIMARY_HOST" in
    127.0.0.1 | localhost | ::1) ;;
    *) die "the primary at $PRIMARY_HOST refuses replication connections: add a 'host replication' rule to its pg_hba.conf" ;;
  esac
  local hba method
  hba=$(primary_sql "SHOW hba_file")
  [ -w "$hba" ] || die "the primary refuses replication connections and $hba is not writable here (run as root or its owner)"
  method=$(primary_sql "SELECT auth_method FROM pg_hba_file_rules
    WHERE type = 'host' AND address = '127.0.0.1' AND 'all' = ANY(database) ORDER BY line_number LIMIT 1")
  method=${method:-trust}
  log "adding 'host replication all 127.0.0.1/32 $method' to $hba and reloading the primary"
  printf 'host    replication     all     127.0.0.1/32    %s    %s\n' "$method" "$HBA_MARK" >>"$hba"
  primary_sql "SELECT pg_reload_conf()" >/dev/null
  for _ in $(seq 1 50); do
    replication_allowed && return 0
    sleep 0.1
  done
  die "the primary still refuses replication connections after the reload (see $hba)"
}

# Removes the rule added above once no replica of ours is left on the primary.
forget_replication_rule() {
  local hba others
  hba=$(primary_sql "SHOW hba_file" 2>/dev/null) || return 0
  [ -w "$hba" ] && grep -qF "$HBA_MARK" "$hba" || return 0
  others=$(primary_sql "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'banksim\_replica\_%'")
  [ "$others" = "0" ] || return 0
  log "removing the replication rule this script added to $hba"
  # Rewritten in place (not replaced), so the file keeps its owner and mode.
  local kept
  kept=$(grep -vF "$HBA_MARK" "$hba" || true)
  printf '%s\n' "$kept" >"$hba"
  primary_sql "SELECT pg_reload_conf()" >/dev/null
}

# The settings a standby must share with its primary (it refuses to start with lower ones).
hot_standby_minimums() {
  primary_sql "SELECT string_agg(format('%s = %s', name, setting), E'\n' ORDER BY name) FROM pg_settings
    WHERE name IN ('max_connections', 'max_worker_processes', 'max_wal_senders', 'max_prepared_transactions',
                   'max_locks_per_transaction')"
}

start() {
  if running; then
    log "already running on port $REPLICA_PORT ($DATA)"
    replica_url
    return 0
  fi
  command -v psql >/dev/null 2>&1 || die "psql is needed"
  # A busy primary (a checkpoint, its connection slots taken for a moment) may answer a ping late: wait a little.
  local tries=0
  until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$PRIMARY_USER"; do
    tries=$((tries + 1))
    [ "$tries" -lt 30 ] || die "no primary at $PRIMARY_HOST:$PRIMARY_PORT ($(pg_isready -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" 2>&1))"
    sleep 1
  done
  allow_replication

  # What a failed earlier start left: a stopped data folder, an unused slot of the same name.
  rm -rf "$DATA"
  primary_sql "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
    WHERE slot_name = '$REPLICA_SLOT' AND NOT active" >/dev/null
  mkdir -p "$REPLICA_DIR"
  if [ "$(id -u)" -eq 0 ]; then chown "$PG_OS_USER:" "$REPLICA_DIR"; fi
  chmod 700 "$REPLICA_DIR"

  log "base backup of $PRIMARY_HOST:$PRIMARY_PORT into $DATA (slot $REPLICA_SLOT)"
  as_pg "$BIN/pg_basebackup" -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$PRIMARY_USER" -D "$DATA" \
    --write-recovery-conf --wal-method=stream --create-slot --slot="$REPLICA_SLOT" --checkpoint=fast --no-sync

  # A primary packaged by Debian keeps postgresql.conf and pg_hba.conf outside its data folder: the copy then
  # has none. The standby gets its own, and its own port, socket folder and standby settings in any case
  # (postgresql.auto.conf is read last, after what the base backup copied).
  if [ ! -f "$DATA/postgresql.conf" ]; then
    as_pg sh -c "cat >'$DATA/postgresql.conf'" <<<"$(hot_standby_minimums)"
  fi
  if [ ! -f "$DATA/pg_hba.conf" ]; then
    as_pg sh -c "cat >'$DATA/pg_hba.conf'" <<EOF
local   all   all                  trust
host    all   all   127.0.0.1/32   trust
EOF
  fi
  [ -f "$DATA/pg_ident.conf" ] || as_pg touch "$DATA/pg_ident.conf"
  as_pg sh -c "cat >>'$DATA/postgresql.auto.conf'" <<EOF
# banksim scripts/pg-replica.sh
port = $REPLICA_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$REPLICA_DIR'
hot_standby = on
hot_standby_feedback = on
max_standby_streaming_delay = 5s
logging_collector = off
EOF
  cat >"$REPLICA_DIR/replica.env" <<EOF
PRIMARY_HOST=$PRIMARY_HOST
PRIMARY_PORT=$PRIMARY_PORT
PRIMARY_USER=$PRIMARY_USER
REPLICA_SLOT=$REPLICA_SLOT
EOF

  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$REPLICA_DIR/replica.log" -w -t 120 start >&2 \
    || { tail -n 30 "$REPLICA_DIR/replica.log" >&2; die "the standby did not start"; }
  for _ in $(seq 1 100); do
    if [ "$(replica_sql "SELECT pg_is_in_recovery() AND pg_last_wal_receive_lsn() IS NOT NULL" 2>/dev/null)" = "t" ]; then
      log "streaming from $PRIMARY_HOST:$PRIMARY_PORT on port $REPLICA_PORT"
      replica_url
      return 0
    fi
    sleep 0.1
  done
  tail -n 30 "$REPLICA_DIR/replica.log" >&2
  die "the standby started but does not stream"
}

stop() {
  # The primary this replica was made of, as recorded at start (the environment may say otherwise now).
  if [ -f "$REPLICA_DIR/replica.env" ]; then
    # shellcheck disable=SC1091
    . "$REPLICA_DIR/replica.env"
  fi
  if running; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2
  fi
  if pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" 2>/dev/null; then
    # The walsender of the stopped standby takes a moment to let go of the slot.
    for _ in $(seq 1 50); do
      dropped=$(primary_sql "SELECT count(*) FROM (SELECT pg_drop_replication_slot(slot_name)
        FROM pg_replication_slots WHERE slot_name = '$REPLICA_SLOT' AND NOT active) AS gone")
      left=$(primary_sql "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$REPLICA_SLOT'")
      [ "$left" = "0" ] && break
      sleep 0.1
    done
    [ "${left:-0}" = "0" ] || log "slot $REPLICA_SLOT is still in use; drop it by hand"
    [ "${dropped:-0}" = "0" ] || log "dropped slot $REPLICA_SLOT"
    forget_replication_rule
  else
    log "primary $PRIMARY_HOST:$PRIMARY_PORT is down: slot $REPLICA_SLOT is left on it"
  fi
  rm -rf "$REPLICA_DIR"
  log "stopped"
}

status() {
  if ! running; then
    log "not running (port $REPLICA_PORT, $DATA)"
    return 3
  fi
  replica_sql "SELECT format('replaying %s (received %s), last replayed commit at %s', pg_last_wal_replay_lsn(),
    pg_last_wal_receive_lsn(), coalesce(pg_last_xact_replay_timestamp()::text, 'none yet'))"
  replica_url
}

BIN=$(find_bin)
[ -x "$BIN/pg_ctl" ] || die "pg_ctl not found (set PG_BIN)"
case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
