-- apply_read_models: the read-model changes of freshly appended events (projections/changes.py,
-- made by projections/projector.py), written in the append's own statement, so events and read
-- models commit together. Each change is an object whose `kind` names it; its other fields are
-- read by name. Taken as json so nothing sorts them on the way. json_merge_ordered is
-- schema-qualified: a rebuild runs this with search_path set to its new schema only.
DROP FUNCTION IF EXISTS apply_read_models(jsonb);    -- before the changes were json
CREATE OR REPLACE FUNCTION apply_read_models(_changes json) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    c json;
BEGIN
    FOR c IN SELECT value FROM json_array_elements(_changes) LOOP
        CASE c->>'kind'
        WHEN 'agent' THEN
            INSERT INTO agents (id, project, data) VALUES (c->>'id', c->>'project', c->'data');
        WHEN 'thread' THEN
            INSERT INTO threads (id, project, data) VALUES (c->>'id', c->>'project', (c->'data')::jsonb);
        WHEN 'message' THEN
            -- The project comes from the thread's row, written earlier in this or another commit.
            INSERT INTO messages (id, thread_id, project, run_id, data)
            SELECT c->>'id', t.id, t.project, c->>'run_id', (c->'data')::jsonb FROM threads t WHERE t.id = c->>'thread_id';
        WHEN 'run' THEN
            INSERT INTO runs (id, thread_id, project, status, expires_at, version, data)
            SELECT c->>'id', t.id, t.project, 'queued', (c->>'expires_at')::bigint, (c->>'version')::integer, c->'data'
            FROM threads t WHERE t.id = c->>'thread_id';
        WHEN 'step' THEN
            INSERT INTO run_steps (id, run_id, thread_id, project, data)
            SELECT c->>'id', r.id, r.thread_id, r.project,
                   (c->'data')::jsonb || jsonb_build_object('thread_id', r.thread_id, 'assistant_id', (r.data->'assistant_id')::jsonb)
            FROM runs r WHERE r.id = c->>'run_id';
        WHEN 'file' THEN
            INSERT INTO files (id, project, purpose, data) VALUES (c->>'id', c->>'project', c->>'purpose', (c->'data')::jsonb);
        WHEN 'merge' THEN
            CASE c->>'table'
            WHEN 'agents' THEN
                UPDATE agents SET data = public.json_merge_ordered(data, c->'patch') WHERE id = c->>'id';
            WHEN 'threads' THEN
                UPDATE threads SET data = data || (c->'patch')::jsonb WHERE id = c->>'id';
            WHEN 'messages' THEN
                UPDATE messages SET data = data || (c->'patch')::jsonb WHERE id = c->>'id';
            WHEN 'runs' THEN
                -- json's -> answers SQL NULL for a missing key, json null for a key set to null (jsonb's ?).
                UPDATE runs SET data = public.json_merge_ordered(data, c->'patch'),
                                status = coalesce(c->'patch'->>'status', status),
                                expires_at = CASE WHEN c->'patch'->'expires_at' IS NOT NULL
                                                  THEN (c->'patch'->>'expires_at')::bigint ELSE expires_at END
                WHERE id = c->>'id';
            WHEN 'run_steps' THEN
                UPDATE run_steps SET data = data || (c->'patch')::jsonb WHERE id = c->>'id';
            WHEN 'files' THEN
                UPDATE files SET data = data || (c->'patch')::jsonb WHERE id = c->>'id';
            END CASE;
        WHEN 'delete' THEN
            CASE c->>'table'
            WHEN 'threads' THEN
                -- The read models declared deleted with their thread (projections/read_models/).
                DELETE FROM messages WHERE thread_id = c->>'id';
                DELETE FROM run_steps WHERE thread_id = c->>'id';
                DELETE FROM runs WHERE thread_id = c->>'id';
                DELETE FROM threads WHERE id = c->>'id';
            WHEN 'agents' THEN
                DELETE FROM agents WHERE id = c->>'id';
            WHEN 'messages' THEN
                DELETE FROM messages WHERE id = c->>'id';
            WHEN 'runs' THEN
                DELETE FROM runs WHERE id = c->>'id';
            WHEN 'run_steps' THEN
                DELETE FROM run_steps WHERE id = c->>'id';
            WHEN 'files' THEN
                DELETE FROM files WHERE id = c->>'id';
            END CASE;
        ELSE
            RAISE EXCEPTION 'unknown read-model change %', c->>'kind';
        END CASE;
    END LOOP;
    RETURN json_array_length(_changes);
END $$;
