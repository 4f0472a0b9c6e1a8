-- Projections: read models that projectors build from the event log alone.

-- Where each projection stands: the sequence of the last event it applied. A projector locks its row while it
-- applies a batch (one active consumer per projection) and moves it in the same transaction as the read model.
CREATE TABLE projection_checkpoints (
    projection  text        PRIMARY KEY,
    position    bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    updated_at  timestamptz
);
INSERT INTO projection_checkpoints (projection) VALUES ('daily_statements'), ('system_totals');

-- One row per wallet and UTC day with movements; quiet days are filled in when read.
CREATE TABLE daily_statements (
    user_id        uuid   NOT NULL,
    currency       text   NOT NULL,
    day            date   NOT NULL,
    opening_minor  bigint NOT NULL,
    credits_minor  bigint NOT NULL CHECK (credits_minor >= 0),
    debits_minor   bigint NOT NULL CHECK (debits_minor >= 0),
    closing_minor  bigint NOT NULL,
    PRIMARY KEY (user_id, currency, day),
    CONSTRAINT daily_statements_adds_up CHECK (closing_minor = opening_minor + credits_minor - debits_minor)
);

-- Per currency: what users and the FX accounts hold, what came in and went out, how many movements.
CREATE TABLE system_totals (
    currency             text   PRIMARY KEY,
    user_balances_minor  bigint NOT NULL,
    fx_minor             bigint NOT NULL,
    money_in_minor       bigint NOT NULL,
    money_out_minor      bigint NOT NULL,
    transactions         bigint NOT NULL
);
