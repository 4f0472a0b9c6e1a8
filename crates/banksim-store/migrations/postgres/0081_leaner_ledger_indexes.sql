-- Indexes that cost less to keep and to build, for the same lookups (docs/benchmarks.md, "Leaner indexes").

-- A transaction's payer or payee is absent on most movements (a card payment has no payee, a salary no payer): the
-- user's history walks (`from_user_id = $1`, `to_user_id = $1`) never look for an absent one, and a partial index
-- keeps no entry for it. A reversal is rare: its uniqueness needs no entry for the others either.
DROP INDEX transactions_from_user_idx, transactions_to_user_idx;
CREATE INDEX transactions_from_user_idx ON transactions (from_user_id, created_at DESC, id DESC)
    WHERE from_user_id IS NOT NULL;
CREATE INDEX transactions_to_user_idx ON transactions (to_user_id, created_at DESC, id DESC)
    WHERE to_user_id IS NOT NULL;
ALTER TABLE transactions DROP CONSTRAINT transactions_reversal_of_key;
CREATE UNIQUE INDEX transactions_reversal_of_key ON transactions (reversal_of) WHERE reversal_of IS NOT NULL;

-- An aggregate's id first: the type is the same on almost every event, so leading with it made every comparison a
-- text comparison before the id decided it (a build over 2.7 million events: 5.3 s against 2.7 s).
ALTER TABLE events DROP CONSTRAINT events_aggregate_version_key,
    ADD CONSTRAINT events_aggregate_version_key UNIQUE (aggregate_id, aggregate_type, version);
