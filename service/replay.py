"""`threadline replay` and `threadline audit verify`: a conversation's history, for people and machines."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import asyncpg
import msgspec

from events import audit
from events.store import EventStore, RecordedEvent
from events.types import MessageTextAppended, ToolCallArgumentsAppended

_enc = msgspec.json.Encoder()


def line(r: RecordedEvent) -> str:
    who = r.metadata.api_key_id or r.metadata.causation or "-"
    req = f" {r.metadata.request_id}" if r.metadata.request_id else ""
    return f"{r.recorded_at.isoformat(timespec='milliseconds')}  v{r.version:<5} {who}{req}  {r.event.describe()}"


def jsonl(r: RecordedEvent) -> bytes:
    return _enc.encode({"version": r.version, "position": r.position, "type": r.type,
                        "recorded_at": r.recorded_at.isoformat(), "metadata": r.metadata, "data": r.event})


def parse_as_of(raw: str | None) -> tuple[int | None, datetime | None]:
    if raw is None:
        return None, None
    if raw.isdigit():
        return int(raw), None
    at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return None, at if at.tzinfo else at.replace(tzinfo=timezone.utc)


async def replay(db: asyncpg.Pool, thread_id: str, fmt: str, as_of: str | None, out=sys.stdout) -> int:
    version, at = parse_as_of(as_of)
    store = EventStore(db, flushers=0)
    after, seen = 0, 0
    try:
        while True:
            batch = await store.read_stream(f"thread-{thread_id}", after, 2000)
            for r in batch:
                if (version is not None and r.version > version) or (at is not None and r.recorded_at > at):
                    return seen
                if fmt == "jsonl":
                    out.write(jsonl(r).decode() + "\n")
                elif not isinstance(r.event, (MessageTextAppended, ToolCallArgumentsAppended)) or fmt == "full":
                    out.write(line(r) + "\n")
                seen += 1
            if len(batch) < 2000:
                if seen == 0:
                    raise SystemExit(f"no thread {thread_id} in this database")
                return seen
            after = batch[-1].version
    finally:
        await store.close()


async def verify(db: asyncpg.Pool, thread_id: str | None, out=sys.stderr) -> bool:
    # A progress line rewritten in place suits a terminal; a log or a pipe gets no progress lines.
    terminal = out.isatty()

    def progress(v: audit.Verification) -> None:
        if terminal:
            rate = v.events / v.seconds if v.seconds else 0
            out.write(f"\rverified {v.events:,} events in {v.streams:,} streams ({rate:,.0f}/s)")
            out.flush()

    result = await audit.verify(db, f"thread-{thread_id}" if thread_id else None, progress)
    out.write(f"{chr(13) if terminal else ''}verified {result.events:,} events in {result.streams:,} streams in {result.seconds:.1f} s\n")
    if result.events == 0 and thread_id:
        out.write(f"no events for thread {thread_id}\n")
        return False
    for b in result.breaks:
        out.write(f"BROKEN: {b}\n")
    if result.ok:
        out.write("every hash chain verifies\n")
    return result.ok
