#!/usr/bin/env bash
# Checks that the Grafana dashboard and the Prometheus alert rules really work against a running banksim.
#
# It starts a private Prometheus (its own temporary folder and free port) that scrapes the given banksim every
# second as job `banksim`, sends a little traffic in two rounds a few seconds apart (two users, then per round a
# login, a credit, a transfer, a refused debit, a 404 and a read), waits for a few scrapes, then queries Prometheus
# with every expression of the dashboard(s) and of the rule file(s):
#   - every expression must parse and evaluate;
#   - every dashboard expression must return at least one sample that is not NaN (an empty panel fails);
#   - every metric that an expression names must be exposed by the instance (so an alert on a misspelt metric, which
#     would silently never fire, fails too).
# Works against either backend (SQLite or PostgreSQL): nothing here depends on it, but an instance without a
# replica exposes no replica lag (see ABSENT_METRICS).
#
# Usage:
#   scripts/check-dashboards.sh BASE_URL       e.g. http://127.0.0.1:18080
#   scripts/check-dashboards.sh --self-test    no banksim needed: Prometheus scrapes itself, and only parsing is
#                                              checked (plus checks that the checker tells good from bad)
# Environment:
#   METRICS_TOKEN     bearer token for GET /metrics, if the server requires one
#   ABSENT_METRICS    space-separated metric names the instance may not expose because it runs without the feature
#                     (the replica's lag without DATABASE_REPLICA_URL): expressions naming them must still parse
#   PROMETHEUS        the prometheus binary (default: `prometheus` on PATH; Debian: apt-get install prometheus)
#   DASHBOARDS        dashboard JSON files, space-separated (default: deploy/grafana/dashboards/*.json)
#   RULES             rule files, space-separated (default: deploy/prometheus/rules/banksim.yml)
#   SETTLE_SECONDS    how long to let Prometheus scrape after the traffic (default 8, at least 6 so that every
#                     rate(...[1m]) window holds two scrapes after it)
#   KEEP_TMP=1        keep the temporary folder (Prometheus's config, log and data) for a post-mortem
# Exit status: 0 all checks passed, 1 a check failed, 2 the checks could not run (bad usage, missing tool, no
# server, no scrape).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

die() {
    echo "check-dashboards: $*" >&2
    exit 2
}

self_test=0
base_url=
case ${1:-} in
    -h | --help) usage; exit 0 ;;
    --self-test) self_test=1 ;;
    http://* | https://*) base_url=${1%/} ;;
    '') usage >&2; exit 2 ;;
    *) die "BASE_URL must start with http:// or https:// (got '$1')" ;;
