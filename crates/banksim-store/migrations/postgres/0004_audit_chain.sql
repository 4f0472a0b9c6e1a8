-- Tamper evidence: each audit entry carries the hash of the entry before it and its own hash over its content, so
-- changing, deleting or reordering an entry breaks the chain at that point (checked by `banksim verify`).
ALTER TABLE audit_log ADD COLUMN prev_hash bytea;
ALTER TABLE audit_log ADD COLUMN hash bytea;

-- The chain's head: the hash of the last entry. Appenders lock this one row (FOR UPDATE also reads its latest
-- committed value), so entries are appended one transaction at a time; verify compares it with the last entry, which
-- also reveals entries removed from the end.
CREATE TABLE audit_chain_head (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_hash  bytea
);
INSERT INTO audit_chain_head (singleton, last_hash) VALUES (true, NULL);
