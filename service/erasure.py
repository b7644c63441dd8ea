"""Erasure and retention: making a thread's content unrecoverable, on request or when it ages out.

Erasing a thread, in an order that can be re-run from any step after a crash:
1. `ThreadErased` is appended to the thread's log (the request is itself a recorded fact) and the
   thread's read-model rows go with it, in the same statement.
2. Its content key is destroyed (events/cipher.py): every encrypted field in the log now reads
   "[erased]", in this database and in every backup of it; the hash chain still verifies.
3. What was never in the log as ciphertext is deleted: the thread's snapshot, the bytes of the
   files its messages named, stored idempotent replays that quote it.
4. VACUUM removes the dead row versions those deletes left in the tables.
What remains outside our reach is said in the README: old WAL segments until they are recycled,
and backups of the read-model tables taken before the erasure (the log's copies are ciphertext).
"""

from __future__ import annotations

import asyncio
import time

import structlog

from events import cipher
from events.store import EventMetadata
from projections import read_models
from service.actors import ActorRegistry, execute
from service.domain import file as file_domain
from service.domain import thread as thread_domain
from service.ids import now
from service.webhooks import store as webhook_store

log = structlog.get_logger("threadline.erasure")

# Where an erased thread's content was: its rows' dead versions go with VACUUM.
_VACUUMED = ("thread_keys", "snapshots", *read_models.of_thread(), read_models.files.MODEL.table, "blob_chunks",
             "idempotency_keys", "webhook_deliveries")


async def erase_thread(actors: ActorRegistry, db, thread_id: str, project: str, *,
                       reason: str = "erasure request", meta: EventMetadata | None = None) -> dict:
    """Erase one thread; a summary of what was done. NotFound if the project has no such thread."""
    meta = meta or EventMetadata(project=project, causation="erasure")
    file_ids = await _files_named(db, thread_id)
    await actors.ask(thread_id, thread_domain.EraseThread(project, now(), reason), meta)
    destroyed = await cipher.destroy(db, thread_id)
    if actors.store.keyring is not None:
        actors.store.keyring.forget(thread_id)
    await db.execute("DELETE FROM snapshots WHERE stream = $1", f"thread-{thread_id}")
    deleted_files = []
    for file_id in file_ids:
        try:
            await execute(actors.store, file_domain.DECIDER, file_id, file_domain.DeleteFile(project), meta)
            deleted_files.append(file_id)
        except Exception:  # noqa: BLE001 - already deleted, or another project's: nothing of ours to erase
            pass
    await db.execute("DELETE FROM idempotency_keys WHERE project = $1 AND position($2::bytea in body) > 0",
                     project, thread_id.encode())
    await webhook_store.erase_thread(db, thread_id)
    for table in _VACUUMED:
        await db.execute(f"VACUUM {table}")
    log.info("thread_erased", thread_id=thread_id, reason=reason, key_destroyed=destroyed, files=len(deleted_files))
    return {"id": thread_id, "object": "thread.erased", "erased": True, "files_deleted": deleted_files}


async def erase_from_cli(db, thread_id: str) -> str:
    """`threadline erase`: the operator's own command, for any project's thread."""
    from events.store import EventStore
    from projections.projector import SERVICE_PROJECTIONS

    project = await db.fetchval("SELECT data->>'project' FROM events WHERE stream = $1 AND version = 1",
                                f"thread-{thread_id}")
    if project is None:
        raise SystemExit(f"no thread {thread_id} in this database")
    store = EventStore(db, SERVICE_PROJECTIONS)
    actors = ActorRegistry(store, db)
    try:
        done = await erase_thread(actors, db, thread_id, project,
                                  meta=EventMetadata(project=project, causation="threadline erase"))
    finally:
        await actors.close()
        await store.close()
    return f"erased thread {thread_id} (project {project}); files deleted: {len(done['files_deleted'])}"


async def _files_named(db, thread_id: str) -> list[str]:
    """Files the thread's messages attached or showed (from the log: it outlives the read model)."""
    rows = await db.fetch(
        """SELECT DISTINCT f FROM (
               SELECT json_array_elements(data->'attachments')->>'file_id' AS f FROM events
               WHERE stream = $1 AND type = 'MessageCreated'
               UNION ALL
               SELECT json_array_elements(data->'content')->'image_file'->>'file_id' FROM events
               WHERE stream = $1 AND type = 'MessageCreated') named WHERE f IS NOT NULL""",
        f"thread-{thread_id}")
    return [r[0] for r in rows]


async def idle_threads(db, older_than_days: float, limit: int = 100) -> list[tuple[str, str]]:
    """Threads (id, project) whose last event is older than the retention period, not yet erased."""
    rows = await db.fetch(
        """SELECT t.id, t.project FROM threads t
           WHERE (SELECT e.recorded_at FROM events e WHERE e.stream = 'thread-' || t.id
                  ORDER BY e.version DESC LIMIT 1) < now() - make_interval(secs => $1)
           LIMIT $2""", older_than_days * 86400, limit)
    return [(r[0], r[1]) for r in rows]


async def retention_loop(actors: ActorRegistry, db, days: float, every: float) -> None:
    """Erase threads idle for longer than `days`, checked every `every` seconds."""
    while True:
        await asyncio.sleep(every)
        try:
            started = time.monotonic()
            for thread_id, project in await idle_threads(db, days):
                await erase_thread(actors, db, thread_id, project, reason=f"retention: idle for more than {days:g} days",
                                   meta=EventMetadata(project=project, causation="retention"))
            log.debug("retention_sweep", seconds=round(time.monotonic() - started, 3))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - try again at the next sweep
            log.warning("retention_sweep_failed", exc_info=True)
