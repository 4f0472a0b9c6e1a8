#!/usr/bin/env bash
# The simulation console in headless Chromium: scripts/console-test.sh <path-to-banksim-binary>
#
# Starts a banksim of its own (SQLite in a temporary folder, a free port, SIMULATION_MODE=true, the auth rate limit
# off for the test's own logins, a first admin from BANKSIM_ADMIN_EMAIL), installs the pinned playwright-core of
# clients/console-test with `npm ci`, and runs clients/console-test/console.spec.mjs with node's test runner against
# Debian's /usr/bin/chromium (no browser is downloaded). Screenshots go to clients/console-test/artifacts/
# (CONSOLE_ARTIFACTS to change it). Cleans up on exit.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 <path-to-banksim-binary>" >&2
  exit 2
fi
BIN=$(realpath "$1")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TEST_DIR=$ROOT/clients/console-test
ARTIFACTS=${CONSOLE_ARTIFACTS:-$TEST_DIR/artifacts}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

[ -x "$CHROMIUM" ] || { echo "no browser at $CHROMIUM: apt-get install chromium chromium-driver" >&2; exit 1; }

SCRATCH=$(mktemp -d)
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base_url="http://127.0.0.1:$port"
admin_email=console.admin@example.com
admin_password=console-admin-password

DATABASE_URL="sqlite:$SCRATCH/banksim.db" DATA_DIR=$SCRATCH PORT=$port HOST=127.0.0.1 LOG_FORMAT=text \
  SIMULATION_MODE=true AUTH_RATE_LIMIT_PER_MINUTE=0 \
  BANKSIM_ADMIN_EMAIL=$admin_email BANKSIM_ADMIN_PASSWORD=$admin_password \
  "$BIN" serve >"$SCRATCH/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 60); do
  "$BIN" health --url "$base_url" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$SCRATCH/server.log" >&2; exit 1; }
  sleep 0.5
done

(cd "$TEST_DIR" && npm ci --silent --no-audit --no-fund)
rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"
status=0
(
  cd "$TEST_DIR"
  BASE_URL=$base_url ADMIN_EMAIL=$admin_email ADMIN_PASSWORD=$admin_password ARTIFACTS=$ARTIFACTS CHROMIUM=$CHROMIUM \
    node --test --test-reporter=spec console.spec.mjs
) || status=$?
if [ "$status" -ne 0 ]; then
  tail -n 40 "$SCRATCH/server.log" >&2
  echo "the console test failed; screenshots in $ARTIFACTS" >&2
fi
ls "$ARTIFACTS"
exit "$status"
