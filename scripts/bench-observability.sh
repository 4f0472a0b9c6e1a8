#!/usr/bin/env bash
# What observability costs: the `transfer` scenario on PostgreSQL, back to back on this machine,
#   off: BASE_BIN (default: the same build), no OTLP endpoint and nobody reading /metrics; a build of commit
#        729fa56 as BASE_BIN is one from before /metrics and the traces landed;
#   on:  target/release/banksim, every span exported over OTLP (http/protobuf) to a local sink that accepts and
#        counts the exports, and /metrics read every second (Prometheus would read it every 5 to 15).
# The metrics themselves are always recorded (atomic counters and histograms; see docs/benchmarks.md for their
# share of the server's CPU).
# The rounds alternate off/on and on/off to spread the machine's drift. Each run reports throughput and p99 from
# `banksim simulate`, the server's resident memory after the run, and its CPU time per movement (start-up and
# seeding included, the same for both).
#
#   [BASE_BIN=/tmp/base-target/release/banksim] scripts/bench-observability.sh [seconds per run, 20] [rounds, 2]
#
# Needs: release builds of both, PostgreSQL at 127.0.0.1:5432 (trust, user postgres), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
rounds=${2:-2}
bin=target/release/banksim
base=${BASE_BIN:-$bin}
pg="psql -h 127.0.0.1 -U postgres -qAt"
port=18096
sink_port=18097
data=$(mktemp -d)
sink_pid=
cleanup() { [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null; rm -rf "$data"; }
trap cleanup EXIT

# The OTLP sink: answers every export with 200 and counts them.
python3 - "$sink_port" >/dev/null 2>&1 <<'PY' &
import http.server, sys
count = [0, 0]
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        size = int(self.headers.get("content-length", 0)); self.rfile.read(size)
        count[0] += 1; count[1] += size
        self.send_response(200); self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0"); self.end_headers()
    def do_GET(self):
        body = f"{count[0]} exports, {count[1]} bytes".encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
sink_pid=$!

run() { # label binary [extra env...]
  local label=$1 binary=$2; shift 2
  $pg -c "DROP DATABASE IF EXISTS banksim_bench_obs" -c "CREATE DATABASE banksim_bench_obs"
  rm -rf "${data:?}"/*
  env DATABASE_URL=postgres://postgres@127.0.0.1:5432/banksim_bench_obs DATA_DIR="$data" PORT=$port RUST_LOG=warn \
    AUTH_RATE_LIMIT_PER_MINUTE=0 "$@" "$binary" serve >"$data/server.log" 2>&1 &
  local server=$!
  for _ in $(seq 1 50); do curl -sf "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
  local scraper=
  if [ "$label" = on ]; then
    while kill -0 "$server" 2>/dev/null; do curl -s "127.0.0.1:$port/metrics" >/dev/null; sleep 1; done &
    scraper=$!
  fi
  local result
  result=$("$bin" simulate --url "http://127.0.0.1:$port" --users 200 --connections 64 --duration "${seconds}s" \
    --scenario transfer 2>/dev/null | grep -E '^(movements|latency|errors)' | tr '\n' ' ')
  local rss cpu moved
  rss=$(awk '/VmRSS/ {print $2/1024 " MB"}' "/proc/$server/status")
  # The server's CPU time (user + system) per movement: less disturbed than throughput by other work on the
  # machine, which takes cores away but does not add instructions to banksim's.
  cpu=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$server/stat")
  moved=$(echo "$result" | awk '{print $2}')
  kill -TERM "$server"; wait "$server" || true
  [ -n "$scraper" ] && { kill "$scraper" 2>/dev/null; wait "$scraper" 2>/dev/null || true; }
  echo "$label | $result| rss $rss | server cpu $(awk -v c="$cpu" -v m="$moved" 'BEGIN {printf "%.1f", c * 1e6 / m}') µs/movement"
}

on_env=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port" OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then
    run off "$base"
    run on "$bin" "${on_env[@]}"
  else
    run on "$bin" "${on_env[@]}"
    run off "$base"
  fi
done
echo "sink received: $(curl -s "127.0.0.1:$sink_port/")"
