-- Users and their refresh tokens. Later migrations add the ledger (accounts, transactions, postings), events,
-- audit entries, idempotency records and schedules, all keyed by UUID and referencing users(id).
-- UUIDs are 16-byte blobs; instants are integer microseconds since the Unix epoch (UTC), so they sort and compare
-- exactly, with the same precision as PostgreSQL's timestamptz.

CREATE TABLE users (
    id             BLOB    PRIMARY KEY NOT NULL,
    username       TEXT    NOT NULL,
    email          TEXT    NOT NULL CHECK (email = lower(email)),
    password_hash  TEXT    NOT NULL,
    role           TEXT    NOT NULL CHECK (role IN ('user', 'admin')),
    is_active      INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) STRICT;

-- Unique names are mapped to API error codes (email_taken, username_taken): keep them stable.
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE INDEX users_created_at_id_idx ON users (created_at, id);

CREATE TABLE refresh_tokens (
    id          BLOB    PRIMARY KEY NOT NULL,
    family_id   BLOB    NOT NULL,
    user_id     BLOB    NOT NULL REFERENCES users (id),
    token_hash  BLOB    NOT NULL,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    revoked_at  INTEGER
) STRICT;

CREATE UNIQUE INDEX refresh_tokens_token_hash_key ON refresh_tokens (token_hash);
CREATE INDEX refresh_tokens_family_id_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_id_idx ON refresh_tokens (user_id);
