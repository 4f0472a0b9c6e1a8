-- Per-wallet balance limits, set by admins: an overdraft (how far below zero the balance may go) and a maximum
-- balance; NULL means none. The ledger core enforces them on every movement; the database holds the floor too.
-- The per-currency `pending` (clearing) account of two-phase transfers joins the system account kinds.
-- SQLite cannot change a table's CHECK constraints, so the table is rebuilt (its rows keep their ids; postings
-- refer to the table by name, and the foreign keys are checked at commit, when the new table has every row).
PRAGMA defer_foreign_keys = ON;

CREATE TABLE accounts_new (
    id                 BLOB    PRIMARY KEY NOT NULL,
    kind               TEXT    NOT NULL CHECK (kind IN ('user', 'world', 'fx', 'pending')),
    user_id            BLOB    REFERENCES users (id),
    currency           TEXT    NOT NULL CHECK (length(currency) = 3 AND currency = upper(currency)),
    balance_minor      INTEGER NOT NULL DEFAULT 0,
    pending_minor      INTEGER NOT NULL DEFAULT 0,
    version            INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    overdraft_minor    INTEGER CHECK (overdraft_minor >= 0),
    max_balance_minor  INTEGER CHECK (max_balance_minor >= 0),
    CONSTRAINT accounts_wallet_within_overdraft CHECK (kind <> 'user' OR balance_minor >= -coalesce(overdraft_minor, 0)),
    CONSTRAINT accounts_owner CHECK ((kind = 'user') = (user_id IS NOT NULL))
) STRICT;
INSERT INTO accounts_new (id, kind, user_id, currency, balance_minor, pending_minor, version, created_at, updated_at)
    SELECT id, kind, user_id, currency, balance_minor, pending_minor, version, created_at, updated_at FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_new RENAME TO accounts;
CREATE UNIQUE INDEX accounts_wallet_key ON accounts (user_id, currency) WHERE kind = 'user';
CREATE UNIQUE INDEX accounts_system_key ON accounts (kind, currency) WHERE kind <> 'user';
