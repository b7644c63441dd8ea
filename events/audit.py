"""Reading the log for audit: verify the hash chains, list a stream's raw events.

The chain (events/sql/functions/event_hash.sql) is recomputed here from the rows alone, independently of
the database function that wrote it: an edited row breaks its own link, a deleted row leaves a gap
in the versions, and a reordered or replaced row breaks the link of the event after it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable

import asyncpg

PAGE = 10_000


def event_hash(prev: str, stream: str, version: int, type_: str, data: str, metadata: str, micros: int) -> str:
    text = "|".join((prev, stream, str(version), type_, data, metadata, str(micros)))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Break:
    stream: str
    version: int
    position: int | None
    problem: str

    def __str__(self) -> str:
        where = f" (position {self.position})" if self.position is not None else ""
        return f"{self.stream} version {self.version}{where}: {self.problem}"


@dataclass
class Verification:
    events: int = 0
    streams: int = 0
    breaks: list[Break] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.breaks


async def verify(db: asyncpg.Pool, stream: str | None = None,
                 progress: Callable[[Verification], None] | None = None) -> Verification:
    """Recompute every chain (or one stream's); the first broken link of each broken stream."""
    result = Verification()
    started = time.monotonic()
    last_stream, last_version = "", 0
    prev_hash, expected, broken = "", 1, False
    while True:
        if stream is None:
            rows = await db.fetch(
                """SELECT position, stream, version, type, data::text, metadata::text,
                          (extract(epoch FROM recorded_at) * 1000000)::bigint, hash
                   FROM events WHERE (stream, version) > ($1, $2) ORDER BY stream, version LIMIT $3""",
                last_stream, last_version, PAGE)
        else:
            rows = await db.fetch(
                """SELECT position, stream, version, type, data::text, metadata::text,
                          (extract(epoch FROM recorded_at) * 1000000)::bigint, hash
                   FROM events WHERE stream = $1 AND version > $2 ORDER BY version LIMIT $3""",
                stream, last_version if last_stream == stream else 0, PAGE)
        if not rows:
            break
        for position, s, version, type_, data, metadata, micros, stored in rows:
            if s != last_stream:
                result.streams += 1
                prev_hash, expected, broken = "", 1, False
            last_stream, last_version = s, version
            result.events += 1
            if broken:
                continue
            if version != expected:
                result.breaks.append(Break(s, expected, None, f"missing (the next event present is version {version})"))
                broken = True
                continue
            computed = event_hash(prev_hash, s, version, type_, data, metadata, micros)
            if stored != computed:
                result.breaks.append(Break(s, version, position, "hash does not match the event's content "
                                           "and the chain before it (edited, replaced or reordered)"))
                broken = True
                continue
            prev_hash, expected = stored, version + 1
        if progress is not None:
            result.seconds = time.monotonic() - started
            progress(result)
    result.seconds = time.monotonic() - started
    return result


async def stream_events(db: asyncpg.Pool, stream: str, *, after: int, limit: int, types: list[str] | None = None,
                        run_id: str | None = None) -> list[asyncpg.Record]:
    """Raw events of one stream in version order, optionally of some types or about one run."""
    where, args = ["stream = $1", "version > $2"], [stream, after]
    if types:
        args.append(types)
        where.append(f"type = ANY(${len(args)}::text[])")
    if run_id:
        args.append(run_id)
        # The run's own events, and those of the messages it wrote.
        where.append(f"""(data->>'run_id' = ${len(args)} OR data->>'message_id' IN (
            SELECT e.data->>'message_id' FROM events e WHERE e.stream = $1 AND e.type = 'MessageCreated'
              AND e.data->>'run_id' = ${len(args)}))""")
    args.append(limit)
    return await db.fetch(
        f"""SELECT position, version, type, data::text, metadata::text, recorded_at, hash FROM events
            WHERE {' AND '.join(where)} ORDER BY version LIMIT ${len(args)}""", *args)
