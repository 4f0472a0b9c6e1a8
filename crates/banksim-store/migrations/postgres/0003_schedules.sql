-- Scheduled transactions and the record of each of their occurrences.

CREATE TABLE schedules (
    id                    uuid        PRIMARY KEY,
    user_id               uuid        NOT NULL REFERENCES users (id),
    transaction_type      text        NOT NULL CHECK (transaction_type IN ('credit', 'debit', 'transfer')),
    amount_minor          bigint      NOT NULL CHECK (amount_minor > 0),
    currency              text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    description           text,
    to_user_id            uuid        REFERENCES users (id),
    schedule_type         text        NOT NULL CHECK (schedule_type IN ('once', 'recurring')),
    execute_at            timestamptz NOT NULL,
    recurrence_pattern    text        CHECK (recurrence_pattern IN ('daily', 'weekly', 'monthly', 'yearly')),
    recurrence_end_date   timestamptz,
    -- bigint: the API accepts any limit up to 2^32 - 1.
    max_occurrences       bigint      CHECK (max_occurrences >= 1),
    -- Occurrences processed (run, or recorded as failed or skipped).
    current_occurrence    integer     NOT NULL DEFAULT 0 CHECK (current_occurrence >= 0),
    -- When the worker next takes the schedule up (its next occurrence or a retry); NULL once it has finished.
    next_execution_at     timestamptz,
    last_executed_at      timestamptz,
    status                text        NOT NULL
                                      CHECK (status IN ('active', 'paused', 'cancelled', 'completed', 'failed')),
    -- Failed attempts of the current occurrence.
    attempt               integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    consecutive_failures  integer     NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    -- A worker that claimed the schedule holds it until then; an expired lease (a dead instance) frees it.
    lease_until           timestamptz,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    CONSTRAINT schedules_pattern CHECK ((schedule_type = 'recurring') = (recurrence_pattern IS NOT NULL)),
    CONSTRAINT schedules_receiver CHECK ((transaction_type = 'transfer') = (to_user_id IS NOT NULL))
);
-- The worker's lookup of due schedules.
CREATE INDEX schedules_due_idx ON schedules (next_execution_at) WHERE status = 'active';
-- A user's schedules, newest first.
CREATE INDEX schedules_user_idx ON schedules (user_id, created_at, id);

CREATE TABLE schedule_executions (
    schedule_id     uuid        NOT NULL REFERENCES schedules (id),
    occurrence      integer     NOT NULL CHECK (occurrence >= 1),
    executed_at     timestamptz NOT NULL,
    status          text        NOT NULL CHECK (status IN ('success', 'failed', 'skipped')),
    transaction_id  uuid        REFERENCES transactions (id),
    error           text,
    attempts        integer     NOT NULL CHECK (attempts >= 0),
    PRIMARY KEY (schedule_id, occurrence)
);
