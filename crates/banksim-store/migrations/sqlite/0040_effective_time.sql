-- Effective time (see the PostgreSQL migration of the same number): NULL for a posting that takes effect when it
-- is recorded, the earlier instant (microseconds since the epoch) for a back-dated one.
ALTER TABLE postings ADD COLUMN effective_at INTEGER CHECK (effective_at < created_at);

CREATE INDEX postings_backdated_idx ON postings (account_id, created_at) WHERE effective_at IS NOT NULL;
