-- Files uploaded with `expires_after` carry `expires_at`; the sweeper finds the expired ones here.
CREATE INDEX files_expiry ON files (((data->>'expires_at')::bigint)) WHERE data->>'expires_at' IS NOT NULL;
