-- The balance read lease (crates/banksim-server/src/cache/balances.rs). While one instance holds it, no other
-- connection changes a wallet, so that instance answers balance reads from its cache without first sending a marker
-- round the change bus: its own writes update its cache before they are answered.
--
-- `holder` holds the lease until `valid_until` (the database's clock, which must not be stepped). An update of
-- accounts by anyone else waits until the lease has run out (holding what it has locked, the audit chain's head
-- included), and closes it until `closed_until`, 30 s ahead, pushed on while others go on writing: while they
-- write, nobody takes it.
-- Each connection names its instance in the `banksim.instance` setting (set when it connects). Taking the lease
-- (rather than renewing it without a break) first takes `accounts` in SHARE mode, which waits for every change in
-- flight to commit: a change that began before the lease was taken cannot commit after it. A change made while no
-- lease holds closes nothing: an instance that wrote before it took the lease may still take it.
CREATE TABLE balance_read_lease (
    singleton     boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    holder        uuid,
    valid_until   timestamptz NOT NULL DEFAULT '-infinity',
    closed_until  timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO balance_read_lease DEFAULT VALUES;

CREATE FUNCTION respect_balance_read_lease() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    me    uuid := NULLIF(current_setting('banksim.instance', true), '')::uuid;
    lease balance_read_lease;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM changed) THEN
        -- A batch that changed no account (every movement refused or replayed) holds nobody back.
        RETURN NULL;
    END IF;
    SELECT * INTO lease FROM balance_read_lease;
    IF lease.holder = me THEN
        -- The holder's own change: it updates its cache itself.
        RETURN NULL;
    END IF;
    -- The row's lock orders this change with the holder's renewals: a renewal waits for this commit (and then finds
    -- the lease broken), and this change waits for a renewal that came first (and then sees the lease it gave).
    -- A lease taken anew waits for this change to commit (it locks the table first).
    SELECT * INTO lease FROM balance_read_lease FOR UPDATE;
    IF lease.holder IS DISTINCT FROM me AND lease.valid_until > clock_timestamp() THEN
        -- Another instance's lease holds: wait for it to run out, and close it.
        PERFORM pg_sleep(extract(epoch FROM lease.valid_until - clock_timestamp()));
        UPDATE balance_read_lease SET closed_until = clock_timestamp() + interval '30 seconds';
    ELSIF lease.closed_until > clock_timestamp() AND lease.closed_until < clock_timestamp() + interval '20 seconds' THEN
        -- Closed, and still written to by others: kept closed.
        UPDATE balance_read_lease SET closed_until = clock_timestamp() + interval '30 seconds';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER accounts_respect_balance_read_lease
    AFTER UPDATE ON accounts REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION respect_balance_read_lease();
