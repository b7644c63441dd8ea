-- Assistants and runs hold user-ordered JSON (function tools' `parameters`, response_format's
-- json_schema): json keeps it as written, where jsonb would sort every object's keys.
-- The other read models hold no user-ordered schema and stay jsonb.
ALTER TABLE agents ALTER COLUMN data TYPE json USING data::json;
ALTER TABLE runs ALTER COLUMN data TYPE json USING data::json;

-- jsonb's `row || patch` for json, keeping order: the row's keys in their order (a patched key
-- takes the patch's value in place), then the patch's new keys in theirs. Values are kept as text.
CREATE FUNCTION json_merge_ordered(_row json, _patch json) RETURNS json
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

-- apply_read_models as in 0003, taking its changes as json (so nothing sorts them on the way).
-- json_merge_ordered is schema-qualified: a rebuild runs this with search_path set to its new schema only.
DROP FUNCTION apply_read_models(jsonb);
CREATE FUNCTION apply_read_models(_changes json) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    c json;
BEGIN
    FOR c IN SELECT value FROM json_array_elements(_changes) LOOP
        CASE c->>0
        WHEN 'agent' THEN
            INSERT INTO agents (id, project, data) VALUES (c->>1, c->>2, c->3);
        WHEN 'agent.merge' THEN
            UPDATE agents SET data = public.json_merge_ordered(data, c->2) WHERE id = c->>1;
        WHEN 'agent.delete' THEN
            DELETE FROM agents WHERE id = c->>1;
        WHEN 'thread' THEN
            INSERT INTO threads (id, project, data) VALUES (c->>1, c->>2, (c->3)::jsonb);
        WHEN 'thread.merge' THEN
            UPDATE threads SET data = data || (c->2)::jsonb WHERE id = c->>1;
        WHEN 'thread.delete' THEN
            DELETE FROM messages WHERE thread_id = c->>1;
            DELETE FROM run_steps WHERE thread_id = c->>1;
            DELETE FROM runs WHERE thread_id = c->>1;
            DELETE FROM threads WHERE id = c->>1;
        WHEN 'message' THEN
            -- The project comes from the thread's row, written earlier in this or another commit.
            INSERT INTO messages (id, thread_id, project, run_id, data)
            SELECT c->>1, t.id, t.project, c->>3, (c->4)::jsonb FROM threads t WHERE t.id = c->>2;
        WHEN 'message.merge' THEN
            UPDATE messages SET data = data || (c->2)::jsonb WHERE id = c->>1;
        WHEN 'message.delete' THEN
            DELETE FROM messages WHERE id = c->>1;
        WHEN 'run' THEN
            INSERT INTO runs (id, thread_id, project, status, expires_at, version, data)
            SELECT c->>1, t.id, t.project, 'queued', (c->>3)::bigint, (c->>5)::integer, c->4
            FROM threads t WHERE t.id = c->>2;
        WHEN 'run.merge' THEN
            -- json's -> answers SQL NULL for a missing key, json null for a key set to null (jsonb's ?).
            UPDATE runs SET data = public.json_merge_ordered(data, c->2),
                            status = coalesce(c->2->>'status', status),
                            expires_at = CASE WHEN c->2->'expires_at' IS NOT NULL THEN (c->2->>'expires_at')::bigint
                                              ELSE expires_at END
            WHERE id = c->>1;
        WHEN 'step' THEN
            INSERT INTO run_steps (id, run_id, thread_id, project, data)
            SELECT c->>1, r.id, r.thread_id, r.project,
                   (c->3)::jsonb || jsonb_build_object('thread_id', r.thread_id, 'assistant_id', (r.data->'assistant_id')::jsonb)
            FROM runs r WHERE r.id = c->>2;
        WHEN 'step.merge' THEN
            UPDATE run_steps SET data = data || (c->2)::jsonb WHERE id = c->>1;
        WHEN 'file' THEN
            INSERT INTO files (id, project, purpose, data) VALUES (c->>1, c->>2, c->>3, (c->4)::jsonb);
        WHEN 'file.delete' THEN
            DELETE FROM files WHERE id = c->>1;
            -- The bytes go with the file: nothing in the log refers to them.
            DELETE FROM blob_chunks WHERE blob_id = c->>1;
        ELSE
            RAISE EXCEPTION 'unknown read-model change %', c->>0;
        END CASE;
    END LOOP;
    RETURN json_array_length(_changes);
END $$;
