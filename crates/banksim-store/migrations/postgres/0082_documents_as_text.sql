-- Events' data and audit entries' details are kept as `text`. The service is their only writer and serialises
-- them with serde_json; PostgreSQL's check that a `json` value is JSON (its lexer) was a fifth of PostgreSQL's CPU
-- while a population's `COPY`s ran (docs/benchmarks.md), and a share of every movement's commit. Readers cast to
-- `json` as they select (`data::json`, `details::json`), which also serves anyone querying inside them by hand.
-- The text stored is unchanged: an audit entry's details are still the very bytes its hash covers. On a large
-- database this rewrites both tables once (there is no binary cast from `json` to `text`).
ALTER TABLE events ALTER COLUMN data TYPE text;
ALTER TABLE audit_log ALTER COLUMN details TYPE text;
