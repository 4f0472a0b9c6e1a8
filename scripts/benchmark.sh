#!/usr/bin/env bash
# Reproduces docs/benchmarks.md: pgbench as the reference, then `banksim simulate` against a release build on
# PostgreSQL and on SQLite. Everything runs on this machine (127.0.0.1); each run is bounded in time.
#
#   scripts/benchmark.sh [seconds per run, default 30]
#
# Needs: a release build (cargo build --release), PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres), pgbench.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
bin=target/release/banksim
pg="psql -h 127.0.0.1 -U postgres -qAt"
port=18095
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

echo "== pgbench (tpcb-like, scale 10, 8 clients, -M prepared, ${seconds}s)"
$pg -c "DROP DATABASE IF EXISTS banksim_pgbench" -c "CREATE DATABASE banksim_pgbench"
pgbench -h 127.0.0.1 -U postgres -i -s 10 -q banksim_pgbench >/dev/null 2>&1
$pg -d banksim_pgbench -c "CHECKPOINT"
pgbench -h 127.0.0.1 -U postgres -c 8 -j 2 -M prepared -T "$seconds" banksim_pgbench 2>&1 | grep -E '^(tps|latency average)'

run() { # backend scenario
  local backend=$1 scenario=$2 url
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
  echo "== $backend $scenario (64 connections, 200 users, ${seconds}s)"
  "$bin" simulate --url "http://127.0.0.1:$port" --users 200 --connections 64 --duration "${seconds}s" \
    --scenario "$scenario" 2>/dev/null | grep -E '^(requests|movements|latency|errors|conservation)'
  curl -s "127.0.0.1:$port/metrics/basic" | grep -o '"write_batches":{[^}]*}'
  kill -TERM "$server"; wait "$server" || true
  DATABASE_URL=$url "$bin" verify 2>/dev/null | tail -n 1
}

for backend in postgres sqlite; do
  for scenario in transfer hot mixed; do
    run "$backend" "$scenario"
  done
done
