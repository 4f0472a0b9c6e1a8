#!/usr/bin/env bash
# Reproduces docs/benchmarks.md: pgbench as the reference (tpcb-like for writes, select-only for reads), then
# `banksim simulate` against a release build on PostgreSQL and on SQLite, each figure with its ratio to its pgbench
# reference, the CPU split of the traffic (server / database / load generator, per request), the server's resident
# memory after the run, and `banksim verify` at the end. Everything runs on this
# machine (127.0.0.1); each run is bounded in time.
#
#   scripts/benchmark.sh [seconds per run, default 30] [scenarios, default "transfer hot balance history mixed login batch"]
#
# BACKENDS names the backends to run (default "postgres sqlite"); BANKSIM_BIN another binary (an A/B of two builds).
#
# Needs: a release build (cargo build --release), PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres), pgbench.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
scenarios=${2:-transfer hot balance history mixed login batch}
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

# Clock ticks (1/100 s) of a process: user + system time.
process_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# One sample for the CPU split: nanoseconds, then the ticks of the server, of PostgreSQL (every process of the
# oldest postmaster, plus what its exited backends used), of the load generator, and the machine's idle and total.
cpu_sample() { # server-pid simulate-pid
  local postmaster database=0 pid
  postmaster=$(pgrep -o -x postgres || true)
  if [ -n "$postmaster" ]; then
    database=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$postmaster/stat")
    for pid in $(pgrep -P "$postmaster"); do database=$((database + $(process_ticks "$pid"))); done
  fi
  echo "$(date +%s%N) $(process_ticks "$1") $database $(process_ticks "$2") $(awk '/^cpu / {
    total = 0; for (i = 2; i <= 9; i++) total += $i; print $5 + $6, total }' /proc/stat)"
}

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
  RUST_LOG=info "$bin" simulate --url "http://127.0.0.1:$port" --users "$users" --connections "$connections" \
    --duration "${seconds}s" --scenario "$scenario" >"$data/report" 2>"$data/simulate.log" &
  local simulate=$!
  # The CPU split covers the traffic only (the setup hashes 200 passwords): from "users funded" until the
  # deadline, a second short of it so that every process is still there to be read.
  until grep -q "users funded" "$data/simulate.log" || ! kill -0 "$simulate" 2>/dev/null; do sleep 0.05; done
  local before after
  before=$(cpu_sample "$server" "$simulate")
  sleep $((seconds - 1))
  after=$(cpu_sample "$server" "$simulate")
  wait "$simulate" || true
  # Reads are compared by requests, writes by movements (a batch request carries 1,000).
  local compared=movements
  case $scenario in balance | history) compared=requests ;; esac
  grep -E '^(requests|movements|latency|errors|conservation)' "$data/report" \
    | REF=$reference LINE=$compared perl -ne 'if (/^(\w+)\s.*\(([0-9.]+) (?:req\/)?\/?s\)/ && $1 eq $ENV{LINE}) { chomp; printf "%s   = %.2fx pgbench (%d)\n", $_, $2 / $ENV{REF}, $ENV{REF} } else { print }'
  local requests_per_second
  requests_per_second=$(sed -n "s/^requests.*(\\([0-9.]*\\) req\\/s).*/\\1/p" "$data/report" | head -n 1)
  echo "$before $after ${requests_per_second:-0}" | awk '{
    window = ($7 - $1) / 1e9; server = ($8 - $2) / 100; database = ($9 - $3) / 100; generator = ($10 - $4) / 100
    idle = ($12 > $6) ? 100 * ($11 - $5) / ($12 - $6) : 0
    per_request = ($13 > 0) ? 1e6 / ($13 * window) : 0
    printf "cpu over %.1f s of traffic: server %.1f s (%.0f us/request), database %.1f s (%.0f us/request), load generator %.1f s (%.0f us/request), machine idle %.0f %%\n",
      window, server, server * per_request, database, database * per_request, generator, generator * per_request, idle
  }'
  # At the end of the traffic, and a second later: the allocator hands what the run freed back twice a second.
  local rss_end
  rss_end=$(awk '/VmRSS/ {printf "%.0f MB", $2 / 1024}' "/proc/$server/status")
  sleep 1
  echo "resident memory: $rss_end at the end of the traffic, $(awk '/VmRSS/ {printf "%.0f MB", $2 / 1024}' "/proc/$server/status") a second later"
  curl -s "127.0.0.1:$port/metrics/basic" | grep -o '"write_batches":{[^}]*}\|"cache":{[^}]*}' | tr '\n' ' '; echo
  kill -TERM "$server"; wait "$server" || true
  DATABASE_URL=$url "$bin" verify 2>/dev/null | tail -n 1
}

for backend in ${BACKENDS:-postgres sqlite}; do
  for scenario in $scenarios; do
    run "$backend" "$scenario"
  done
done
