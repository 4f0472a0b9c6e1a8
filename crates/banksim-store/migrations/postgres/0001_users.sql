-- Users and their refresh tokens. Later migrations add the ledger (accounts, transactions, postings), events,
-- audit entries, idempotency records and schedules, all keyed by UUID and referencing users(id).

CREATE TABLE users (
    id             uuid        PRIMARY KEY,
    username       text        NOT NULL,
    email          text        NOT NULL CHECK (email = lower(email)),
    password_hash  text        NOT NULL,
    role           text        NOT NULL CHECK (role IN ('user', 'admin')),
    is_active      boolean     NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

-- Unique names are mapped to API error codes (email_taken, username_taken): keep them stable.
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
-- Keyset paging of the admin user list.
CREATE INDEX users_created_at_id_idx ON users (created_at, id);

CREATE TABLE refresh_tokens (
    id          uuid        PRIMARY KEY,
    -- Every token rotated from one login shares a family; reuse of a spent token revokes the family.
    family_id   uuid        NOT NULL,
    user_id     uuid        NOT NULL REFERENCES users (id),
    -- SHA-256 of the token: the token itself is never stored.
    token_hash  bytea       NOT NULL,
    issued_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz
);

CREATE UNIQUE INDEX refresh_tokens_token_hash_key ON refresh_tokens (token_hash);
CREATE INDEX refresh_tokens_family_id_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_id_idx ON refresh_tokens (user_id);
