#!/usr/bin/env bash
# The HTTP contract, proven against live servers: scripts/contract.sh <path-to-banksim-binary>
#
# For SQLite and then PostgreSQL, it starts a banksim of its own (temporary data dir, free port, auth rate limit
# raised), seeds the demo users and runs
#   1. schemathesis (every check, every phase including the stateful one) authenticated as the plain user `sefa`,
#      then as the admin, with a fixed seed and example count so that a run is repeatable;
#   2. the Postman collection of clients/postman with newman, on a fresh server of its own.
# Then it checks the TypeScript client types: generated from docs/openapi.snapshot.json exactly as committed, and
# the typed example compiles (`tsc --noEmit`). Any failure fails the script.
#
# Installs what it needs on first use: schemathesis into a virtual environment in ~/.cache/banksim-contract, and
# the pinned npm packages of clients/ with `npm ci`. Environment: CONTRACT_PG_URL (a PostgreSQL server where it may
# create and drop databases, default postgres://postgres@127.0.0.1:5432), CONTRACT_SEED, CONTRACT_EXAMPLES,
# CONTRACT_BACKENDS (default "sqlite postgres").
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 <path-to-banksim-binary>" >&2
  exit 2
fi
BIN=$(realpath "$1")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

SCHEMATHESIS_VERSION=4.32.5
SEED=${CONTRACT_SEED:-20261201}
EXAMPLES=${CONTRACT_EXAMPLES:-25}
PG_URL=${CONTRACT_PG_URL:-postgres://postgres@127.0.0.1:5432}
BACKENDS=${CONTRACT_BACKENDS:-sqlite postgres}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/banksim-contract
VENV=$CACHE/schemathesis-$SCHEMATHESIS_VERSION

log() { printf '\n==> %s\n' "$*"; }

SCRATCH=$(mktemp -d)
SERVER_PID=
SERVER_LOG=/dev/null
# The PostgreSQL databases made, one a line (a file: fresh_database runs in a command substitution's subshell).
DATABASES=$SCRATCH/databases
cleanup() {
  stop_server
  if [ -f "$DATABASES" ]; then
    while read -r db; do
      psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
    done <"$DATABASES"
  fi
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

install_tools() {
  if [ ! -x "$VENV/bin/schemathesis" ]; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
  for dir in clients/postman clients/typescript; do
    if [ -f "$dir/package-lock.json" ]; then
      log "npm ci in $dir"
      (cd "$dir" && npm ci --silent --no-audit --no-fund)
    fi
  done
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A fresh database URL for `backend`.
fresh_database() {
  local backend=$1
  case "$backend" in
    sqlite) echo "sqlite:$(mktemp -d -p "$SCRATCH")/banksim.db" ;;
    postgres)
      local db
      db="banksim_contract_$(date +%s)_$RANDOM"
      psql "$PG_URL/postgres" -qc "CREATE DATABASE $db" >/dev/null
      echo "$db" >>"$DATABASES"
      echo "$PG_URL/$db"
      ;;
    *) echo "unknown backend $backend" >&2; return 1 ;;
  esac
}

# Starts a seeded banksim on a fresh database of `backend`; sets BASE_URL and SERVER_PID.
start_server() {
  local backend=$1 url data port
  url=$(fresh_database "$backend")
  data=$(mktemp -d -p "$SCRATCH")
  port=$(free_port)
  export DATABASE_URL=$url DATA_DIR=$data
  "$BIN" seed --demo >"$data/seed.log" 2>&1 || { cat "$data/seed.log"; return 1; }
  PORT=$port HOST=127.0.0.1 LOG_FORMAT=text AUTH_RATE_LIMIT_PER_MINUTE=1000000 "$BIN" serve >"$data/server.log" 2>&1 &
  SERVER_PID=$!
  SERVER_LOG=$data/server.log
  BASE_URL="http://127.0.0.1:$port"
  for _ in $(seq 1 60); do
    "$BIN" health --url "$BASE_URL" >/dev/null 2>&1 && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.5
  done
  tail -n 40 "$SERVER_LOG" >&2
  echo "banksim did not become ready on $backend" >&2
  return 1
}

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}

access_token() {
  curl -fsS "$BASE_URL/api/v1/auth/login" -H 'Content-Type: application/json' \
    -d "{\"email\": \"$1\", \"password\": \"password123\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}

TOTAL_CASES=0
# schemathesis against the running server as `who`; fails on any failure. `use_after_free` is excluded here as
# well as in the config file: `--checks all` brings it back in the stateful phase (see the config for why a 200
# after a DELETE is banksim's contract).
run_schemathesis() {
  local backend=$1 who=$2 email=$3 token out cases status=0
  token=$(access_token "$email")
  out="$SCRATCH/schemathesis-$backend-$who.txt"
  log "schemathesis on $backend as $who (seed $SEED, $EXAMPLES examples per operation)"
  "$VENV/bin/schemathesis" --no-color --config-file scripts/contract/schemathesis.toml run "$BASE_URL/openapi.json" \
    --checks all --exclude-checks use_after_free --seed "$SEED" --max-examples "$EXAMPLES" --workers 1 \
    --header "Authorization: Bearer $token" >"$out" 2>&1 || status=$?
  cases=$(grep -oE '[0-9]+ generated' "$out" | tail -n 1 | grep -oE '[0-9]+' || echo 0)
  if [ "$status" -ne 0 ]; then
    cat "$out"
    tail -n 40 "$SERVER_LOG"
    echo "schemathesis failed on $backend as $who" >&2
    return "$status"
  fi
  grep -E 'generated|passed|failures' "$out" | tail -n 3
  echo "schemathesis $backend/$who: $cases cases, no failures"
  TOTAL_CASES=$((TOTAL_CASES + cases))
}

run_newman() {
  local backend=$1
  [ -f clients/postman/banksim.postman_collection.json ] || return 0
  log "newman on $backend (fresh server)"
  clients/postman/node_modules/.bin/newman run clients/postman/banksim.postman_collection.json \
    -e clients/postman/banksim.postman_environment.json --env-var "baseUrl=$BASE_URL" \
    --bail --color off --reporters cli
}

check_typescript() {
  [ -f clients/typescript/package.json ] || return 0
  log "TypeScript types: generated from the snapshot as committed, and the example type-checks"
  (
    cd clients/typescript
    node_modules/.bin/openapi-typescript ../../docs/openapi.snapshot.json -o "$SCRATCH/banksim.d.ts" >/dev/null
    if ! diff -u src/banksim.d.ts "$SCRATCH/banksim.d.ts"; then
      echo "clients/typescript/src/banksim.d.ts is stale: run 'npm run generate' in clients/typescript" >&2
      exit 1
    fi
    node_modules/.bin/tsc --noEmit
  )
}

install_tools
check_typescript
for backend in $BACKENDS; do
  start_server "$backend"
  # The plain user first: the admin's run may change or deactivate the demo users.
  run_schemathesis "$backend" user sefa@example.com
  run_schemathesis "$backend" admin admin@example.com
  stop_server
  start_server "$backend"
  run_newman "$backend"
  stop_server
done
log "contract: $TOTAL_CASES schemathesis cases in all, no failures"
