-- Idempotency-Key: one row per (project, key). A row with status NULL is a claim whose request is
-- still running; once it finishes the row holds the response that every retry gets back.
CREATE TABLE idempotency_keys (
    project      text COLLATE "C" NOT NULL,
    key          text COLLATE "C" NOT NULL,
    request_hash bytea NOT NULL,          -- SHA-256 of method, route path without mount prefix, body
    status       smallint,                -- NULL while the first request runs
    content_type text,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),   -- also the claim's token (see service/idempotency.py)
    PRIMARY KEY (project, key)
);

-- The periodic sweep deletes rows older than a day by range scan, not by reading the table.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
