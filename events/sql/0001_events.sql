-- The log: one append-only table for every stream. A row is a fact and is never updated.
CREATE TABLE events (
    position    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream      text COLLATE "C" NOT NULL,
    version     integer NOT NULL CHECK (version > 0),
    type        text NOT NULL,
    data        jsonb NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The writing transaction: the catch-up reader only trusts rows below the oldest running one.
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (stream, version)
);

CREATE INDEX events_xid_position ON events (xid, position);

-- Append-only is a property of the table, not of well-behaved callers.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only (% refused)', TG_OP;
END $$;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();
