-- Per-wallet balance limits, set by admins: an overdraft (how far below zero the balance may go) and a maximum
-- balance; NULL means none. The ledger core enforces them on every movement; the database holds the floor too.
-- The per-currency `pending` (clearing) account of two-phase transfers joins the system account kinds.
ALTER TABLE accounts
    ADD COLUMN overdraft_minor    bigint CHECK (overdraft_minor >= 0),
    ADD COLUMN max_balance_minor  bigint CHECK (max_balance_minor >= 0);
ALTER TABLE accounts DROP CONSTRAINT accounts_wallet_not_negative;
ALTER TABLE accounts ADD CONSTRAINT accounts_wallet_within_overdraft
    CHECK (kind <> 'user' OR balance_minor >= -coalesce(overdraft_minor, 0));
ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check CHECK (kind IN ('user', 'world', 'fx', 'pending'));
