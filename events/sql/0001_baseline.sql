-- The event log's tables and indexes, as of the squash of migrations 0001–0014 (a database made
-- before it is adopted if it had all of them; see service/database.py SQUASHED). The functions
-- over these tables are in functions/, one per file, reapplied on every migrate.

-- The log: one append-only table for every stream. A row is a fact and is never updated or
-- deleted (functions/events_are_immutable.sql attaches the triggers that refuse it).
CREATE TABLE events (
    position    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream      text COLLATE "C" NOT NULL,
    version     integer NOT NULL CHECK (version > 0),
    type        text NOT NULL,
    -- json, not jsonb: an event keeps its JSON exactly as written (a function tool's `parameters`
    -- must reach the model in the order the user sent them), and the hash is over that text.
    data        json NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The writing transaction: the catch-up reader only trusts rows below the oldest running one.
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    -- Tamper evidence: chained to the previous event of the stream (functions/event_hash.sql).
    hash        text,
    UNIQUE (stream, version)
);
CREATE INDEX events_xid_position ON events (xid, position);

-- Snapshots let an actor activate without replaying a long stream. They are a cache of the fold:
-- deleting every row here changes nothing but start-up time. json keeps the runs' tools in order.
CREATE TABLE snapshots (
    stream      text COLLATE "C" PRIMARY KEY,
    version     integer NOT NULL,
    schema      integer NOT NULL,
    state       json NOT NULL,
    taken_at    timestamptz NOT NULL DEFAULT now()
);

-- Content keys, one per thread, apart from the log (events/cipher.py). Erasure sets key to NULL.
CREATE TABLE thread_keys (
    thread_id    text COLLATE "C" PRIMARY KEY,
    key          bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz
);

-- File bytes, in chunks, written in the same transaction as the FileUploaded event.
CREATE TABLE blob_chunks (
    blob_id text COLLATE "C" NOT NULL,
    seq     integer NOT NULL,
    data    bytea NOT NULL,
    PRIMARY KEY (blob_id, seq)
);
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- Uploads API: transfer state, not conversation, so plain rows rather than events. A part's bytes
-- sit in blob_chunks under the part's id until completion re-keys them to the new file's id.
CREATE TABLE uploads (
    id         text COLLATE "C" PRIMARY KEY,
    project    text NOT NULL,
    status     text NOT NULL,            -- pending, completed, cancelled, expired
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    bytes      bigint NOT NULL,
    filename   text NOT NULL,
    mime_type  text NOT NULL,
    purpose    text NOT NULL,
    file_expires_after integer,          -- the completed file's `expires_after` seconds, if any
    file_id    text
);
CREATE INDEX uploads_pending_expiry ON uploads (expires_at) WHERE status = 'pending';

CREATE TABLE upload_parts (
    id         text COLLATE "C" PRIMARY KEY,
    upload_id  text COLLATE "C" NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    created_at bigint NOT NULL,
    bytes      bigint NOT NULL,
    chunks     integer NOT NULL
);
CREATE INDEX upload_parts_upload ON upload_parts (upload_id);

-- Tenancy: projects own every resource; API keys are stored as SHA-256 digests only.
CREATE TABLE projects (
    name       text COLLATE "C" PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id         text COLLATE "C" PRIMARY KEY,
    project    text COLLATE "C" NOT NULL REFERENCES projects(name),
    digest     bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Idempotency-Key: one row per (project, key). A row with status NULL is a claim whose request is
-- still running; once it finishes the row holds the response that every retry gets back.
CREATE TABLE idempotency_keys (
    project      text COLLATE "C" NOT NULL,
    key          text COLLATE "C" NOT NULL,
    request_hash bytea NOT NULL,          -- SHA-256 of method, route path without mount prefix, body
    status       smallint,                -- NULL while the first request runs
    content_type text,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),   -- also the claim's token (see service/api/idempotency.py)
    PRIMARY KEY (project, key)
);
-- The periodic sweep deletes rows older than a day by range scan, not by reading the table.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- Which process is executing which run, until when. A process renews its leases while it works;
-- a lease that lapses means its process died, and any process may take the run over.
CREATE TABLE run_leases (
    run_id      text COLLATE "C" PRIMARY KEY,
    thread_id   text COLLATE "C" NOT NULL,
    owner       text NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX run_leases_by_owner ON run_leases (owner);
