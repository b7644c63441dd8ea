-- read_stream: one stream's events after a version, in version order.
CREATE OR REPLACE FUNCTION read_stream(_stream text, _after_version integer, _limit integer)
RETURNS SETOF events LANGUAGE sql STABLE AS $$
    SELECT * FROM events
    WHERE stream = _stream AND version > _after_version
    ORDER BY version
    LIMIT _limit
$$;
