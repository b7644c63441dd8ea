-- advance_subscription: move a subscription's checkpoint from `old` to `new`, only while the owner
-- holds its lease and nobody moved it meanwhile; whether it moved. Call it in the statement that
-- records what the consumer did with the events, so both commit or neither does.
CREATE OR REPLACE FUNCTION advance_subscription(_name text, _owner text, _old_xid xid8, _old_position bigint,
                                                _new_xid xid8, _new_position bigint)
RETURNS boolean LANGUAGE sql AS $$
    WITH moved AS (
        UPDATE subscriptions SET checkpoint_xid = _new_xid, checkpoint_position = _new_position
        WHERE name = _name AND lease_owner = _owner AND checkpoint_xid = _old_xid
          AND checkpoint_position = _old_position
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM moved)
$$;
