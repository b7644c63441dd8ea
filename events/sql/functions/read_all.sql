-- read_all: every stream, from a checkpoint (xid, position), gap-safe.
-- Only rows written by transactions older than the oldest one still running are returned, so a
-- transaction that commits later can never land behind the checkpoint. Within one transaction,
-- and for one stream, the order is the order of writing.
CREATE OR REPLACE FUNCTION read_all(_after_xid xid8, _after_position bigint, _limit integer)
RETURNS SETOF events LANGUAGE sql STABLE AS $$
    SELECT * FROM events
    WHERE (xid, position) > (_after_xid, _after_position)
      AND xid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY xid, position
    LIMIT _limit
$$;
