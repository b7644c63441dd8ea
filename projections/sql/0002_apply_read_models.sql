-- apply_read_models: the read-model side of an append, run by the append's own statement so a
-- commit costs one round trip. _changes is a JSON array of [kind, id, ...] in event order;
-- the projector (projections/projector.py) builds it from the events.
CREATE FUNCTION apply_read_models(_changes jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    c jsonb;
BEGIN
    FOR c IN SELECT value FROM jsonb_array_elements(_changes) LOOP
        CASE c->>0
        WHEN 'agent' THEN
            INSERT INTO agents (id, project, data) VALUES (c->>1, c->>2, c->3);
        WHEN 'agent.merge' THEN
            UPDATE agents SET data = data || (c->2) WHERE id = c->>1;
        WHEN 'agent.delete' THEN
            DELETE FROM agents WHERE id = c->>1;
        WHEN 'thread' THEN
            INSERT INTO threads (id, project, data) VALUES (c->>1, c->>2, c->3);
        WHEN 'thread.merge' THEN
            UPDATE threads SET data = data || (c->2) WHERE id = c->>1;
        WHEN 'thread.delete' THEN
            DELETE FROM messages WHERE thread_id = c->>1;
            DELETE FROM threads WHERE id = c->>1;
        WHEN 'message' THEN
            -- The project comes from the thread's row, written earlier in this or another commit.
            INSERT INTO messages (id, thread_id, project, run_id, data)
            SELECT c->>1, t.id, t.project, c->>3, c->4 FROM threads t WHERE t.id = c->>2;
        WHEN 'message.merge' THEN
            UPDATE messages SET data = data || (c->2) WHERE id = c->>1;
        WHEN 'message.delete' THEN
            DELETE FROM messages WHERE id = c->>1;
        WHEN 'file' THEN
            INSERT INTO files (id, project, purpose, data) VALUES (c->>1, c->>2, c->>3, c->4);
        WHEN 'file.delete' THEN
            DELETE FROM files WHERE id = c->>1;
            -- The bytes go with the file: nothing in the log refers to them.
            DELETE FROM blob_chunks WHERE blob_id = c->>1;
        ELSE
            RAISE EXCEPTION 'unknown read-model change %', c->>0;
        END CASE;
    END LOOP;
    RETURN jsonb_array_length(_changes);
END $$;
