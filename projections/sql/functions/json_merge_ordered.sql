-- jsonb's `row || patch` for json, keeping order: the row's keys in their order (a patched key
-- takes the patch's value in place), then the patch's new keys in theirs. Values are kept as text.
CREATE OR REPLACE FUNCTION json_merge_ordered(_row json, _patch json) RETURNS json
LANGUAGE sql IMMUTABLE AS $$
    SELECT ('{' || coalesce(string_agg(to_json(m.key)::text || ':' || m.value::text, ',' ORDER BY m.ord), '') || '}')::json
    FROM (
        SELECT r.key, coalesce(p.value, r.value) AS value, r.ord
        FROM json_each(_row) WITH ORDINALITY AS r(key, value, ord)
        LEFT JOIN json_each(_patch) AS p ON p.key = r.key
        UNION ALL
        SELECT p.key, p.value, 2147483647 + p.ord
        FROM json_each(_patch) WITH ORDINALITY AS p(key, value, ord)
        WHERE NOT EXISTS (SELECT 1 FROM json_each(_row) AS r WHERE r.key = p.key)
    ) AS m
$$;
