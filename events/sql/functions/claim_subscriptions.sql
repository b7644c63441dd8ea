-- claim_subscriptions: take the named subscriptions nobody else holds (or whose holder's lease
-- lapsed: its process died) and renew the ones the owner holds; their names.
CREATE OR REPLACE FUNCTION claim_subscriptions(_names text[], _owner text, _seconds float8)
RETURNS SETOF text LANGUAGE sql AS $$
    UPDATE subscriptions SET lease_owner = _owner, lease_until = now() + make_interval(secs => _seconds)
    WHERE name = ANY(_names) AND (lease_owner = _owner OR lease_owner IS NULL OR lease_until < now())
    RETURNING name
$$;
