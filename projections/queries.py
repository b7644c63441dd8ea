"""The queries the API reads. Every query is scoped by project; rows come back as stored JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Literal

import asyncpg


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int = 20
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    before: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[tuple[str, str]]   # (id, object JSON)
    has_more: bool

    def to_json(self) -> bytes:
        """The list envelope, spliced from stored JSON without decoding it."""
        if not self.items:
            return b'{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}'
        data = ",".join(d for _, d in self.items)
        more = "true" if self.has_more else "false"
        return (f'{{"object":"list","data":[{data}],"first_id":"{self.items[0][0]}",'
                f'"last_id":"{self.items[-1][0]}","has_more":{more}}}').encode()


async def _page(db: asyncpg.Pool, table: str, scope: str, args: list, page: PageRequest) -> Page:
    """Keyset pagination over (scope…, id). A `before` page is the one adjacent to the cursor."""
    where = [scope]
    backwards = page.before is not None and page.after is None
    desc = (page.order == "desc") != backwards
    if page.after is not None:
        args.append(page.after)
        where.append(f"id {'<' if page.order == 'desc' else '>'} ${len(args)}")
    if page.before is not None:
        args.append(page.before)
        where.append(f"id {'>' if page.order == 'desc' else '<'} ${len(args)}")
    args.append(page.limit + 1)
    rows = await db.fetch(
        f"SELECT id, data::text FROM {table} WHERE {' AND '.join(where)} "
        f"ORDER BY id {'DESC' if desc else 'ASC'} LIMIT ${len(args)}", *args)
    has_more = len(rows) > page.limit
    items = [(r[0], r[1]) for r in rows[: page.limit]]
    if backwards:
        items.reverse()
    return Page(items, has_more)


async def get_agent(db, project: str, agent_id: str) -> str | None:
    return await db.fetchval("SELECT data::text FROM agents WHERE id = $1 AND project = $2", agent_id, project)


async def list_agents(db, project: str, page: PageRequest) -> Page:
    return await _page(db, "agents", "project = $1", [project], page)


async def get_thread(db, project: str, thread_id: str) -> str | None:
    return await db.fetchval("SELECT data::text FROM threads WHERE id = $1 AND project = $2", thread_id, project)


async def thread_exists(db, project: str, thread_id: str) -> bool:
    return bool(await db.fetchval(
        "SELECT true FROM threads WHERE id = $1 AND project = $2", thread_id, project))


async def list_threads(db, project: str, page: PageRequest) -> Page:
    return await _page(db, "threads", "project = $1", [project], page)


async def get_message(db, project: str, thread_id: str, message_id: str) -> str | None:
    return await db.fetchval(
        "SELECT data::text FROM messages WHERE id = $1 AND thread_id = $2 AND project = $3",
        message_id, thread_id, project)


async def list_messages(db, project: str, thread_id: str, page: PageRequest, run_id: str | None = None) -> Page:
    if run_id is None:
        return await _page(db, "messages", "thread_id = $1 AND project = $2", [thread_id, project], page)
    return await _page(db, "messages", "thread_id = $1 AND project = $2 AND run_id = $3",
                       [thread_id, project, run_id], page)


async def get_file(db, project: str, file_id: str) -> str | None:
    return await db.fetchval("SELECT data::text FROM files WHERE id = $1 AND project = $2", file_id, project)


async def files_exist(db, project: str, file_ids: list[str]) -> set[str]:
    rows = await db.fetch("SELECT id FROM files WHERE id = ANY($1::text[]) AND project = $2", file_ids, project)
    return {r[0] for r in rows}


async def list_files(db, project: str, page: PageRequest, purpose: str | None = None) -> Page:
    if purpose is None:
        return await _page(db, "files", "project = $1", [project], page)
    return await _page(db, "files", "project = $1 AND purpose = $2", [project, purpose], page)


async def file_chunks(db: asyncpg.Pool, file_id: str, batch: int = 16) -> AsyncIterator[bytes]:
    """The file's bytes, a few chunks per query, so the whole file is never in memory."""
    seq = -1
    while True:
        rows = await db.fetch(
            "SELECT seq, data FROM blob_chunks WHERE blob_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            file_id, seq, batch)
        for r in rows:
            yield r[1]
        if len(rows) < batch:
            return
        seq = rows[-1][0]


async def get_run(db, project: str, thread_id: str, run_id: str) -> str | None:
    return await db.fetchval(
        "SELECT data::text FROM runs WHERE id = $1 AND thread_id = $2 AND project = $3", run_id, thread_id, project)


async def run_status(db, project: str, thread_id: str, run_id: str) -> str | None:
    return await db.fetchval(
        "SELECT status FROM runs WHERE id = $1 AND thread_id = $2 AND project = $3", run_id, thread_id, project)


async def list_runs(db, project: str, thread_id: str, page: PageRequest) -> Page:
    return await _page(db, "runs", "thread_id = $1 AND project = $2", [thread_id, project], page)


async def get_step(db, project: str, thread_id: str, run_id: str, step_id: str) -> str | None:
    return await db.fetchval(
        "SELECT data::text FROM run_steps WHERE id = $1 AND run_id = $2 AND thread_id = $3 AND project = $4",
        step_id, run_id, thread_id, project)


async def list_steps(db, project: str, thread_id: str, run_id: str, page: PageRequest) -> Page:
    return await _page(db, "run_steps", "run_id = $1 AND thread_id = $2 AND project = $3",
                       [run_id, thread_id, project], page)


async def recent_messages(db, thread_id: str, before: str | None, limit: int) -> list[str]:
    """A thread's messages newest first, from just before `before`: a run reads only the tail it needs."""
    if before is None:
        rows = await db.fetch("SELECT data::text FROM messages WHERE thread_id = $1 ORDER BY id DESC LIMIT $2",
                              thread_id, limit)
    else:
        rows = await db.fetch(
            "SELECT data::text FROM messages WHERE thread_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            thread_id, before, limit)
    return [r[0] for r in rows]


async def messages_of_thread(db, thread_id: str, message_ids: list[str]) -> list[str]:
    """Those of the messages that exist in the thread, in no particular order."""
    rows = await db.fetch("SELECT data::text FROM messages WHERE id = ANY($1::text[]) AND thread_id = $2",
                          message_ids, thread_id)
    return [r[0] for r in rows]


async def run_steps_of(db, run_id: str) -> list[str]:
    rows = await db.fetch("SELECT data::text FROM run_steps WHERE run_id = $1 ORDER BY id", run_id)
    return [r[0] for r in rows]


async def thread_project(db, thread_id: str) -> str | None:
    """The project a thread belongs to: what a tool the server runs for it may reach."""
    return await db.fetchval("SELECT project FROM threads WHERE id = $1", thread_id)


async def run_data(db, run_id: str) -> str | None:
    return await db.fetchval("SELECT data::text FROM runs WHERE id = $1", run_id)


async def objects_by_id(db, table: Literal["runs", "run_steps", "messages"], ids: list[str]) -> list[str]:
    """Stored objects by id, unscoped: for streams seeding objects of a thread already authorized."""
    rows = await db.fetch(f"SELECT data::text FROM {table} WHERE id = ANY($1::text[])", ids)
    return [r[0] for r in rows]


async def file_name_and_size(db, file_id: str) -> tuple[str, int] | None:
    row = await db.fetchrow("SELECT data->>'filename', (data->>'bytes')::bigint FROM files WHERE id = $1", file_id)
    return (row[0], row[1]) if row else None
