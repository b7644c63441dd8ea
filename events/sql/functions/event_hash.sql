-- Tamper evidence: every event carries a SHA-256 hash chained to the previous event of its stream,
-- over the event exactly as written:
--   hex(sha256(prev_hash | stream | version | type | data::text | metadata::text | recorded_at in µs))
-- ('|'-joined; prev_hash is '' for a stream's first event). Anyone can recompute the chain from the
-- rows (threadline audit verify) and find an edited or missing event. recorded_at is one clock
-- reading per append, so it is part of what is proven.
DROP FUNCTION IF EXISTS event_hash(text, text, integer, text, jsonb, jsonb, timestamptz);   -- before events were json
CREATE OR REPLACE FUNCTION event_hash(_prev text, _stream text, _version integer, _type text, _data json,
                                      _metadata jsonb, _recorded_at timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(concat_ws('|', coalesce(_prev, ''), _stream, _version, _type, _data::text,
                                              _metadata::text, (extract(epoch FROM _recorded_at) * 1000000)::bigint),
                                    'UTF8')), 'hex')
$$;
