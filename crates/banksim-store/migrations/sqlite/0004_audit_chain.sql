-- Tamper evidence: each audit entry carries the hash of the entry before it and its own hash over its content, so
-- changing, deleting or reordering an entry breaks the chain at that point (checked by `banksim verify`).
ALTER TABLE audit_log ADD COLUMN prev_hash BLOB;
ALTER TABLE audit_log ADD COLUMN hash BLOB;
