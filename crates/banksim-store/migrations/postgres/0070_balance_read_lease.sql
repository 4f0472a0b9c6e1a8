-- The balance read lease (crates/banksim-server/src/cache/balances.rs). While one instance holds it, no other
-- connection changes a wallet, so that instance answers balance reads from its cache without first sending a marker
-- round the change bus: its own writes update its cache before they are answered.
--
-- `holder` holds the lease until `valid_until` (the database's clock). A change to a wallet by anyone else waits
-- until the lease has run out, and closes it until `closed_until`: while other instances write, nobody takes it.
-- Each connection names its instance in the `banksim.instance` setting (set when it connects). Taking the lease
-- (rather than renewing it without a break) first takes `accounts` in SHARE mode, which waits for every change in
-- flight to commit: a change that began before the lease was taken cannot commit after it.
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
    SELECT * INTO lease FROM balance_read_lease;
    IF lease.holder = me THEN
        -- The holder's own change: it updates its cache itself.
        RETURN NULL;
    END IF;
    -- The row lock orders this change with the holder's renewals: a renewal waits for this commit and then finds
    -- the lease broken and closed, and this change waits for a renewal that came first and then sees it.
    SELECT * INTO lease FROM balance_read_lease FOR UPDATE;
    IF lease.holder IS DISTINCT FROM me AND lease.valid_until > clock_timestamp() THEN
        PERFORM pg_sleep(extract(epoch FROM lease.valid_until - clock_timestamp()));
    END IF;
    IF lease.closed_until < clock_timestamp() + interval '20 seconds' THEN
        UPDATE balance_read_lease SET closed_until = clock_timestamp() + interval '30 seconds';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER accounts_respect_balance_read_lease
    AFTER UPDATE ON accounts FOR EACH STATEMENT EXECUTE FUNCTION respect_balance_read_lease();
