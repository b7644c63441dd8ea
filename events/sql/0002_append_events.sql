-- append_events: write a batch of events for one or more streams in the caller's transaction.
-- Each row carries the version it claims; UNIQUE(stream, version) refuses a stale writer.
-- A writer that claims a version beyond the stream's head (a gap) is refused here too.
CREATE FUNCTION append_events(
    _streams text[], _versions integer[], _types text[], _data jsonb[], _metadata jsonb[]
) RETURNS TABLE (event_position bigint, event_recorded_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    head record;
BEGIN
    -- One unique-index probe per stream; a set-based anti-join here gets planned as a scan of the
    -- whole log while the table's statistics are still those of an empty table.
    FOR head IN
        SELECT u.stream, min(u.version) AS first_version
        FROM unnest(_streams, _versions) AS u(stream, version) GROUP BY u.stream
    LOOP
        IF head.first_version > 1 AND NOT EXISTS (
            SELECT 1 FROM events e WHERE e.stream = head.stream AND e.version = head.first_version - 1
        ) THEN
            RAISE EXCEPTION 'stream % has no version %', head.stream, head.first_version - 1
                USING ERRCODE = 'unique_violation';
        END IF;
    END LOOP;

    RETURN QUERY
    INSERT INTO events (stream, version, type, data, metadata)
    SELECT * FROM unnest(_streams, _versions, _types, _data, _metadata)
    RETURNING events.position, events.recorded_at;
END $$;
