-- Read models: one row per live object, holding the object exactly as the API returns it.
-- Ids are time-ordered, so keyset pagination walks (scope, id) indexes without COUNT or OFFSET.
CREATE TABLE agents (
    id         text COLLATE "C" PRIMARY KEY,
    project    text COLLATE "C" NOT NULL,
    data       jsonb NOT NULL
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