esac
[ $# -le 1 ] || die "one argument only (see --help)"

prometheus_bin=${PROMETHEUS:-prometheus}
settle_seconds=${SETTLE_SECONDS:-8}
read -r -a dashboards <<<"${DASHBOARDS:-$(echo "$repo"/deploy/grafana/dashboards/*.json)}"
read -r -a rule_files <<<"${RULES:-$repo/deploy/prometheus/rules/banksim.yml}"

for tool in curl jq python3 "$prometheus_bin"; do
    command -v "$tool" >/dev/null 2>&1 || die "needs $tool on PATH (Debian: apt-get install curl jq python3 prometheus)"
done
for file in "${dashboards[@]}" "${rule_files[@]}"; do
    [ -f "$file" ] || die "no such file: $file"
done
[[ $settle_seconds =~ ^[0-9]+$ ]] && [ "$settle_seconds" -ge 6 ] || die "SETTLE_SECONDS must be a whole number >= 6"

# --- Temporary folder, cleaned up however the script ends ----------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-dashboards.XXXXXX")
prometheus_pid=
cleanup() {
    local status=$?
    if [ -n "$prometheus_pid" ] && kill -0 "$prometheus_pid" 2>/dev/null; then
        kill "$prometheus_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$prometheus_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$prometheus_pid" 2>/dev/null || true
        wait "$prometheus_pid" 2>/dev/null || true
    fi
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        echo "check-dashboards: kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# PyYAML reads the rule files; fetch it into the temporary folder if this python lacks it.
if ! python3 -c 'import yaml' 2>/dev/null; then
    echo "check-dashboards: installing PyYAML into $tmp/pylib" >&2
    python3 -m pip install --quiet --disable-pip-version-check --target "$tmp/pylib" PyYAML >&2 \
        || die "python3 has no yaml module and PyYAML could not be installed"
    export PYTHONPATH="$tmp/pylib${PYTHONPATH:+:$PYTHONPATH}"
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# --- Prometheus configuration --------------------------------------------------------------------------------
prometheus_port=$(free_port)
prometheus_url="http://127.0.0.1:$prometheus_port"

if [ "$self_test" = 1 ]; then
    scheme=http
    target="127.0.0.1:$prometheus_port"
    metrics_path=/metrics
else
    # scheme, host:port (with the default port made explicit) and path prefix of BASE_URL.
    read -r scheme target metrics_path < <(python3 - "$base_url" <<'EOF'
import sys
from urllib.parse import urlsplit
url = urlsplit(sys.argv[1])
port = url.port or (443 if url.scheme == "https" else 80)
host = url.hostname if ":" not in url.hostname else "[" + url.hostname + "]"
print(url.scheme, f"{host}:{port}", url.path.rstrip("/") + "/metrics")
EOF
    )
fi

token_file=
if [ -n "${METRICS_TOKEN:-}" ] && [ "$self_test" = 0 ]; then
    token_file="$tmp/metrics-token"
    (umask 077 && printf '%s' "$METRICS_TOKEN" >"$token_file")
fi

# JSON is YAML: jq writes the config with every value quoted correctly.
jq -n --arg scheme "$scheme" --arg target "$target" --arg path "$metrics_path" --arg token_file "$token_file" '{
    global: {scrape_interval: "1s", scrape_timeout: "1s", evaluation_interval: "1s"},
    scrape_configs: [
        {job_name: "banksim", scheme: $scheme, metrics_path: $path,
         static_configs: [{targets: [$target]}]}
        + (if $token_file == "" then {} else {authorization: {type: "Bearer", credentials_file: $token_file}} end)
    ]
}' >"$tmp/prometheus.yml"

# --- Preflight: is the server there, and does it let us read /metrics? ---------------------------------------
if [ "$self_test" = 0 ]; then
    auth_header=()
    [ -z "${METRICS_TOKEN:-}" ] || auth_header=(-H "Authorization: Bearer $METRICS_TOKEN")
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "$base_url/readyz" 2>/dev/null) || code=000
    [ "$code" = 200 ] || die "$base_url/readyz answered $code, want 200: is banksim running and ready there?"
    code=$(curl -sS -o "$tmp/metrics.txt" -w '%{http_code}' --max-time 5 ${auth_header[@]+"${auth_header[@]}"} \
        "$scheme://$target$metrics_path" 2>/dev/null) || code=000
    case $code in
        200) ;;
        401 | 403) die "GET $metrics_path answered $code: set METRICS_TOKEN to the server's metrics token" ;;
        *) die "GET $scheme://$target$metrics_path answered $code, want 200" ;;
    esac
fi

# --- Start Prometheus and wait for a successful scrape -------------------------------------------------------
"$prometheus_bin" \
    --config.file="$tmp/prometheus.yml" \
    --storage.tsdb.path="$tmp/data" \
    --web.listen-address="127.0.0.1:$prometheus_port" \
    --log.level=warn \
    >"$tmp/prometheus.log" 2>&1 &
prometheus_pid=$!

query() { # query EXPR -> Prometheus's JSON answer on stdout (also for 4xx answers, which carry the error)
    curl -sS --max-time 10 -G "$prometheus_url/api/v1/query" --data-urlencode "query=$1"
}

for attempt in $(seq 1 60); do
    kill -0 "$prometheus_pid" 2>/dev/null || { cat "$tmp/prometheus.log" >&2; die "prometheus exited at start"; }
    if curl -fsS --max-time 2 "$prometheus_url/-/ready" >/dev/null 2>&1; then break; fi
    [ "$attempt" -lt 60 ] || { cat "$tmp/prometheus.log" >&2; die "prometheus not ready after 30 s"; }
    sleep 0.5
done

