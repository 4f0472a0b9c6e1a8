-- A claim of a schedule is named by a token: only its holder may record the occurrence or ask for a retry, so a
-- worker whose lease expired while it was slow cannot move a schedule that another worker has taken over.
ALTER TABLE schedules ADD COLUMN lease_token UUID;
