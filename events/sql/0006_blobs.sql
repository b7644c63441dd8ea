-- File bytes, in chunks, written in the same transaction as the FileUploaded event.
CREATE TABLE blob_chunks (
    blob_id text COLLATE "C" NOT NULL,
    seq     integer NOT NULL,
    data    bytea NOT NULL,
    PRIMARY KEY (blob_id, seq)
);
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
