-- Scheduled transactions and the record of each of their occurrences. Same shape as the PostgreSQL schema;
-- instants are integer microseconds, UUIDs 16-byte blobs.

CREATE TABLE schedules (
    id                    BLOB    PRIMARY KEY NOT NULL,
    user_id               BLOB    NOT NULL REFERENCES users (id),
    transaction_type      TEXT    NOT NULL CHECK (transaction_type IN ('credit', 'debit', 'transfer')),
    amount_minor          INTEGER NOT NULL CHECK (amount_minor > 0),
    currency              TEXT    NOT NULL CHECK (length(currency) = 3 AND currency = upper(currency)),
    description           TEXT,
    to_user_id            BLOB    REFERENCES users (id),
    schedule_type         TEXT    NOT NULL CHECK (schedule_type IN ('once', 'recurring')),
    execute_at            INTEGER NOT NULL,
    recurrence_pattern    TEXT    CHECK (recurrence_pattern IN ('daily', 'weekly', 'monthly', 'yearly')),
    recurrence_end_date   INTEGER,
    max_occurrences       INTEGER CHECK (max_occurrences >= 1),
    current_occurrence    INTEGER NOT NULL DEFAULT 0 CHECK (current_occurrence >= 0),
    next_execution_at     INTEGER,
    last_executed_at      INTEGER,
    status                TEXT    NOT NULL
                                  CHECK (status IN ('active', 'paused', 'cancelled', 'completed', 'failed')),
    attempt               INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    consecutive_failures  INTEGER NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    lease_until           INTEGER,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    CONSTRAINT schedules_pattern CHECK ((schedule_type = 'recurring') = (recurrence_pattern IS NOT NULL)),
    CONSTRAINT schedules_receiver CHECK ((transaction_type = 'transfer') = (to_user_id IS NOT NULL))
) STRICT;
CREATE INDEX schedules_due_idx ON schedules (next_execution_at) WHERE status = 'active';
CREATE INDEX schedules_user_idx ON schedules (user_id, created_at, id);

CREATE TABLE schedule_executions (
    schedule_id     BLOB    NOT NULL REFERENCES schedules (id),
    occurrence      INTEGER NOT NULL CHECK (occurrence >= 1),
    executed_at     INTEGER NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('success', 'failed', 'skipped')),
    transaction_id  BLOB    REFERENCES transactions (id),
    error           TEXT,
    attempts        INTEGER NOT NULL CHECK (attempts >= 0),
    PRIMARY KEY (schedule_id, occurrence)
) STRICT;
