-- append_events: write a batch of events for one or more streams in the caller's transaction,
-- each chained to its stream's head (event_hash.sql). Each row carries the version it claims;
-- UNIQUE(stream, version) refuses a stale writer, and a writer that claims a version beyond the
-- stream's head (a gap) is refused here too.
DROP FUNCTION IF EXISTS append_events(text[], integer[], text[], jsonb[], jsonb[]);   -- before events were json
CREATE OR REPLACE FUNCTION append_events(
    _streams text[], _versions integer[], _types text[], _data json[], _metadata jsonb[]
) RETURNS TABLE (event_position bigint, event_recorded_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    head record;
    heads jsonb := '{}';
    prev text;
    hashes text[] := '{}';
    at timestamptz := clock_timestamp();
BEGIN
    -- One unique-index probe per stream: the head must exist (no gaps) and gives the chain's link.
    -- (A set-based anti-join here gets planned as a scan of the whole log while the table's
    -- statistics are still those of an empty table.)
    FOR head IN
        SELECT u.stream, min(u.version) AS first_version
        FROM unnest(_streams, _versions) AS u(stream, version) GROUP BY u.stream
    LOOP
        prev := '';
        IF head.first_version > 1 THEN
            SELECT coalesce(e.hash, '') INTO prev FROM events e
            WHERE e.stream = head.stream AND e.version = head.first_version - 1;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'stream % has no version %', head.stream, head.first_version - 1
                    USING ERRCODE = 'unique_violation';
            END IF;
        END IF;
        heads := heads || jsonb_build_object(head.stream, prev);
    END LOOP;

    FOR i IN 1 .. coalesce(array_length(_streams, 1), 0) LOOP
        prev := event_hash(heads ->> _streams[i], _streams[i], _versions[i], _types[i], _data[i], _metadata[i], at);
        hashes := hashes || prev;
        heads := heads || jsonb_build_object(_streams[i], prev);
    END LOOP;

    RETURN QUERY
    INSERT INTO events (stream, version, type, data, metadata, recorded_at, hash)
    SELECT u.s, u.v, u.t, u.d, u.m, at, u.h
    FROM unnest(_streams, _versions, _types, _data, _metadata, hashes) AS u(s, v, t, d, m, h)
    RETURNING events.position, events.recorded_at;
END $$;
