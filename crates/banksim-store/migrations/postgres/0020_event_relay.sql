-- The outbox relays: where each stands in the event log, and which instance holds it. A relay publishes outside
-- the database (to NATS JetStream), so it cannot hold a row lock while it works; a lease with an expiry lets one
-- instance publish at a time and another take over when it dies.
CREATE TABLE event_relays (
    relay        text        PRIMARY KEY,
    position     bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    holder       uuid,
    lease_until  timestamptz,
    updated_at   timestamptz
);
