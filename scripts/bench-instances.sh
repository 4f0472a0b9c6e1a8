#!/usr/bin/env bash
# Scale-out figures of docs/benchmarks.md: the `transfer` scenario against 1, 2 and 3 banksim instances on one
# PostgreSQL database behind HAProxy (scripts/cluster.sh), the outbox relay publishing every event to a NATS
# JetStream server of this script's own. For each run: throughput and latency from `banksim simulate`, the relay's
# lag sampled every second from /metrics, the events it published during the traffic, how long it took to catch up
# afterwards, and `banksim verify` at the end. One instance is also measured without the balancer, to show what
# the extra hop costs.
#
#   scripts/bench-instances.sh [seconds per run, default 20] [instance counts, default "1 2 3"]
#
# Needs: a release build (BANKSIM_BIN names another binary), PostgreSQL at 127.0.0.1:5432 (trust, user postgres),
# haproxy and nats-server on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
counts=${2:-1 2 3}
export BANKSIM_BIN=${BANKSIM_BIN:-$PWD/target/release/banksim}
pg="psql -h 127.0.0.1 -U postgres -qAt"
lb_port=18190
base_port=18180
nats_port=18199
work=$(mktemp -d)
export CLUSTER_DIR=$work/cluster
nats_pid=
cleanup() {
  scripts/cluster.sh down >/dev/null 2>&1 || true
  [ -n "$nats_pid" ] && kill "$nats_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# A fresh JetStream server for each run, so every run's stream starts empty.
start_nats() {
  [ -n "$nats_pid" ] && kill "$nats_pid" 2>/dev/null && wait "$nats_pid" 2>/dev/null || true
  rm -rf "$work/nats"
  nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$work/nats" >"$work/nats.log" 2>&1 &
  nats_pid=$!
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && return 0; sleep 0.1; done
  echo "nats-server did not start" >&2
  exit 1
}

# A metric's value on the instance numbered $2 (the instances inherit METRICS_TOKEN, when set, from this shell).
metric() { # name instance
  local auth=()
  [ -n "${METRICS_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $METRICS_TOKEN")
  curl -s "${auth[@]}" "127.0.0.1:$((base_port + $2))/metrics" | awk -v name="$1" '$1 == name {print int($2)}'
}

# A metric's value summed over every instance (the relay runs on one of them at a time).
metric_sum() { # name instances
  local total=0 i value
  for i in $(seq 1 "$2"); do
    value=$(metric "$1" "$i")
    total=$((total + ${value:-0}))
  done
  echo "$total"
}

run() { # instances through (lb|direct)
  local instances=$1 through=$2 url
  $pg -c "DROP DATABASE IF EXISTS banksim_bench_cluster" -c "CREATE DATABASE banksim_bench_cluster"
  start_nats
  DATABASE_URL=postgres://postgres@127.0.0.1:5432/banksim_bench_cluster INSTANCES=$instances LB_PORT=$lb_port \
    BASE_PORT=$base_port NATS_URL=nats://127.0.0.1:$nats_port RUST_LOG=warn AUTH_RATE_LIMIT_PER_MINUTE=0 \
    scripts/cluster.sh up >/dev/null
  url=http://127.0.0.1:$lb_port
  [ "$through" = direct ] && url=http://127.0.0.1:$((base_port + 1))
  echo "== $instances instance(s), $through, transfer (64 connections, 200 users, ${seconds}s)"
  RUST_LOG=info "$BANKSIM_BIN" simulate --url "$url" --users 200 --connections 64 --duration "${seconds}s" \
    --scenario transfer >"$work/report" 2>"$work/simulate.log" &
  local simulate=$! lag max_lag=0 published_before published_after
  until grep -q "users funded" "$work/simulate.log" || ! kill -0 "$simulate" 2>/dev/null; do sleep 0.05; done
  published_before=$(metric_sum banksim_relay_published_total "$instances")
  local started=$SECONDS
  while kill -0 "$simulate" 2>/dev/null; do
    lag=$(metric banksim_relay_lag_events 1)
    [ "${lag:-0}" -gt "$max_lag" ] && max_lag=$lag
    sleep 1
  done
  local traffic=$((SECONDS - started))
  published_after=$(metric_sum banksim_relay_published_total "$instances")
  wait "$simulate" || true
  grep -E '^(requests|latency|errors|conservation)' "$work/report"
  local caught_up_at=$SECONDS
  for _ in $(seq 1 120); do
    lag=$(metric banksim_relay_lag_events 1)
    [ "${lag:-1}" -eq 0 ] && break
    sleep 0.5
  done
  echo "relay: $((published_after - published_before)) events published in ${traffic}s of traffic" \
    "($(((published_after - published_before) / (traffic > 0 ? traffic : 1)))/s), lag at most $max_lag events," \
    "caught up $((SECONDS - caught_up_at))s after the traffic (lag now ${lag:-?})"
  scripts/cluster.sh down >/dev/null
  DATABASE_URL=postgres://postgres@127.0.0.1:5432/banksim_bench_cluster "$BANKSIM_BIN" verify 2>/dev/null | tail -n 1
}

run 1 direct
for instances in $counts; do
  run "$instances" lb
done
