-- Content keys, one per thread, apart from the log (events/cipher.py). Erasure sets key to NULL.
CREATE TABLE thread_keys (
    thread_id    text COLLATE "C" PRIMARY KEY,
    key          bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz
);
