-- Tamper evidence: each audit entry carries the hash of the entry before it and its own hash over its content, so
-- changing, deleting or reordering an entry breaks the chain at that point (checked by `banksim verify`).
ALTER TABLE audit_log ADD COLUMN prev_hash BLOB;
ALTER TABLE audit_log ADD COLUMN hash BLOB;

-- The chain's head: the hash of the last entry (verify compares it with the last entry, which also reveals entries
-- removed from the end).
CREATE TABLE audit_chain_head (
    singleton  INTEGER PRIMARY KEY NOT NULL DEFAULT 1 CHECK (singleton = 1),
    last_hash  BLOB
) STRICT;
INSERT INTO audit_chain_head (singleton, last_hash) VALUES (1, NULL);
