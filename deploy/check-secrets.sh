#!/bin/sh
# Run by the one-shot `secrets-check` service of docker-compose.yml before anything that uses a secret starts.
# Compose itself already refuses a secret that is unset or empty; this refuses the placeholders of env.example and
# values too short to be secrets, so that a copied-but-unedited deploy/.env cannot become a default password.
set -u

failed=0
fail() {
    echo "deploy/.env: $1" >&2
    failed=1
}

check() {
    name=$1
    min_length=$2
    eval "value=\${$name:-}"
    case $value in
        *CHANGE_ME*) fail "$name is still the CHANGE_ME placeholder of env.example" ;;
    esac
    if [ "${#value}" -lt "$min_length" ]; then
        fail "$name must be at least $min_length characters long"
    fi
    case $value in
        *[[:space:]]*) fail "$name must not contain spaces" ;;
    esac
}

check POSTGRES_PASSWORD 16
check JWT_SECRET 32
check METRICS_TOKEN 16
check GRAFANA_ADMIN_PASSWORD 12

# The PostgreSQL password is written into banksim's DATABASE_URL as it is.
case ${POSTGRES_PASSWORD:-} in
    *[!A-Za-z0-9._~-]*) fail "POSTGRES_PASSWORD may hold only letters, digits and . _ ~ - (it goes into a URL)" ;;
esac

if [ "$failed" -ne 0 ]; then
    echo "Edit deploy/.env (see deploy/env.example), then run docker-compose up again." >&2
    exit 1
fi
echo "deploy/.env: secrets look set"
