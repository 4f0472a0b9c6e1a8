#!/usr/bin/env bash
# Validates the deployable stack in deploy/ with the real tools, without starting it (no image can be pulled here):
#   - promtool check config   on deploy/prometheus/prometheus.yml (its token file is made up in a temporary copy)
#   - promtool check rules    on the alert rules
#   - promtool test rules     the alert rules' unit tests
#   - docker-compose config   on deploy/docker-compose.yml, with a temporary .env made from env.example
# Needs promtool (Debian: prometheus) and docker-compose (Debian: docker-compose). Exit status 0 when all pass.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

for tool in promtool docker-compose; do
    command -v "$tool" >/dev/null 2>&1 || { echo "check-deploy: needs $tool on PATH" >&2; exit 2; }
done

# Prometheus's config names the token file the container writes; point a copy at a file of our own.
mkdir -p "$tmp/prometheus"
cp -r "$repo/deploy/prometheus/." "$tmp/prometheus/"
printf 'token-for-the-check' >"$tmp/prometheus/metrics-token"
sed "s#credentials_file: /etc/prometheus/metrics-token#credentials_file: metrics-token#" \
    "$repo/deploy/prometheus/prometheus.yml" >"$tmp/prometheus/prometheus.yml"
promtool check config "$tmp/prometheus/prometheus.yml"
promtool check rules "$repo/deploy/prometheus/rules/banksim.yml"
promtool test rules "$repo/deploy/prometheus/rules/banksim_test.yml"

# Compose wants every secret set; a copy of the deploy folder with env.example's placeholders filled in.
cp -r "$repo/deploy" "$tmp/deploy"
sed 's/=CHANGE_ME$/=check-deploy-placeholder-value-0123456789/' "$repo/deploy/env.example" >"$tmp/deploy/.env"
(cd "$tmp/deploy" && docker-compose --project-directory . -f docker-compose.yml config -q)
echo "check-deploy: prometheus config, rules, rule tests and the compose file are valid"
