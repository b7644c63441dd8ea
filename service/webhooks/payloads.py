"""What a subscription receives: the webhook events a log event makes, as signed-ready bodies.

A webhook event is a frame of the thread's event stream (service/streams/frames.py), so its
`data` is the run, step or message exactly as the API showed it right after that event. Deltas
are left out: token by token is for streams. The body is `{id, type, created_at, data}`; `id` is
derived from the event's log position, so every redelivery of an event carries the same id.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import msgspec

from events.store import RecordedEvent
from events.types import EVENT_TYPES as LOG_EVENT_TYPES
from events.types import ThreadCreated
from projections import queries
from service.streams.frames import FrameView

# Every frame an event type declares (events/types.py `frames`), deltas aside: a webhook consumer
# gets objects, not pieces of them.
EVENT_TYPES: tuple[str, ...] = tuple(dict.fromkeys(
    name for cls in LOG_EVENT_TYPES.values() for name in cls.frames if not name.endswith(".delta")))
_DELIVERABLE = frozenset(EVENT_TYPES)
_SEQ_SLOTS = 8          # webhook events one log event can make, at most (RunStepCreated makes 3)
_encoder = msgspec.json.Encoder()


def valid_pattern(pattern: str) -> bool:
    """An event type, `*` (everything), or a prefix ending in `.*` such as `thread.run.*`."""
    if pattern == "*" or pattern in _DELIVERABLE:
        return True
    return pattern.endswith(".*") and any(t.startswith(pattern[:-1]) for t in EVENT_TYPES)


def matches(patterns: Sequence[str], event_type: str) -> bool:
    for p in patterns:
        if p == event_type or p == "*" or (p.endswith(".*") and event_type.startswith(p[:-1])):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One webhook event, ready to send (and to store for redelivery)."""
    seq: int                # orders a thread's deliveries
    event_id: str           # `webhook-id`: stable across redeliveries
    type: str
    thread_id: str
    body: bytes


def outgoing(recorded: RecordedEvent, frames: list[tuple[str, object]]) -> list[Outgoing]:
    thread_id = recorded.stream.removeprefix("thread-")
    created_at = int(recorded.recorded_at.timestamp())
    out = []
    for i, (name, data) in enumerate(frames[:_SEQ_SLOTS]):
        event_id = f"evt_{recorded.position}_{i}"
        body = _encoder.encode({"id": event_id, "type": name, "created_at": created_at, "data": data})
        out.append(Outgoing(recorded.position * _SEQ_SLOTS + i, event_id, name, thread_id, body))
    return out


class PayloadBuilder:
    """Webhook events for log events, shared by every subscription in the process.

    Subscriptions read the same events at about the same time, so each event's webhook events are
    built once and cached by log position. Building folds a thread's events into a FrameView kept
    per thread; a view that missed events (or the first one) is seeded from the read model.
    """

    def __init__(self, db, *, max_threads: int = 2000, max_cached: int = 50_000, max_folded: int = 2000):
        self._db = db
        self._views: OrderedDict[str, tuple[FrameView, int]] = OrderedDict()   # stream -> (view, version)
        self._cache: OrderedDict[int, list[Outgoing]] = OrderedDict()
        self._projects: OrderedDict[str, str | None] = OrderedDict()
        self._max_threads, self._max_cached, self._max_folded = max_threads, max_cached, max_folded
        self._folded: dict[str, int] = {}

    async def build(self, events: list[RecordedEvent]) -> dict[int, list[Outgoing]]:
        """Webhook events by log position, for the thread events among `events`."""
        by_stream: dict[str, list[RecordedEvent]] = {}
        for r in events:
            if r.stream.startswith("thread-") and r.position not in self._cache:
                by_stream.setdefault(r.stream, []).append(r)
        for stream, rs in by_stream.items():
            await self._fold(stream, rs)
        return {r.position: self._cache.get(r.position, []) for r in events if r.stream.startswith("thread-")}

    async def _fold(self, stream: str, events: list[RecordedEvent]) -> None:
        held = self._views.get(stream)
        keep = True
        if held is not None and held[1] == events[0].version - 1 and self._folded.get(stream, 0) < self._max_folded:
            view = held[0]
        else:
            # A view ahead of these events belongs to a subscription further on: leave it be.
            keep = held is None or held[1] < events[0].version
            view = FrameView()
            await self._seed(view, events)
            self._folded[stream] = 0
        for r in events:
            frames = [(f.event, _full(view, f.event, f.data)) for f in view.frames(r) if f.event in _DELIVERABLE]
            self._remember(r.position, outgoing(r, frames))
        if keep:
            self._views[stream] = (view, events[-1].version)
            self._views.move_to_end(stream)
            self._folded[stream] = self._folded.get(stream, 0) + len(events)
            while len(self._views) > self._max_threads:
                gone, _ = self._views.popitem(last=False)
                self._folded.pop(gone, None)

    async def _seed(self, view: FrameView, events: list[RecordedEvent]) -> None:
        want = view.missing(events)
        for kind, table in (("runs", "runs"), ("steps", "run_steps"), ("messages", "messages")):
            if want[kind]:
                for data in await queries.objects_by_id(self._db, table, list(want[kind])):
                    view.seed(kind, msgspec.json.decode(data))

    def _remember(self, position: int, out: list[Outgoing]) -> None:
        self._cache[position] = out
        if len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)

    async def project_of(self, events: list[RecordedEvent]) -> dict[str, str | None]:
        """The project each thread stream belongs to (from its ThreadCreated, the stream's first event)."""
        unknown = set()
        for r in events:
            if isinstance(r.event, ThreadCreated):
                self._projects[r.stream] = r.event.project
            elif r.stream.startswith("thread-") and r.stream not in self._projects:
                unknown.add(r.stream)
        if unknown:
            rows = await self._db.fetch(
                "SELECT stream, data->>'project' FROM events WHERE stream = ANY($1::text[]) AND version = 1",
                list(unknown))
            for stream, project in rows:
                self._projects[stream] = project
        while len(self._projects) > self._max_threads * 4:
            self._projects.popitem(last=False)
        return {r.stream: self._projects.get(r.stream) for r in events}


def _full(view: FrameView, name: str, data):
    """Steps in full: the SDK streams show a tool_calls step empty first (openai's handler needs
    the calls as a delta), a webhook consumer gets no delta and needs them in the step."""
    if name.startswith("thread.run.step.") and isinstance(data, dict) and data.get("id") in view.steps:
        return view.steps[data["id"]]
    return data
