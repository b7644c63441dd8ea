-- Runs and run steps, and the read-model changes that write them.
CREATE TABLE runs (
    id          text COLLATE "C" PRIMARY KEY,
    thread_id   text COLLATE "C" NOT NULL,
    project     text COLLATE "C" NOT NULL,
    status      text NOT NULL,
    expires_at  bigint,
    version     integer,            -- the thread stream's version of RunCreated: where its events start
    data        jsonb NOT NULL
);
CREATE INDEX runs_by_thread ON runs (thread_id, id);
-- The actor keeps one active run per thread; this index is the last word if two processes race.
CREATE UNIQUE INDEX runs_one_active_per_thread ON runs (thread_id)
    WHERE status IN ('queued', 'in_progress', 'requires_action', 'cancelling');
-- The expiry sweeper's query: active runs by deadline.
CREATE INDEX runs_active_by_expiry ON runs (expires_at)
    WHERE status IN ('queued', 'in_progress', 'requires_action', 'cancelling');

CREATE TABLE run_steps (
    id          text COLLATE "C" PRIMARY KEY,
    run_id      text COLLATE "C" NOT NULL,
    thread_id   text COLLATE "C" NOT NULL,
    project     text COLLATE "C" NOT NULL,
    data        jsonb NOT NULL
);
CREATE INDEX run_steps_by_run ON run_steps (run_id, id);
CREATE INDEX run_steps_by_thread ON run_steps (thread_id);

-- apply_read_models, now with runs and steps (replaces 0002's version).
CREATE OR REPLACE FUNCTION apply_read_models(_changes jsonb) RETURNS integer
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
            DELETE FROM run_steps WHERE thread_id = c->>1;
            DELETE FROM runs WHERE thread_id = c->>1;
            DELETE FROM threads WHERE id = c->>1;
        WHEN 'message' THEN
            -- The project comes from the thread's row, written earlier in this or another commit.
            INSERT INTO messages (id, thread_id, project, run_id, data)
            SELECT c->>1, t.id, t.project, c->>3, c->4 FROM threads t WHERE t.id = c->>2;
        WHEN 'message.merge' THEN
            UPDATE messages SET data = data || (c->2) WHERE id = c->>1;
        WHEN 'message.delete' THEN
            DELETE FROM messages WHERE id = c->>1;
        WHEN 'run' THEN
            INSERT INTO runs (id, thread_id, project, status, expires_at, version, data)
            SELECT c->>1, t.id, t.project, 'queued', (c->>3)::bigint, (c->>5)::integer, c->4
            FROM threads t WHERE t.id = c->>2;
        WHEN 'run.merge' THEN
            UPDATE runs SET data = data || (c->2),
                            status = coalesce(c->2->>'status', status),
                            expires_at = CASE WHEN c->2 ? 'expires_at' THEN (c->2->>'expires_at')::bigint
                                              ELSE expires_at END
            WHERE id = c->>1;
        WHEN 'step' THEN
            INSERT INTO run_steps (id, run_id, thread_id, project, data)
            SELECT c->>1, r.id, r.thread_id, r.project,
                   c->3 || jsonb_build_object('thread_id', r.thread_id, 'assistant_id', r.data->'assistant_id')
            FROM runs r WHERE r.id = c->>2;
        WHEN 'step.merge' THEN
            UPDATE run_steps SET data = data || (c->2) WHERE id = c->>1;
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
