"""The Postgres event store: append with optimistic concurrency, read a stream, read everything.

Appends from many actors are committed together (group commit): a few flusher tasks each take
whatever is waiting, write it with the read-model updates in one statement (one transaction, one
round trip), and answer every waiter only after COMMIT. UNIQUE(stream, version) in the database
is the last word on conflicts.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Sequence

import asyncpg
import msgspec
from opentelemetry import trace

from events import cipher
from events.types import EVENT_TYPES, Event, decode_event, encode_event

tracer = trace.get_tracer("threadline.events")


class VersionConflict(Exception):
    """Another writer appended to the stream first: reload, decide again."""

    def __init__(self, stream: str, expected_version: int):
        super().__init__(f"stream {stream} is past version {expected_version}")
        self.stream = stream
        self.expected_version = expected_version


class EventMetadata(msgspec.Struct, frozen=True, omit_defaults=True):
    request_id: str | None = None
    project: str | None = None
    api_key_id: str | None = None
    trace_id: str | None = None
    causation: str | None = None
    client_request_id: str | None = None    # the client's own names, kept apart from the server's
    client_trace_id: str | None = None


class RecordedEvent(msgspec.Struct, frozen=True):
    position: int
    stream: str
    version: int
    type: str
    event: Event
    metadata: EventMetadata
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Append:
    stream: str
    expected_version: int
    events: Sequence[Event]
    metadata: EventMetadata = EventMetadata()


class Checkpoint(msgspec.Struct, frozen=True):
    """Where a catch-up reader stands: the last (transaction id, position) it has seen."""
    xid: int = 0
    position: int = 0


@dataclass(frozen=True, slots=True)
class Projection:
    """What the append's own statement writes besides the events (read models, the deletion of
    file bytes), so they commit together in one round trip: `changes(events)` encodes it as one
    JSON document, which the SQL function named `function` applies; None when the events change
    nothing there, and the statement leaves the function out (text deltas touch no read model)."""
    function: str
    changes: Callable[[Sequence[Event], Sequence[int]], str | None]    # (events, their stream versions)


Projections = Sequence[Projection]


@dataclass(frozen=True, slots=True)
class Notify:
    """A NOTIFY sent by the append's statement (delivered only if it commits): wakes other
    processes' readers of these streams. `payload(streams)` names what was written."""
    channel: str
    payload: Callable[[Sequence[str]], str]


OnCommit = Callable[[list[RecordedEvent]], None]

_metadata_encoder = msgspec.json.Encoder()
_metadata_decoder = msgspec.json.Decoder(EventMetadata)
_COLUMNS = "position, stream, version, type, data::text, metadata::text, recorded_at"
_APPEND = "SELECT event_position, event_recorded_at FROM append_events($1, $2, $3, $4::json[], $5::jsonb[])"


@lru_cache(maxsize=64)
def _append_sql(functions: tuple[str, ...], notify: Notify | None) -> str:
    """append_events, plus the projections' functions and the NOTIFY in the same statement (one
    round trip)."""
    parts: list[tuple[str, str]] = []
    for i, function in enumerate(functions):
        parts.append((f"projected{i}", f"SELECT {function}(${6 + len(parts)}::json)"))
    if notify is not None:
        # The writer's transaction id goes last: catch-up readers know what they must get past.
        parts.append(("notified", f"SELECT pg_notify('{notify.channel}', ${6 + len(parts)} || '|' "
                                  "|| pg_current_xact_id()::text)"))
    if not parts:
        return _APPEND
    ctes = ", ".join(f"{name} AS MATERIALIZED ({sql})" for name, sql in parts)
    return f"WITH {ctes} {_APPEND}" + "".join(f" CROSS JOIN {name}" for name, _ in parts)


def _sealed(type_name: str, data: str) -> bool:
    return type_name in cipher.SECRET_PATHS and cipher.PREFIX in data


def _open(stream: str, type_name: str, data: str, keys: dict[str, bytes | None]) -> dict:
    doc = msgspec.json.decode(data)
    cipher.unseal(doc, type_name, keys.get(cipher.thread_of(stream) or ""), stream)
    return doc


