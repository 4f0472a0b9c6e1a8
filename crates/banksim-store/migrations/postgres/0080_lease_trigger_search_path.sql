-- The lease trigger (0070) names its table unqualified: pinned to the schema it was created in, it finds it from a
-- session whose `search_path` leads elsewhere (a tool, an administrator's psql naming the schema).
ALTER FUNCTION respect_balance_read_lease() SET search_path FROM CURRENT;
