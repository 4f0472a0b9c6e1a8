#!/usr/bin/env bash
# Reproduces docs/benchmarks.md: pgbench as the reference (tpcb-like for writes, select-only for reads), then
# `banksim simulate` against a release build on PostgreSQL and on SQLite, each figure with its ratio to its pgbench
# reference, the server's resident memory after the run, and `banksim verify` at the end. Everything runs on this
# machine (127.0.0.1); each run is bounded in time.
#
#   scripts/benchmark.sh [seconds per run, default 30] [scenarios, default "transfer hot balance history mixed batch"]
#
# Needs: a release build (cargo build --release; BANKSIM_BIN names another binary), PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres), pgbench.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
scenarios=${2:-transfer hot balance history mixed batch}
bin=${BANKSIM_BIN:-target/release/banksim}
pg="psql -h 127.0.0.1 -U postgres -qAt"
port=18095
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

echo "== pgbench (scale 10, -M prepared, ${seconds}s each)"
$pg -c "DROP DATABASE IF EXISTS banksim_pgbench" -c "CREATE DATABASE banksim_pgbench"
pgbench -h 127.0.0.1 -U postgres -i -s 10 -q banksim_pgbench >/dev/null 2>&1
$pg -d banksim_pgbench -c "CHECKPOINT"
tpcb=$(pgbench -h 127.0.0.1 -U postgres -c 8 -j 2 -M prepared -T "$seconds" banksim_pgbench 2>&1 \
  | awk '/^tps/ {print int($3)}')
select=$(pgbench -h 127.0.0.1 -U postgres -c 32 -j 2 -S -M prepared -T "$seconds" banksim_pgbench 2>&1 \
  | awk '/^tps/ {print int($3)}')
echo "pgbench tpcb-like, 8 clients: $tpcb tps | select-only, 32 clients: $select tps"

run() { # backend scenario
  local backend=$1 scenario=$2 url users=200 reference
  rm -rf "${data:?}"/*
  if [ "$backend" = postgres ]; then
    $pg -c "DROP DATABASE IF EXISTS banksim_bench" -c "CREATE DATABASE banksim_bench"
    url=postgres://postgres@127.0.0.1:5432/banksim_bench
  else
    url="sqlite:$data/banksim.db"
  fi
  # The simulator logs 200 users in from one address: lift the auth rate limit for the run.
  DATABASE_URL=$url DATA_DIR=$data PORT=$port RUST_LOG=warn AUTH_RATE_LIMIT_PER_MINUTE=0 "$bin" serve >"$data/server.log" 2>&1 &
  local server=$!
  for _ in $(seq 1 50); do curl -sf "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
  if [ "$scenario" = history ]; then
    # A history worth paging: 20 users with about 1,000 transactions each, before the reads.
    users=20
    "$bin" simulate --url "http://127.0.0.1:$port" --users "$users" --connections 32 --requests 10000 \
      --scenario transfer >/dev/null 2>&1
  fi
  case $scenario in balance | history) reference=$select ;; *) reference=$tpcb ;; esac
  # A batch scenario request carries 1,000 transfers: 8 in flight keep the writer busy.
  local connections=64
  [ "$scenario" = batch ] && connections=8
  echo "== $backend $scenario ($connections connections, $users users, ${seconds}s)"
  "$bin" simulate --url "http://127.0.0.1:$port" --users "$users" --connections "$connections" --duration "${seconds}s" \
    --scenario "$scenario" 2>/dev/null | grep -E '^(requests|movements|latency|errors|conservation)' \
    | REF=$reference perl -ne 'if (/^(requests|movements).*\(([0-9.]+) \/s\)/) { chomp; printf "%s   = %.2fx pgbench (%d)\n", $_, $2 / $ENV{REF}, $ENV{REF} } else { print }'
  echo "resident memory: $(awk '/VmRSS/ {printf "%.0f MB", $2 / 1024}' "/proc/$server/status")"
  curl -s "127.0.0.1:$port/metrics/basic" | grep -o '"write_batches":{[^}]*}\|"cache":{[^}]*}' | tr '\n' ' '; echo
  kill -TERM "$server"; wait "$server" || true
  DATABASE_URL=$url "$bin" verify 2>/dev/null | tail -n 1
}

for backend in postgres sqlite; do
  for scenario in $scenarios; do
    run "$backend" "$scenario"
  done
done
