-- The double-entry ledger, its event log and audit trail, idempotency records and FX rates.

CREATE TABLE accounts (
    id             uuid        PRIMARY KEY,
    kind           text        NOT NULL CHECK (kind IN ('user', 'world', 'fx')),
    user_id        uuid        REFERENCES users (id),
    currency       text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    balance_minor  bigint      NOT NULL DEFAULT 0,
    -- Held amounts of future two-phase transfers; always 0 for now.
    pending_minor  bigint      NOT NULL DEFAULT 0,
    -- Number of postings; a posting's account_version is this counter after it.
    version        bigint      NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    CONSTRAINT accounts_wallet_not_negative CHECK (kind <> 'user' OR balance_minor >= 0),
    CONSTRAINT accounts_owner CHECK ((kind = 'user') = (user_id IS NOT NULL))
);
CREATE UNIQUE INDEX accounts_wallet_key ON accounts (user_id, currency) WHERE kind = 'user';
CREATE UNIQUE INDEX accounts_system_key ON accounts (kind, currency) WHERE kind <> 'user';

CREATE TABLE transactions (
    id               uuid        PRIMARY KEY,
    kind             text        NOT NULL CHECK (kind IN ('credit', 'debit', 'transfer', 'exchange')),
    status           text        NOT NULL CHECK (status IN ('success', 'failed', 'rolled_back', 'pending')),
    from_user_id     uuid        REFERENCES users (id),
    to_user_id       uuid        REFERENCES users (id),
    amount_minor     bigint      NOT NULL CHECK (amount_minor > 0),
    currency         text        NOT NULL,
    to_amount_minor  bigint,
    to_currency      text,
    rate             text,
    description      text,
    -- At most one reversal per transaction, enforced here as well as in the code.
    reversal_of      uuid        UNIQUE REFERENCES transactions (id),
    reversed_by      uuid        REFERENCES transactions (id),
    created_at       timestamptz NOT NULL,
    -- When the movement takes effect (equal to created_at until back-dated transactions exist).
    effective_at     timestamptz NOT NULL
);
CREATE INDEX transactions_from_user_idx ON transactions (from_user_id, created_at DESC, id DESC);
CREATE INDEX transactions_to_user_idx ON transactions (to_user_id, created_at DESC, id DESC);

CREATE TABLE postings (
    id                   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id       uuid        NOT NULL REFERENCES transactions (id),
    account_id           uuid        NOT NULL REFERENCES accounts (id),
    amount_minor         bigint      NOT NULL CHECK (amount_minor <> 0),
    balance_after_minor  bigint      NOT NULL,
    account_version      bigint      NOT NULL,
    created_at           timestamptz NOT NULL,
    CONSTRAINT postings_account_version_key UNIQUE (account_id, account_version)
);
CREATE INDEX postings_transaction_idx ON postings (transaction_id);
-- Balance at a time and balance history are lookups on this index, not scans.
CREATE INDEX postings_account_time_idx ON postings (account_id, created_at, account_version);

-- The event log (and outbox): one row per state change, a global order and a per-aggregate version.
CREATE TABLE events (
    sequence        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              uuid        NOT NULL UNIQUE,
    aggregate_type  text        NOT NULL,
    aggregate_id    uuid        NOT NULL,
    version         bigint      NOT NULL,
    event_type      text        NOT NULL,
    data            jsonb       NOT NULL,
    created_at      timestamptz NOT NULL,
    CONSTRAINT events_aggregate_version_key UNIQUE (aggregate_type, aggregate_id, version)
);

-- Who did what, with which outcome: every mutation and every refused money movement.
CREATE TABLE audit_log (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_id     uuid        NOT NULL UNIQUE,
    actor_id     uuid,
    action       text        NOT NULL,
    entity_type  text        NOT NULL,
    entity_id    text,
    outcome      text        NOT NULL,
    details      jsonb       NOT NULL,
    ip           text,
    user_agent   text,
    request_id   text,
    created_at   timestamptz NOT NULL
);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, id);
CREATE INDEX audit_log_entity_idx ON audit_log (entity_type, entity_id, id);

-- Stored answers of money requests, so a retry with the same key replays instead of moving money twice.
CREATE TABLE idempotency_keys (
    user_id       uuid        NOT NULL REFERENCES users (id),
    key           text        NOT NULL,
    request_hash  bytea       NOT NULL,
    status_code   integer     NOT NULL,
    response      text        NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);

CREATE TABLE fx_rates (
    base        text        NOT NULL,
    quote       text        NOT NULL,
    rate        text        NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (base, quote),
    CHECK (base <> quote)
);

-- Starting rates so exchanges work out of the box, each pair with a spread (rate × reverse rate < 1) so that no
-- round trip makes money; admins change them with PUT /api/v1/fx-rates/{base}/{quote}.
INSERT INTO fx_rates (base, quote, rate, updated_at) VALUES
    ('USD', 'EUR', '0.92', now()), ('EUR', 'USD', '1.08', now()),
    ('USD', 'GBP', '0.79', now()), ('GBP', 'USD', '1.26', now()),
    ('USD', 'JPY', '149.5', now()), ('JPY', 'USD', '0.00665', now()),
    ('USD', 'CAD', '1.36', now()), ('CAD', 'USD', '0.73', now()),
    ('USD', 'AUD', '1.52', now()), ('AUD', 'USD', '0.65', now()),
    ('EUR', 'GBP', '0.85', now()), ('GBP', 'EUR', '1.16', now());
