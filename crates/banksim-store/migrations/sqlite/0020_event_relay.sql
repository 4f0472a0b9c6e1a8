-- The outbox relays: where each stands in the event log, and which instance holds it (see the PostgreSQL
-- migration of the same number). Instants are microseconds since the epoch, as everywhere in this schema.
CREATE TABLE event_relays (
    relay        TEXT    PRIMARY KEY NOT NULL,
    position     INTEGER NOT NULL DEFAULT 0 CHECK (position >= 0),
    holder       BLOB,
    lease_until  INTEGER,
    updated_at   INTEGER
) STRICT;
