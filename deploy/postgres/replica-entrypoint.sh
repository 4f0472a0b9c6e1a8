#!/bin/sh
# The replica's entrypoint: on its first start, copies the primary with pg_basebackup (-R writes the standby's
# primary_conninfo and standby.signal, -S streams through the slot primary-init.sh made); after that, the data folder
# is a standby and the image's own entrypoint starts it as one.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    export PGPASSWORD="$POSTGRES_PASSWORD"
    until gosu postgres pg_basebackup -h postgres -U "$POSTGRES_USER" -D "$PGDATA" -R -X stream -S banksim_replica; do
        echo "replica: the primary is not ready for a base backup yet; trying again in 2 s" >&2
        rm -rf "${PGDATA:?}"/*
        sleep 2
    done
fi
exec docker-entrypoint.sh postgres