async def _rows_to_events(db, keyring: cipher.KeyRing, rows: list[asyncpg.Record]) -> list[RecordedEvent]:
    """Decode rows, decrypting sealed content with its thread's key ("[erased]" once the key is gone)."""
    threads = {cipher.thread_of(r[1]) for r in rows if _sealed(r[3], r[4])}
    keys = await keyring.keys(db, {t for t in threads if t}) if threads else {}
    out = []
    for r in rows:
        if _sealed(r[3], r[4]):
            event = msgspec.convert(_open(r[1], r[3], r[4], keys), EVENT_TYPES[r[3]])
        else:
            event = decode_event(r[3], r[4])
        out.append(RecordedEvent(position=r[0], stream=r[1], version=r[2], type=r[3], event=event,
                                 metadata=_metadata_decoder.decode(r[5]), recorded_at=r[6]))
    return out


def _encode(stream: str, event: Event, keys: dict[str, bytes | None]) -> str:
    type_name = type(event).__name__
    key = keys.get(cipher.thread_of(stream) or "") if type_name in cipher.SECRET_PATHS else None
    if key is None:
        return encode_event(event)
    doc = msgspec.to_builtins(event)
    cipher.seal(doc, type_name, key, stream)
    return _metadata_encoder.encode(doc).decode()


async def write_appends(
    conn: asyncpg.Connection, appends: Sequence[Append], projections: Projections,
    notify: Notify | None = None, keyring: cipher.KeyRing | None = None,
) -> list[list[RecordedEvent]]:
    """Write the appends and their projections in one statement (in the caller's transaction, if any).
    With a keyring, thread content is sealed with the thread's key (made with the thread)."""
    keys: dict[str, bytes | None] = {}
    if keyring is not None:
        threads = {cipher.thread_of(a.stream) for a in appends} - {None}
        if threads:
            keys = await keyring.keys(conn, threads, {cipher.thread_of(a.stream) for a in appends
                                                      if a.expected_version == 0} - {None})
    streams, versions, types, data, metas, flat = [], [], [], [], [], []
    for a in appends:
        meta = _metadata_encoder.encode(a.metadata).decode()
        for i, ev in enumerate(a.events, start=a.expected_version + 1):
            streams.append(a.stream)
            versions.append(i)
            types.append(type(ev).__name__)
            data.append(_encode(a.stream, ev, keys))
            metas.append(meta)
            flat.append(ev)
    args = [streams, versions, types, data, metas]
    functions = []
    for projection in projections:
        changes = projection.changes(flat, versions)
        if changes is not None:
            functions.append(projection.function)
            args.append(changes)
    if notify is not None:
        args.append(notify.payload(streams))
    with tracer.start_as_current_span("events.append") as span:
        span.set_attribute("events.count", len(streams))
        rows = await conn.fetch(_append_sql(tuple(functions), notify), *args)
    out: list[list[RecordedEvent]] = []
    k = 0
    for a in appends:
        recorded = []
        for i, ev in enumerate(a.events, start=a.expected_version + 1):
            recorded.append(RecordedEvent(rows[k][0], a.stream, i, type(ev).__name__, ev, a.metadata, rows[k][1]))
            k += 1
        out.append(recorded)
    return out


@dataclass(slots=True)
class _Waiting:
    append: Append
    future: asyncio.Future


