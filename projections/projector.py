"""The projector: turns freshly appended events into read-model rows, in the append transaction.

Runs of events of one type are written with one statement each, so a group commit of many
appends costs a handful of round trips, not one per event.
"""

from __future__ import annotations

from itertools import groupby
from typing import Awaitable, Callable

import asyncpg
import msgspec

from events.store import RecordedEvent
from events.types import MessageCreated
from projections.objects import assistant_from, file_from, message_from, thread_from

_enc = msgspec.json.Encoder()
Handler = Callable[[asyncpg.Connection, list[RecordedEvent]], Awaitable[None]]


def _json(obj) -> str:
    return _enc.encode(obj).decode()


def _changes(event, *drop: str) -> dict:
    """The fields an *Updated event carries (the ones that changed), to merge into the row."""
    return {k: v for k, v in msgspec.structs.asdict(event).items() if k not in drop and v is not msgspec.UNSET}


async def _agents_created(conn, evs):
    await conn.execute(
        "INSERT INTO agents (id, project, data) SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[])",
        [e.event.agent_id for e in evs], [e.event.project for e in evs],
        [_json(assistant_from(e.event)) for e in evs])


async def _agents_updated(conn, evs):
    rows = []
    for e in evs:
        changes = _changes(e.event, "agent_id")
        if "response_format" in changes and changes["response_format"] is None:
            changes["response_format"] = "auto"   # the API shows a cleared format as "auto"
        rows.append((e.event.agent_id, _json(changes)))
    await conn.executemany("UPDATE agents SET data = data || $2::jsonb WHERE id = $1", rows)


async def _agents_deleted(conn, evs):
    await conn.execute("DELETE FROM agents WHERE id = ANY($1::text[])", [e.event.agent_id for e in evs])


async def _threads_created(conn, evs):
    await conn.execute(
        "INSERT INTO threads (id, project, data) SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[])",
        [e.event.thread_id for e in evs], [e.event.project for e in evs],
        [_json(thread_from(e.event)) for e in evs])


async def _threads_updated(conn, evs):
    await conn.executemany("UPDATE threads SET data = data || $2::jsonb WHERE id = $1",
                           [(e.event.thread_id, _json(_changes(e.event, "thread_id"))) for e in evs])


async def _threads_deleted(conn, evs):
    ids = [e.event.thread_id for e in evs]
    await conn.execute("DELETE FROM messages WHERE thread_id = ANY($1::text[])", ids)
    await conn.execute("DELETE FROM threads WHERE id = ANY($1::text[])", ids)


async def _messages_created(conn, evs):
    evs_: list[MessageCreated] = [e.event for e in evs]
    # The project comes from the thread's row, written earlier in this or a previous transaction.
    await conn.execute(
        """INSERT INTO messages (id, thread_id, project, run_id, data)
           SELECT u.id, u.thread_id, t.project, u.run_id, u.data
           FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[]) AS u(id, thread_id, run_id, data)
           JOIN threads t ON t.id = u.thread_id""",
        [e.message_id for e in evs_], [e.thread_id for e in evs_], [e.run_id for e in evs_],
        [_json(message_from(e)) for e in evs_])


async def _messages_updated(conn, evs):
    await conn.executemany(
        "UPDATE messages SET data = data || $2::jsonb WHERE id = $1",
        [(e.event.message_id, _json({"metadata": e.event.metadata})) for e in evs])


async def _messages_deleted(conn, evs):
    await conn.execute("DELETE FROM messages WHERE id = ANY($1::text[])", [e.event.message_id for e in evs])


async def _files_uploaded(conn, evs):
    await conn.execute(
        """INSERT INTO files (id, project, purpose, data)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])""",
        [e.event.file_id for e in evs], [e.event.project for e in evs], [e.event.purpose for e in evs],
        [_json(file_from(e.event)) for e in evs])


async def _files_deleted(conn, evs):
    ids = [e.event.file_id for e in evs]
    await conn.execute("DELETE FROM files WHERE id = ANY($1::text[])", ids)
    # The bytes go with the file: nothing in the log refers to them.
    await conn.execute("DELETE FROM blob_chunks WHERE blob_id = ANY($1::text[])", ids)


HANDLERS: dict[str, Handler] = {
    "AgentCreated": _agents_created, "AgentUpdated": _agents_updated, "AgentDeleted": _agents_deleted,
    "ThreadCreated": _threads_created, "ThreadUpdated": _threads_updated, "ThreadDeleted": _threads_deleted,
    "MessageCreated": _messages_created, "MessageUpdated": _messages_updated,
    "MessageDeleted": _messages_deleted,
    "FileUploaded": _files_uploaded, "FileDeleted": _files_deleted,
}


async def project(conn: asyncpg.Connection, events: list[RecordedEvent]) -> None:
    """Apply events to the read models, in order."""
    for type_name, run in groupby(events, key=lambda e: e.type):
        handler = HANDLERS.get(type_name)
        if handler is not None:
            await handler(conn, list(run))
