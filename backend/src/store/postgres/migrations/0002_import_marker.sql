-- A copy into this database in progress (`ringchat migrate --to postgres:…`, backup/copy.rs):
-- written before the copy's first batch, removed once the copy is verified. A server refuses
-- to open a database that holds one (store/postgres/mod.rs): what it holds is part of a store,
-- and a server on it would hand out ids the rest of the copy holds.
CREATE TABLE import_in_progress (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    source     text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);