for attempt in $(seq 1 30); do
    up=$(query 'up{job="banksim"}' | jq -r '.data.result[0].value[1] // "none"' 2>/dev/null || echo none)
    [ "$up" = 1 ] && break
    if [ "$attempt" = 30 ]; then
        curl -sS "$prometheus_url/api/v1/targets" | jq -r '.data.activeTargets[] | "target \(.scrapeUrl): \(.health) \(.lastError)"' >&2 || true
        die "Prometheus never scraped $scheme://$target$metrics_path successfully"
    fi
    sleep 1
done
echo "check-dashboards: Prometheus on $prometheus_url scrapes $scheme://$target$metrics_path (job banksim)"

# --- Traffic ---------------------------------------------------------------------------------------------------
status=
api() { # api METHOD PATH [JSON_BODY] [ACCESS_TOKEN] -> $status, and the answer's body in $tmp/body
    local method=$1 path=$2 body=${3:-} token=${4:-} waited=0 retry_after
    local args=(-sS --max-time 30 -X "$method" -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}')
    [ -z "$body" ] || args+=(-H 'Content-Type: application/json' --data-binary "$body")
    [ -z "$token" ] || args+=(-H "Authorization: Bearer $token")
    while :; do
        status=$(curl "${args[@]}" "$base_url$path") || die "$method $path: no answer"
        # The auth routes are rate limited per client IP (5 a minute by default): a re-run within the minute
        # waits for its turn instead of failing.
        if [ "$status" = 429 ] && [ "$waited" -lt 90 ]; then
            retry_after=$(tr -d '\r' <"$tmp/headers" | awk -F': *' 'tolower($1) == "retry-after" { print $2 }')
            [[ $retry_after =~ ^[0-9]+$ ]] || retry_after=5
            [ "$retry_after" -ge 1 ] || retry_after=1
            echo "check-dashboards: $method $path rate limited, retrying in ${retry_after}s" >&2
            sleep "$retry_after"
            waited=$((waited + retry_after))
            continue
        fi
        return 0
    done
}

expect() { # expect STATUS WHAT [ERROR_CODE]
    if [ "$status" != "$1" ]; then
        echo "check-dashboards: $2 answered $status, want $1:" >&2
        head -c 2000 "$tmp/body" >&2 || true
        echo >&2
        exit 2
    fi
    if [ -n "${3:-}" ] && [ "$(jq -r '.error_code // empty' "$tmp/body")" != "$3" ]; then
        echo "check-dashboards: $2 answered $status without error_code $3:" >&2
        head -c 2000 "$tmp/body" >&2 || true
        echo >&2
        exit 2
    fi
}

if [ "$self_test" = 0 ]; then
    suffix="$(date +%s)_$$_$RANDOM"
    password="dashboards-check-$RANDOM-$RANDOM"
    user() { jq -n --arg u "dash_$1_$suffix" --arg e "dash-$1-$suffix@example.com" --arg p "$password" \
        '{username: $u, email: $e, password: $p}'; }

    api POST /api/v1/auth/register "$(user a)"
    expect 201 "register (first user)"
    api POST /api/v1/auth/register "$(user b)"
    expect 201 "register (second user)"
    payee_id=$(jq -r '.id // .user.id' "$tmp/body")

    login() {
        api POST /api/v1/auth/login "$(jq -n --arg e "dash-a-$suffix@example.com" --arg p "$password" \
            '{email: $e, password: $p}')"
        expect 200 "login"
        access_token=$(jq -r .access_token "$tmp/body")
    }

    movements() {
        api POST /api/v1/transactions/credit \
            '{"amount": "100.00", "currency": "USD", "description": "dashboard check"}' "$access_token"
        expect 201 "credit of 100.00 USD"
        credit_id=$(jq -r .id "$tmp/body")

        api POST /api/v1/transactions/transfer "$(jq -n --arg to "$payee_id" \
            '{to_user_id: $to, amount: "25.00", currency: "USD", description: "dashboard check"}')" "$access_token"
        expect 201 "transfer of 25.00 USD"

        api POST /api/v1/transactions/debit '{"amount": "1000.00", "currency": "USD"}' "$access_token"
        expect 400 "debit over the balance" insufficient_funds

        api GET "/api/v1/no-such-route-$suffix"
        expect 404 "GET of an unknown path"

        api GET "/api/v1/transactions/$credit_id" "" "$access_token"
        expect 200 "GET of the credit"
    }

    # Two rounds, a few scrapes apart. A labelled series is born at the value it has when first scraped, and
    # rate() never counts that first step: a series touched in only one round would read 0 (and a latency quantile
    # NaN) however correct the panel. The second round makes every series it touches move between two scrapes.
    login
    movements
    sleep 3
    login
    movements

    echo "check-dashboards: traffic sent; letting Prometheus scrape for ${settle_seconds}s"
