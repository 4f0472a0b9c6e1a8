-- Effective time: a back-dated posting keeps when it was recorded (`created_at`, which orders an account's postings)
-- and when it takes effect (`effective_at`, earlier). It is NULL for every posting that takes effect when it is
-- recorded, so ordinary movements write nothing more and the index below holds only the back-dated ones.
ALTER TABLE postings ADD COLUMN effective_at timestamptz
    CONSTRAINT postings_effective_before_recorded CHECK (effective_at < created_at);

-- The balance in effect at t is the balance after the last posting recorded by t, plus the back-dated postings
-- recorded after t that take effect by it: those are found on this index.
CREATE INDEX postings_backdated_idx ON postings (account_id, created_at) WHERE effective_at IS NOT NULL;
