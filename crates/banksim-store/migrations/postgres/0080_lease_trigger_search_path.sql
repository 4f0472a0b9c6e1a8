-- The lease trigger (0070) names its table unqualified: pinned to the schema the migrations run in (and `pg_temp`
-- last, so that no session's temporary table stands in for it), it finds it from a session whose `search_path` leads
-- elsewhere (a tool, an administrator's psql naming the schema, another role's "$user" schema).
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION respect_balance_read_lease() SET search_path = %I, pg_temp', current_schema());
END $$;