else
    echo "check-dashboards: self-test; letting Prometheus scrape itself for ${settle_seconds}s"
fi
sleep "$settle_seconds"

# --- The expressions to check ------------------------------------------------------------------------------------
# One JSON object a line: {src, expr, want: "data" | "parse" | "parse-error" | "no-data", names: bool}.
checks="$tmp/checks.jsonl"
: >"$checks"

want_dashboard=data
names=true
if [ "$self_test" = 1 ]; then
    want_dashboard=parse
    names=false
fi

for dashboard in "${dashboards[@]}"; do
    # Every panel, rows' nested panels included, must have at least one expression, and every expression is checked.
    jq -c --arg file "${dashboard#"$repo"/}" '
        [.panels[]? | ., (.panels[]? // empty)] | .[] | select(.type != "row")
        | select([.targets[]? | .expr? // "" | select(. != "")] | length == 0)
        | {src: "\($file): panel \(.title | tojson)", expr: "", want: "panel-without-expr"}' "$dashboard" >>"$checks"
    jq -c --arg file "${dashboard#"$repo"/}" --arg want "$want_dashboard" --argjson names "$names" '
        [.panels[]? | ., (.panels[]? // empty)] | .[] | select(.type != "row") | . as $panel
        | .targets[]? | select((.expr? // "") != "")
        | {src: "\($file): \($panel.title) [\(.refId // "?")]", expr: .expr, want: $want, names: $names}
    ' "$dashboard" >>"$checks"
done

for rule_file in "${rule_files[@]}"; do
    python3 - "$rule_file" "${rule_file#"$repo"/}" "$names" >>"$checks" <<'EOF'
import json, sys
import yaml
path, shown, names = sys.argv[1], sys.argv[2], sys.argv[3] == "true"
with open(path) as f:
    doc = yaml.safe_load(f) or {}
for group in doc.get("groups") or []:
    for rule in group.get("rules") or []:
        name = rule.get("alert") or rule.get("record") or "?"
        print(json.dumps({"src": f"{shown}: {name}", "expr": str(rule["expr"]).strip(), "want": "parse",
                          "names": names}))
EOF
done

if [ "$self_test" = 1 ]; then
    # The checker must tell good from bad: the `expect_fail` ones must fail, or the self-test fails.
    {
        jq -nc '{src: "self-test: a scraped series", expr: "up{job=\"banksim\"}", want: "data", names: true}'
        jq -nc '{src: "self-test: rate over [1m] after settling", expr: "sum(rate(prometheus_http_requests_total[1m]))", want: "data", names: true}'
        jq -nc '{src: "self-test: a syntax error", expr: "sum(rate(up[1m])", want: "parse", expect_fail: true}'
        jq -nc '{src: "self-test: a metric never exposed", expr: "sum(rate(banksim_no_such_metric_total[1m]))", want: "data", expect_fail: true}'
        jq -nc '{src: "self-test: NaN only", expr: "vector(0) / 0", want: "data", expect_fail: true}'
        jq -nc '{src: "self-test: a misspelt metric behind `or vector(0)`", expr: "sum(rate(prometheus_http_requests_totl[1m])) or vector(0)", want: "data", names: true, expect_fail: true}'
        jq -nc '{src: "self-test: an alert on a misspelt metric", expr: "prometheus_build_inf == 0", want: "parse", names: true, expect_fail: true}'
    } >>"$checks"
fi

# Metric names an expression selects (not functions, keywords, label names, durations or numbers).
metric_names() {
    python3 -c '
import re, sys
e = sys.stdin.read()
e = re.sub(r"\"(\\.|[^\"\\])*\"|\x27(\\.|[^\x27\\])*\x27|`[^`]*`", "\"\"", e)   # string literals
e = re.sub(r"\{[^}]*\}", " ", e)                                                   # label matchers
e = re.sub(r"\[[^\]]*\]", " ", e)                                                  # ranges, subqueries
e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)  # label lists
e = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", e)
e = re.sub(r"(?<![A-Za-z0-9_:])[0-9][0-9.]*([eE][+-]?[0-9]+)?[a-z]*", " ", e)     # numbers, durations
keywords = {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left", "group_right",
            "offset", "inf", "nan", "atan2"}
for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
    rest = e[m.end():].lstrip()
    if rest.startswith("("):          # a function or an aggregation
        continue
    if m.group(0).lower() in keywords:
        continue
    print(m.group(0))
' | sort -u
}

# --- Query every expression --------------------------------------------------------------------------------------
passed=0
failed=0
declare -A name_known=()

verdict=
detail=
evaluate() { # evaluate EXPR WANT CHECK_NAMES -> $verdict (ok|fail) and $detail
    local expr=$1 want=$2 check_names=$3 outcome kind samples finite name count
    local -a missing=()
    # outcome: "error <text>" or "data <samples> <samples that are not NaN>"
    outcome=$(query "$expr" | jq -r '
        if .status != "success" then "error \(.errorType // "?"): \(.error // "no error text")"
        elif .data.resultType == "vector" then
            "data \(.data.result | length) \([.data.result[].value[1] | select(. != "NaN")] | length)"
        elif .data.resultType == "matrix" then
            "data \(.data.result | length) \(.data.result | length)"
        else "data 1 \(if .data.result[1] == "NaN" then 0 else 1 end)" end' 2>/dev/null) \
        || outcome="error no JSON answer from Prometheus"
    read -r kind samples finite <<<"$outcome"
    if [ "$kind" = error ]; then
        verdict=fail detail=${outcome#error }
        return
    fi

    if [ "$check_names" = true ]; then
        while IFS= read -r name; do
            [ -n "$name" ] || continue
            if [ -z "${name_known[$name]:-}" ]; then
                count=$(query "count({__name__=\"$name\"})" | jq -r '.data.result[0].value[1] // "0"' 2>/dev/null) \
                    || count=0
                if [ "$count" != 0 ]; then name_known[$name]=yes; else name_known[$name]=no; fi
            fi
            [ "${name_known[$name]}" = yes ] || [[ " ${ABSENT_METRICS:-} " == *" $name "* ]] || missing+=("$name")
        done < <(metric_names <<<"$expr")
    fi

    if [ "${#missing[@]}" -gt 0 ]; then
        verdict=fail detail="not exposed by the instance: ${missing[*]}"
    elif [ "$want" = data ] && [ "$samples" = 0 ]; then
        verdict=fail detail="no data"
    elif [ "$want" = data ] && [ "$finite" = 0 ]; then
        verdict=fail detail="only NaN ($samples series)"
    elif [ "$want" = data ]; then
        verdict=ok detail="$samples series"
    else
        verdict=ok detail="parses; $samples series"
    fi
}

while IFS= read -r check; do
    src=$(jq -r .src <<<"$check")
    expr=$(jq -r .expr <<<"$check")
    want=$(jq -r .want <<<"$check")
    check_names=$(jq -r '.names // false' <<<"$check")
    expect_fail=$(jq -r '.expect_fail // false' <<<"$check")
    shown=$(tr '\n' ' ' <<<"$expr" | tr -s ' ')

    if [ "$want" = panel-without-expr ]; then
        verdict=fail detail="panel has no query"
    else
        evaluate "$expr" "$want" "$check_names"
    fi
    if [ "$expect_fail" = true ]; then
        if [ "$verdict" = fail ]; then verdict=ok detail="failed as it should: $detail"
        else verdict=fail detail="should have failed: $detail"; fi
    fi

    if [ "$verdict" = ok ]; then
        passed=$((passed + 1))
        printf 'OK    %s: %s  (%s)\n' "$src" "$shown" "$detail"
    else
        failed=$((failed + 1))
        printf 'FAIL  %s: %s  (%s)\n' "$src" "$shown" "$detail"
    fi
done <"$checks"

echo
echo "check-dashboards: $passed passed, $failed failed"
[ "$failed" = 0 ]
