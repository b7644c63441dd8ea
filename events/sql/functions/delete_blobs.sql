-- delete_blobs: the bytes of files deleted by the events being appended (events/blobs.py), in the
-- append's own statement (only an append that deletes files calls it).
CREATE OR REPLACE FUNCTION delete_blobs(_blob_ids json) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM blob_chunks WHERE blob_id IN (SELECT json_array_elements_text(_blob_ids));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
