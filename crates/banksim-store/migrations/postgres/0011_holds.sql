-- Two-phase transfers: a hold is a transfer with status 'pending' and an expiry; settling it makes it 'success',
-- 'voided' or 'expired'. The expiry job finds due holds through the partial index.
ALTER TABLE transactions ADD COLUMN expires_at timestamptz;
ALTER TABLE transactions DROP CONSTRAINT transactions_status_check;
ALTER TABLE transactions ADD CONSTRAINT transactions_status_check
    CHECK (status IN ('success', 'failed', 'rolled_back', 'pending', 'voided', 'expired'));
CREATE INDEX transactions_pending_expiry_idx ON transactions (expires_at) WHERE status = 'pending';
