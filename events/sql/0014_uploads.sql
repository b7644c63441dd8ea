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