class EventStore:
    def __init__(self, pool: asyncpg.Pool, projections: Projections = (), *,
                 notify: Notify | None = None, on_commit: OnCommit | None = None,
                 flushers: int = 4, max_batch: int = 256):
        self.pool = pool
        self.projections = tuple(projections)
        self.notify = notify
        self.on_commit = on_commit
        # A store that writes read models is the service's: it seals content (bare stores are for tests).
        self.keyring = cipher.KeyRing() if self.projections else None
        self._max_batch = max_batch
        self._waiting: list[_Waiting] = []
        self._wakeup = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._flushers = [asyncio.create_task(self._flush_loop()) for _ in range(flushers)]

    async def close(self) -> None:
        for t in self._flushers:
            t.cancel()
        await asyncio.gather(*self._flushers, return_exceptions=True)

    # -- writing --------------------------------------------------------------------------------

    async def append(self, stream: str, expected_version: int, events: Sequence[Event],
                     metadata: EventMetadata = EventMetadata()) -> list[RecordedEvent]:
        """Append after `expected_version`; returns once committed. Raises VersionConflict."""
        waiting = _Waiting(Append(stream, expected_version, events, metadata), self._loop.create_future())
        # If our caller is cancelled the outcome is still set; mark it seen so nothing warns.
        waiting.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._waiting.append(waiting)
        self._wakeup.set()
        # If our caller gives up, the flusher still commits or fails the whole batch: never half.
        return await waiting.future

    async def _flush_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            if not self._waiting:
                self._wakeup.clear()
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[_Waiting]) -> None:
        try:
            async with self.pool.acquire() as conn:   # one statement: its own transaction
                results = await write_appends(conn, [w.append for w in batch], self.projections, self.notify,
                                              self.keyring)
        except asyncpg.UniqueViolationError:
            if len(batch) == 1:
                a = batch[0].append
                _settle(batch[0].future, exc=VersionConflict(a.stream, a.expected_version))
            else:
                # Someone in the batch lost a race; commit each alone so only the loser fails.
                await asyncio.gather(*(self._commit([w]) for w in batch))
            return
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear how it ended
            for w in batch:
                _settle(w.future, exc=exc if isinstance(exc, Exception) else ConnectionError("store stopped"))
            if not isinstance(exc, Exception):
                raise
            return
        for w, r in zip(batch, results):
            _settle(w.future, result=r)
        if self.on_commit is not None:
            self.on_commit([r for rs in results for r in rs])

    # -- reading --------------------------------------------------------------------------------

    async def read_stream(self, stream: str, after_version: int = 0,
                          limit: int = 1_000_000) -> list[RecordedEvent]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM read_stream($1, $2, $3)", stream, after_version, limit)
        return await _rows_to_events(self.pool, self._keys, rows)

    async def read_all(self, after: Checkpoint, limit: int = 1000) -> tuple[list[RecordedEvent], Checkpoint]:
        """Events committed after the checkpoint, never skipping a late committer."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS}, xid::text::bigint FROM read_all($1::text::xid8, $2, $3)",
            str(after.xid), after.position, limit)
        if not rows:
            return [], after
        return await _rows_to_events(self.pool, self._keys, rows), Checkpoint(rows[-1][7], rows[-1][0])

    @property
    def _keys(self) -> cipher.KeyRing:
        if self.keyring is None:
            self.keyring = cipher.KeyRing()
        return self.keyring

    async def reveal(self, stream: str, type_name: str, data: str) -> str:
        """An event's stored JSON with its content decrypted (audit listings)."""
        if not _sealed(type_name, data):
            return data
        keys = await self._keys.keys(self.pool, {cipher.thread_of(stream) or ""})
        return _metadata_encoder.encode(_open(stream, type_name, data, keys)).decode()

    # -- snapshots ------------------------------------------------------------------------------

    async def load_snapshot(self, stream: str, schema: int) -> tuple[int, bytes] | None:
        row = await self.pool.fetchrow(
            "SELECT version, state::text FROM snapshots WHERE stream = $1 AND schema = $2", stream, schema)
        return (row[0], row[1].encode()) if row else None

    async def save_snapshot(self, stream: str, version: int, schema: int, state: bytes) -> None:
        await self.pool.execute(
            """INSERT INTO snapshots (stream, version, schema, state) VALUES ($1, $2, $3, $4::json)
               ON CONFLICT (stream) DO UPDATE SET version = excluded.version, schema = excluded.schema,
                   state = excluded.state, taken_at = now()
               WHERE snapshots.version < excluded.version""",
            stream, version, schema, state.decode())


def _settle(fut: asyncio.Future, *, result: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
