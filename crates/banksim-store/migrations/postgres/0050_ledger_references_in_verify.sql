-- A posting's transaction and account, and a transaction's payer and payee, are checked by `banksim verify`
-- (crates/banksim-store/src/verify.rs) instead of by a trigger per row. Only the ledger's batch writes these rows:
-- a posting in the same statement as its transaction, on an account the batch holds locked, for users the service
-- found (users are never deleted). The four triggers cost a quarter of PostgreSQL's CPU per transfer in batches of
-- 1,000 transfers (docs/benchmarks.md). SQLite keeps its foreign keys: there a check is an index probe in the writer.
ALTER TABLE postings
    DROP CONSTRAINT postings_transaction_id_fkey,
    DROP CONSTRAINT postings_account_id_fkey;
ALTER TABLE transactions
    DROP CONSTRAINT transactions_from_user_id_fkey,
    DROP CONSTRAINT transactions_to_user_id_fkey;
