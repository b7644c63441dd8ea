"""What a project has stored, read straight from the tables: equal footprints before and after a
request mean the request wrote nothing (no event, no read-model row, no webhook change, no upload or blob)."""

from __future__ import annotations

_QUERY = """
SELECT
  (SELECT count(*) FROM events WHERE metadata->>'project' = $1),
  (SELECT max(position) FROM events WHERE metadata->>'project' = $1),
  (SELECT md5(coalesce(string_agg(id || data::text, ',' ORDER BY id), '')) FROM agents WHERE project = $1),
  (SELECT md5(coalesce(string_agg(id || data::text, ',' ORDER BY id), '')) FROM threads WHERE project = $1),
  (SELECT md5(coalesce(string_agg(id || data::text, ',' ORDER BY id), '')) FROM messages WHERE project = $1),
  (SELECT md5(coalesce(string_agg(id || data::text, ',' ORDER BY id), '')) FROM files WHERE project = $1),
  (SELECT md5(coalesce(string_agg(id || data::text, ',' ORDER BY id), '')) FROM runs WHERE project = $1),
  (SELECT md5(coalesce(string_agg(id || data::text, ',' ORDER BY id), '')) FROM run_steps WHERE project = $1),
  (SELECT md5(coalesce(string_agg(concat_ws('|', id, url, event_types::text, description, enabled::text, secret,
                                            previous_secret), ',' ORDER BY id), ''))
     FROM webhooks WHERE project = $1),
  (SELECT md5(coalesce(string_agg(d.id || d.status || coalesce(d.payload, ''), ',' ORDER BY d.id), ''))
     FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE w.project = $1),
  (SELECT md5(coalesce(string_agg(concat_ws('|', id, status, expires_at, file_id), ',' ORDER BY id), ''))
     FROM uploads WHERE project = $1),
  (SELECT count(*) FROM upload_parts p JOIN uploads u ON u.id = p.upload_id WHERE u.project = $1),
  (SELECT count(*) FROM blob_chunks c WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.id = c.blob_id)),
  (SELECT count(*) FROM blob_chunks c JOIN files f ON f.id = c.blob_id WHERE f.project = $1)
"""
_NAMES = ("events", "last_position", "assistants", "threads", "messages", "files", "runs", "run_steps", "webhooks",
          "deliveries", "uploads", "upload_parts", "orphan_blob_chunks", "blob_chunks")


async def footprint(db, project: str) -> dict:
    row = await db.fetchrow(_QUERY, project)
    return dict(zip(_NAMES, row))
