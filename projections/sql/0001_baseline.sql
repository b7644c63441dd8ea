-- The read models' tables and indexes, as of the squash of migrations 0001–0005 (a database made
-- before it is adopted if it had all of them; see service/database.py SQUASHED). The functions
-- that write them are in functions/, one per file, reapplied on every migrate.
--
-- One row per live object, holding the object exactly as the API returns it. Ids are
-- time-ordered, so keyset pagination walks (scope, id) indexes without COUNT or OFFSET.
-- Assistants and runs hold user-ordered JSON (function tools' `parameters`, response_format's
-- json_schema): json keeps it as written, where jsonb would sort every object's keys. The other
-- read models hold no user-ordered schema and stay jsonb.
CREATE TABLE agents (
    id         text COLLATE "C" PRIMARY KEY,
    project    text COLLATE "C" NOT NULL,
    data       json NOT NULL
);
CREATE INDEX agents_by_project ON agents (project, id);

CREATE TABLE threads (
    id         text COLLATE "C" PRIMARY KEY,
    project    text COLLATE "C" NOT NULL,
    data       jsonb NOT NULL
);
CREATE INDEX threads_by_project ON threads (project, id);

CREATE TABLE messages (
    id         text COLLATE "C" PRIMARY KEY,
    thread_id  text COLLATE "C" NOT NULL,
    project    text COLLATE "C" NOT NULL,
    run_id     text COLLATE "C",
    data       jsonb NOT NULL
);
CREATE INDEX messages_by_thread ON messages (thread_id, id);
CREATE INDEX messages_by_run ON messages (thread_id, run_id, id) WHERE run_id IS NOT NULL;

CREATE TABLE files (
    id         text COLLATE "C" PRIMARY KEY,
    project    text COLLATE "C" NOT NULL,
    purpose    text NOT NULL,
    data       jsonb NOT NULL
);
CREATE INDEX files_by_project ON files (project, id);
CREATE INDEX files_by_purpose ON files (project, purpose, id);
-- Files uploaded with `expires_after` carry `expires_at`; the sweeper finds the expired ones here.
CREATE INDEX files_expiry ON files (((data->>'expires_at')::bigint)) WHERE data->>'expires_at' IS NOT NULL;

CREATE TABLE runs (
    id          text COLLATE "C" PRIMARY KEY,
    thread_id   text COLLATE "C" NOT NULL,
    project     text COLLATE "C" NOT NULL,
    status      text NOT NULL,
    expires_at  bigint,
    version     integer,            -- the thread stream's version of RunCreated: where its events start
    data        json NOT NULL
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
