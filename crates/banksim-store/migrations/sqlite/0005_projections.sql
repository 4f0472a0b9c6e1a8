-- Projections: read models that projectors build from the event log alone.

-- Where each projection stands: the sequence of the last event it applied, moved in the same transaction as the
-- read model (SQLite's single writer makes the projector that holds it the only one applying).
CREATE TABLE projection_checkpoints (
    projection  TEXT    PRIMARY KEY NOT NULL,
    position    INTEGER NOT NULL DEFAULT 0 CHECK (position >= 0),
    updated_at  INTEGER
) STRICT;
INSERT INTO projection_checkpoints (projection) VALUES ('daily_statements'), ('system_totals');

-- One row per wallet and UTC day (YYYY-MM-DD) with movements; quiet days are filled in when read.
CREATE TABLE daily_statements (
    user_id        BLOB    NOT NULL,
    currency       TEXT    NOT NULL,
    day            TEXT    NOT NULL,
    opening_minor  INTEGER NOT NULL,
    credits_minor  INTEGER NOT NULL CHECK (credits_minor >= 0),
    debits_minor   INTEGER NOT NULL CHECK (debits_minor >= 0),
    closing_minor  INTEGER NOT NULL,
    PRIMARY KEY (user_id, currency, day),
    CONSTRAINT daily_statements_adds_up CHECK (closing_minor = opening_minor + credits_minor - debits_minor)
) STRICT;

-- Per currency: what users and the FX accounts hold, what came in and went out, how many movements.
CREATE TABLE system_totals (
    currency             TEXT    PRIMARY KEY NOT NULL,
    user_balances_minor  INTEGER NOT NULL,
    fx_minor             INTEGER NOT NULL,
    money_in_minor       INTEGER NOT NULL,
    money_out_minor      INTEGER NOT NULL,
    transactions         INTEGER NOT NULL
) STRICT;
