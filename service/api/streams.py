"""Server-sent events: the SDKs' run streams, and resumable streams of a run or a whole thread.

Every stream reads the thread's log: first what was committed after the client's position
(`Last-Event-ID` or `?after=`, the id of a frame: see `stream_position`), then live events as they commit.
So a stream can start, stop and resume anywhere, in any process, and replay a run from last month.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from events.store import RecordedEvent
from projections import queries
from service.api.errors import ApiError
from service.api.http import REQUEST_ID, ctx_of, not_found_in_thread, require_thread, services, stream_position
from service.streams.frames import DONE, KEEPALIVE, TERMINAL, FrameView
from service.streams.hub import Subscription

PAGE = 500


def _position(request: web.Request) -> tuple[int, int] | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("after")
    if raw is None:
        return None
    position = stream_position(raw)
    if position is None:
        raise ApiError(400, f"Invalid event id '{raw[:32]}': expected an id from this stream's 'id:' lines.",
                       param="after")
    return position


async def _seed(request: web.Request, view: FrameView, events: list[RecordedEvent]) -> None:
    """Objects begun before the first event the view sees come from the read model."""
    want = view.missing(events)
    if not any(want.values()):
        return
    db = services(request).db
    for kind, table in (("runs", "runs"), ("steps", "run_steps"), ("messages", "messages")):
        if want[kind]:
            for data in await queries.objects_by_id(db, table, list(want[kind])):
                view.seed(kind, msgspec.json.decode(data))


def _ended(view: FrameView, until_requires_action: bool) -> bool:
    if view.run_status in TERMINAL:
        return True
    return until_requires_action and view.run_status == "requires_action"


async def open_sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no", "x-request-id": request[REQUEST_ID]})
    await response.prepare(request)
    return response


async def follow(request: web.Request, response: web.StreamResponse, thread_id: str, after: int,
                 view: FrameView, *, until_requires_action: bool = False, follow_forever: bool = False,
                 committed: list[RecordedEvent] = (), after_frame: int = 0) -> None:
    """Write the view's frames for the thread's events after `after` (less the first `after_frame`
    frames of the next event, which the client has), then live ones, until the run ends (or waits
    for tool outputs, for the SDK streams), then `done`. `committed`: events
    the caller has just committed, right after `after` — their frames go out at once, before the
    log is read for what came after them."""
    tl = services(request)
    stream = f"thread-{thread_id}"
    sub: Subscription = tl.hub.subscribe(stream)
    keepalive = tl.config.stream_keepalive_seconds
    partial = after + 1         # the event the client may have some frames of

    def frames_of(r: RecordedEvent) -> list:
        return view.frames(r, after_frame if r.version == partial else 0)

    try:
        read_log, quiet = True, 0
        if committed and committed[0].version == after + 1:
            await _seed(request, view, list(committed))
            out = []
            for r in committed:
                out += frames_of(r)
                after = r.version
            if out:
                await response.write(b"".join(f.encode() for f in out))
        while True:
            if read_log:
                events = await tl.store.read_stream(stream, after, PAGE)
                more = len(events) == PAGE
            else:
                events, more = [], False
            pushed, stale = sub.take()
            if sub.overflowed or sub.closing:
                return          # too far behind, or the service is stopping: the client resumes from its last id
            if not read_log:
                events = [r for r in pushed if r.version > after]
                if events and events[0].version != after + 1:      # a gap: the log has it
                    events = await tl.store.read_stream(stream, after, PAGE)
            if events:
                await _seed(request, view, events)
                out = []
                for r in events:
                    out += frames_of(r)
                    after = r.version
                    if not follow_forever and _ended(view, until_requires_action):
                        break
                if out:
                    await response.write(b"".join(f.encode() for f in out))
                if not follow_forever and _ended(view, until_requires_action):
                    await response.write(DONE.encode())
                    return
            if more or stale:
                read_log = True
                continue
            if read_log and not events and not follow_forever and view.run_id is not None:
                # Caught up with the log: a run that ended before the client's position has no more to say.
                status = await tl.db.fetchval("SELECT status FROM runs WHERE id = $1", view.run_id)
                if status in TERMINAL or status is None:
                    # It may have ended after our read of the log: read once more, then we are done.
                    if await tl.store.read_stream(stream, after, 1):
                        continue
                    await response.write(DONE.encode())
                    return
            woken = await sub.wait(keepalive)
            if not woken:
                await response.write(KEEPALIVE.encode())
                quiet += 1
            # Woken by our own process's commit: the pushed events are enough. On a wake-up from
            # another process read the log; and every few quiet keep-alives too, in case a NOTIFY
            # was lost (an idle stream must not cost a query per keep-alive).
            read_log = sub.stale or (not woken and quiet % 4 == 0)
    finally:
        tl.hub.unsubscribe(sub)


async def run_events(request: web.Request) -> web.StreamResponse:
    """GET /threads/{thread_id}/runs/{run_id}/stream — replay and follow one run (EventSource-ready)."""
    ctx = ctx_of(request)
    thread_id, run_id = request.match_info["thread_id"], request.match_info["run_id"]
    db = services(request).db
    row = await db.fetchrow("SELECT version, status FROM runs WHERE id = $1 AND thread_id = $2 AND project = $3",
                            run_id, thread_id, ctx.project)
    if row is None:
        raise await not_found_in_thread(request, thread_id, "run", run_id)
    after, after_frame = _position(request) or ((row[0] or 1) - 1, 0)
    response = await open_sse(request)
    await follow(request, response, thread_id, after, FrameView(run_id), after_frame=after_frame)
    return response


async def thread_events(request: web.Request) -> web.StreamResponse:
    """GET /threads/{thread_id}/stream — every event of the thread, live; stays open between runs."""
    thread_id = request.match_info["thread_id"]
    await require_thread(request, thread_id)
    after, after_frame = _position(request) or (0, 0)
    response = await open_sse(request)
    await follow(request, response, thread_id, after, FrameView(), follow_forever=True, after_frame=after_frame)
    return response


async def sdk_stream(request: web.Request, thread_id: str, run_id: str, after: int, *,
                     with_thread: bool = False, committed: list[RecordedEvent] = ()) -> web.StreamResponse:
    """The answer to `"stream": true`: the run's events from `after` until it ends or needs tool outputs."""
    response = await open_sse(request)
    view = FrameView(run_id, include_thread_created=with_thread, sdk=True)
    await follow(request, response, thread_id, after, view, until_requires_action=True, committed=committed)
    return response
