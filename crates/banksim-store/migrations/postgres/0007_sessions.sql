-- A refresh-token family (the session of one login) has a row of its own. Rotation and revocation both lock it,
-- so a logout cannot miss the successor token that a concurrent rotation is inserting.
CREATE TABLE refresh_token_families (
    id          UUID        PRIMARY KEY,
    user_id     UUID        NOT NULL REFERENCES users (id),
    revoked_at  TIMESTAMPTZ
);
INSERT INTO refresh_token_families (id, user_id, revoked_at)
SELECT family_id, (array_agg(user_id))[1],
       CASE WHEN bool_and(revoked_at IS NOT NULL) THEN max(revoked_at) END
FROM refresh_tokens GROUP BY family_id;
CREATE INDEX refresh_token_families_user_idx ON refresh_token_families (user_id);

-- Access tokens issued at or before this instant are refused: logout, a reused refresh token and deactivation end
-- the sessions they concern at once, not when their access tokens expire.
ALTER TABLE users ADD COLUMN sessions_revoked_at TIMESTAMPTZ;
