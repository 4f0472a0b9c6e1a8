-- Two-phase transfers: a hold is a transfer with status 'pending' and an expiry; settling it makes it 'success',
-- 'voided' or 'expired'. The expiry job finds due holds through the partial index.
-- SQLite cannot change a CHECK constraint, so the table is rebuilt (rows keep their ids; postings, schedule
-- executions and reversals refer to it by name, and the foreign keys are checked at commit).
PRAGMA defer_foreign_keys = ON;

CREATE TABLE transactions_new (
    id               BLOB    PRIMARY KEY NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ('credit', 'debit', 'transfer', 'exchange')),
    status           TEXT    NOT NULL CHECK (status IN ('success', 'failed', 'rolled_back', 'pending', 'voided', 'expired')),
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
    effective_at     INTEGER NOT NULL,
    expires_at       INTEGER
) STRICT;
INSERT INTO transactions_new (id, kind, status, from_user_id, to_user_id, amount_minor, currency, to_amount_minor,
        to_currency, rate, description, reversal_of, reversed_by, created_at, effective_at)
    SELECT id, kind, status, from_user_id, to_user_id, amount_minor, currency, to_amount_minor, to_currency, rate,
        description, reversal_of, reversed_by, created_at, effective_at FROM transactions;
DROP TABLE transactions;
ALTER TABLE transactions_new RENAME TO transactions;
CREATE INDEX transactions_from_user_idx ON transactions (from_user_id, created_at DESC, id DESC);
CREATE INDEX transactions_to_user_idx ON transactions (to_user_id, created_at DESC, id DESC);
CREATE INDEX transactions_pending_expiry_idx ON transactions (expires_at) WHERE status = 'pending';
