-- The seeded exchange rates were stamped 1970-01-01; PostgreSQL stamped them when it seeded them. One rule for
-- both: the time of seeding (here, of this migration, for rates never changed since).
UPDATE fx_rates SET updated_at = CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER) WHERE updated_at = 0;
