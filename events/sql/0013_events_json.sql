-- Events keep their JSON exactly as written: jsonb re-sorts object keys, and a function tool's
-- `parameters` or a response_format's json_schema must reach the model (and come back from the API)
-- in the order the user sent them ("reasoning" before "answer" in a strict schema).
-- USING data::json keeps jsonb's text form, the exact text old events' hashes were computed over,
-- so the chain of events written before this migration still verifies (data::text is unchanged).
ALTER TABLE events ALTER COLUMN data TYPE json USING data::json;
-- A thread's snapshot holds its runs' tools: the same order must survive activation.
ALTER TABLE snapshots ALTER COLUMN state TYPE json USING state::json;

-- The chain's hash as in 0010, over json's text: the event exactly as written.
DROP FUNCTION event_hash(text, text, integer, text, jsonb, jsonb, timestamptz);
CREATE FUNCTION event_hash(_prev text, _stream text, _version integer, _type text, _data json,
                           _metadata jsonb, _recorded_at timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(concat_ws('|', coalesce(_prev, ''), _stream, _version, _type, _data::text,
                                              _metadata::text, (extract(epoch FROM _recorded_at) * 1000000)::bigint),
                                    'UTF8')), 'hex')
$$;

-- append_events as in 0010, taking the data as json.
DROP FUNCTION append_events(text[], integer[], text[], jsonb[], jsonb[]);
CREATE FUNCTION append_events(
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
