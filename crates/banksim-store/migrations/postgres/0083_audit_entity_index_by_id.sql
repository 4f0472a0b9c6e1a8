-- The audit log's lookups by entity, cheaper to build and better at filtering by type (docs/benchmarks.md).

-- An entity's id first, as `0081` did for the events: every movement's entry has the same entity type, so leading
-- with the type made each comparison of the index's build go on to the id, a text compared without the sort's
-- abbreviated keys (over 2.8 million entries: 5.2-5.6 s against 2.1-2.8 s). Entity ids are identifiers, not words:
-- the `C` collation compares their bytes, and equality is unchanged.
DROP INDEX audit_log_entity_idx;
ALTER TABLE audit_log ALTER COLUMN entity_id TYPE text COLLATE "C";
CREATE INDEX audit_log_entity_idx ON audit_log (entity_id, entity_type, id);

-- A filter on the type alone, newest first. The movements' entries, nearly all of the log, are found fastest by
-- walking the log backwards; the other types (users, schedules, the clock...) are found through this index, which
-- keeps no entry for a movement (`?entity_type=user` on a seeded log: 1.4 s without it, 0.1 ms with it).
CREATE INDEX audit_log_type_idx ON audit_log (entity_type, id) WHERE entity_type <> 'transaction';
