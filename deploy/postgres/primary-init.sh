#!/bin/sh
# Runs once, when the postgres image initialises a new primary (docker-entrypoint-initdb.d): lets the replica's
# streaming connection in (with the same password as every other connection) and reserves its replication slot, so
# the primary keeps the WAL the replica has not replayed yet, however long it is away.
set -eu
echo "host replication ${POSTGRES_USER} samenet scram-sha-256" >>"$PGDATA/pg_hba.conf"
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" \
    -c "SELECT pg_create_physical_replication_slot('banksim_replica')"
