-- The trace id of the request (or job run) that wrote an audit entry, so that an entry leads to its trace. Entries
-- written before this column have none. An entry's hash covers its trace id when it has one (see src/chain.rs).
ALTER TABLE audit_log ADD COLUMN trace_id TEXT;
