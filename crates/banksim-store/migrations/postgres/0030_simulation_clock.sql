-- The virtual clock of simulation mode, shared by every instance on this database: one row, always there.
-- `virtual_now` NULL: the clock is the wall clock ("system"); else it stands at that instant ("virtual") until an
-- admin advances or sets it. It only moves forward (the server compares and sets it, never back).
-- An advance walks the clock through every due instant; one instance at a time may do so: it holds the lease
-- (`holder` until `lease_until`, wall-clock instants, so that a dead holder's lease ends in real time even while
-- the virtual clock stands still).
CREATE TABLE simulation_clock (
    id           smallint    PRIMARY KEY CHECK (id = 1),
    virtual_now  timestamptz,
    holder       uuid,
    lease_until  timestamptz,
    updated_at   timestamptz
);
INSERT INTO simulation_clock (id) VALUES (1);
-- The advance looks for the earliest due schedule or hold; both partial indexes exist (schedules_due_idx,
-- transactions_pending_expiry_idx).
