-- The virtual clock of simulation mode (see the PostgreSQL migration of the same number). Instants are
-- microseconds since the epoch, as everywhere in this schema.
CREATE TABLE simulation_clock (
    id           INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    virtual_now  INTEGER,
    holder       BLOB,
    lease_until  INTEGER,
    updated_at   INTEGER
) STRICT;
INSERT INTO simulation_clock (id) VALUES (1);
