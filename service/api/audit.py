"""Reading a thread's history: its raw events, and the thread and messages as they were at a point."""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec
from aiohttp import web

from events import audit
from events.types import ThreadCreated
from projections import queries
from projections.memory import ThreadModels
from service.api.errors import ApiError, not_found
from service.api.http import ctx_of, event_version, json_ok, page_request, raw_ok, services

MAX_EVENTS_PAGE = 1000


class AuditEvent(msgspec.Struct):
    version: int
    position: int
    type: str
    recorded_at: str
    api_key_id: str | None
    request_id: str | None
    causation: str | None
    data: msgspec.Raw
    hash: str | None
    client_request_id: str | None = None     # what the client called its request, kept apart
    object: str = "thread.event"


class Erasure(msgspec.Struct):
    id: str
    erased: bool
    files_deleted: list[str]
    object: str = "thread.erased"


class EventList(msgspec.Struct):
    data: list[AuditEvent]
    first_id: str | None
    last_id: str | None
    has_more: bool
    object: str = "list"


async def list_events(request: web.Request) -> web.Response:
    """GET /threads/{thread_id}/events — the thread's log, in order, `after`/`limit`, by type or run."""
    thread_id = request.match_info["thread_id"]
    await _require_thread(request, thread_id)
    q = request.query
    after = event_version(q.get("after", "0"))
    limit = event_version(q.get("limit", "100"))
    if after is None:
        raise ApiError(400, "Invalid 'after': expected an event version (a number).", param="after")
    if limit is None or not 1 <= limit <= MAX_EVENTS_PAGE:
        raise ApiError(400, f"Invalid 'limit': expected 1 to {MAX_EVENTS_PAGE}.", param="limit")
    types = [t for raw in q.getall("type", []) for t in raw.split(",") if t] or None
    rows = await audit.stream_events(services(request).db, f"thread-{thread_id}", after=after,
                                     limit=limit + 1, types=types, run_id=q.get("run_id") or None)
    more = len(rows) > limit
    data = []
    store = services(request).store
    for position, version, type_, payload, metadata, recorded_at, hash_ in rows[:limit]:
        payload = await store.reveal(f"thread-{thread_id}", type_, payload)
        meta = msgspec.json.decode(metadata)
        data.append(AuditEvent(version=version, position=position, type=type_, recorded_at=recorded_at.isoformat(),
                               api_key_id=meta.get("api_key_id"), request_id=meta.get("request_id"),
                               causation=meta.get("causation"), data=msgspec.Raw(payload.encode()), hash=hash_,
                               client_request_id=meta.get("client_request_id")))
    return json_ok(EventList(data=data, first_id=str(data[0].version) if data else None,
                             last_id=str(data[-1].version) if data else None, has_more=more))


async def _require_thread(request: web.Request, thread_id: str) -> None:
    """The thread exists in the key's project (now, or — for audit — once did and was deleted)."""
    ctx = ctx_of(request)
    db = services(request).db
    if await queries.thread_exists(db, ctx.project, thread_id):
        return
    first = await services(request).store.read_stream(f"thread-{thread_id}", 0, 1)
    if not first or not isinstance(first[0].event, ThreadCreated) or first[0].event.project != ctx.project:
        raise not_found("thread", thread_id)


def _as_of_limit(raw: str) -> tuple[int | None, datetime | None]:
    if raw.isascii() and raw.isdigit() and len(raw) <= 12:     # '²' is a digit to isdigit(), not to int()
        return int(raw), None
    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"Invalid 'as_of': '{raw[:64]}' is neither an event version nor an RFC 3339 time.",
                       param="as_of") from None
    return None, at if at.tzinfo else at.replace(tzinfo=timezone.utc)


async def thread_as_of(request: web.Request, thread_id: str, raw: str) -> ThreadModels:
    """The thread and its messages rebuilt from the log up to a version or a time."""
    version, at = _as_of_limit(raw)
    await _require_thread(request, thread_id)
    models = ThreadModels()
    store = services(request).store
    after = 0
    while True:
        batch = await store.read_stream(f"thread-{thread_id}", after, 5000)
        for r in batch:
            if (version is not None and r.version > version) or (at is not None and r.recorded_at > at):
                return models
            models.apply(r.event, r.version)
        if len(batch) < 5000:
            return models
        after = batch[-1].version


async def get_thread_as_of(request: web.Request, thread_id: str, raw: str) -> web.Response:
    models = await thread_as_of(request, thread_id, raw)
    if models.thread is None:
        raise ApiError(404, f"No thread found with id '{thread_id}' as of {raw[:64]}.")
    return json_ok(models.thread)


async def list_messages_as_of(request: web.Request, thread_id: str, raw: str) -> web.Response:
    models = await thread_as_of(request, thread_id, raw)
    if models.thread is None:
        raise ApiError(404, f"No thread found with id '{thread_id}' as of {raw[:64]}.")
    page = page_request(request)
    run_id = request.query.get("run_id") or None
    items = [m for m in models.sorted_messages() if run_id is None or m.get("run_id") == run_id]
    if page.order == "desc":
        items.reverse()
    if page.after is not None:
        items = [m for m in items if (m["id"] < page.after if page.order == "desc" else m["id"] > page.after)]
    if page.before is not None:
        items = [m for m in items if (m["id"] > page.before if page.order == "desc" else m["id"] < page.before)]
        if page.after is None:       # the page next to the cursor, as the live list answers it
            more_before = len(items) > page.limit
            return _page(items[-page.limit:], more_before)
    return _page(items[: page.limit], len(items) > page.limit)


def _page(items: list[dict], more: bool) -> web.Response:
    return raw_ok(queries.Page([(m["id"], msgspec.json.encode(m).decode()) for m in items], more).to_json())


async def erase_thread(request: web.Request) -> web.Response:
    """POST /threads/{thread_id}/erase — destroy the thread's content everywhere (also once deleted)."""
    from service.erasure import erase_thread as erase

    ctx = ctx_of(request)
    tl = services(request)
    done = await erase(tl.actors, tl.db, request.match_info["thread_id"], ctx.project, meta=ctx.meta("erase_thread"))
    return json_ok(Erasure(id=done["id"], erased=True, files_deleted=done["files_deleted"]))
