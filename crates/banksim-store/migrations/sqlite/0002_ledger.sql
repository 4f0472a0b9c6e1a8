-- The double-entry ledger, its event log and audit trail, idempotency records and FX rates.
-- Same shape as the PostgreSQL schema; instants are integer microseconds, UUIDs 16-byte blobs, JSON is text.

CREATE TABLE accounts (
    id             BLOB    PRIMARY KEY NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('user', 'world', 'fx')),
    user_id        BLOB    REFERENCES users (id),
    currency       TEXT    NOT NULL CHECK (length(currency) = 3 AND currency = upper(currency)),
    balance_minor  INTEGER NOT NULL DEFAULT 0,
    pending_minor  INTEGER NOT NULL DEFAULT 0,
    version        INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    CONSTRAINT accounts_wallet_not_negative CHECK (kind <> 'user' OR balance_minor >= 0),
    CONSTRAINT accounts_owner CHECK ((kind = 'user') = (user_id IS NOT NULL))
) STRICT;
CREATE UNIQUE INDEX accounts_wallet_key ON accounts (user_id, currency) WHERE kind = 'user';
CREATE UNIQUE INDEX accounts_system_key ON accounts (kind, currency) WHERE kind <> 'user';

CREATE TABLE transactions (
    id               BLOB    PRIMARY KEY NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ('credit', 'debit', 'transfer', 'exchange')),
    status           TEXT    NOT NULL CHECK (status IN ('success', 'failed', 'rolled_back', 'pending')),
    from_user_id     BLOB    REFERENCES users (id),
    to_user_id       BLOB    REFERENCES users (id),
    amount_minor     INTEGER NOT NULL CHECK (amount_minor > 0),
    currency         TEXT    NOT NULL,
    to_amount_minor  INTEGER,
    to_currency      TEXT,
    rate             TEXT,
    description      TEXT,
    reversal_of      BLOB    UNIQUE REFERENCES transactions (id),
    reversed_by      BLOB    REFERENCES transactions (id),
    created_at       INTEGER NOT NULL,
    effective_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX transactions_from_user_idx ON transactions (from_user_id, created_at DESC, id DESC);
CREATE INDEX transactions_to_user_idx ON transactions (to_user_id, created_at DESC, id DESC);

CREATE TABLE postings (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id       BLOB    NOT NULL REFERENCES transactions (id),
    account_id           BLOB    NOT NULL REFERENCES accounts (id),
    amount_minor         INTEGER NOT NULL CHECK (amount_minor <> 0),
    balance_after_minor  INTEGER NOT NULL,
    account_version      INTEGER NOT NULL,
    created_at           INTEGER NOT NULL,
    CONSTRAINT postings_account_version_key UNIQUE (account_id, account_version)
) STRICT;
CREATE INDEX postings_transaction_idx ON postings (transaction_id);
CREATE INDEX postings_account_time_idx ON postings (account_id, created_at, account_version);

CREATE TABLE events (
    sequence        INTEGER PRIMARY KEY AUTOINCREMENT,
    id              BLOB    NOT NULL UNIQUE,
    aggregate_type  TEXT    NOT NULL,
    aggregate_id    BLOB    NOT NULL,
    version         INTEGER NOT NULL,
    event_type      TEXT    NOT NULL,
    data            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    CONSTRAINT events_aggregate_version_key UNIQUE (aggregate_type, aggregate_id, version)
) STRICT;

CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id     BLOB    NOT NULL UNIQUE,
    actor_id     BLOB,
    action       TEXT    NOT NULL,
    entity_type  TEXT    NOT NULL,
    entity_id    TEXT,
    outcome      TEXT    NOT NULL,
    details      TEXT    NOT NULL,
    ip           TEXT,
    user_agent   TEXT,
    request_id   TEXT,
    created_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, id);
CREATE INDEX audit_log_entity_idx ON audit_log (entity_type, entity_id, id);

CREATE TABLE idempotency_keys (
    user_id       BLOB    NOT NULL REFERENCES users (id),
    key           TEXT    NOT NULL,
    request_hash  BLOB    NOT NULL,
    status_code   INTEGER NOT NULL,
    response      TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) STRICT;
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);

CREATE TABLE fx_rates (
    base        TEXT    NOT NULL,
    quote       TEXT    NOT NULL,
    rate        TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (base, quote),
    CHECK (base <> quote)
) STRICT;

-- Starting rates, each pair with a spread (rate × reverse rate < 1) so that no round trip makes money.
INSERT INTO fx_rates (base, quote, rate, updated_at) VALUES
    ('USD', 'EUR', '0.92', 0), ('EUR', 'USD', '1.08', 0),
    ('USD', 'GBP', '0.79', 0), ('GBP', 'USD', '1.26', 0),
    ('USD', 'JPY', '149.5', 0), ('JPY', 'USD', '0.00665', 0),
    ('USD', 'CAD', '1.36', 0), ('CAD', 'USD', '0.73', 0),
    ('USD', 'AUD', '1.52', 0), ('AUD', 'USD', '0.65', 0),
    ('EUR', 'GBP', '0.85', 0), ('GBP', 'EUR', '1.16', 0);
