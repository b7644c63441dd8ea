"""`threadline replay` and `threadline audit verify`: a conversation's history, for people and machines."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import asyncpg
import msgspec

from events import audit
from events.store import EventStore, RecordedEvent
from events.types import (
    MessageCompleted, MessageCreated, MessageDeleted, MessageIncomplete, MessageTextAppended, MessageUpdated,
    RunCancelled, RunCancelling, RunCompleted, RunCreated, RunExpired, RunFailed, RunIncomplete, RunRequeued,
    RunRequiredAction, RunStarted, RunStepCompleted, RunStepCreated, RunStepEnded, RunUpdated, ThreadCreated,
    ThreadDeleted, ThreadUpdated, ToolCallArgumentsAppended, ToolOutputsSubmitted,
)

_enc = msgspec.json.Encoder()


def _text(content) -> str:
    parts = []
    for p in content or ():
        kind = getattr(p, "type", None) or type(p).__name__
        if hasattr(p, "text"):
            parts.append(p.text.value)
        else:
            parts.append(f"[{kind}]")
    return " ".join(parts)


def _short(s: str, n: int = 200) -> str:
    s = s.replace("\n", " ")
    return s if len(s) <= n else s[: n - 1] + "…"


def _usage(u) -> str:
    return f" (tokens: {u.get('prompt_tokens', 0)} in, {u.get('completion_tokens', 0)} out)" if u else ""


def describe(e) -> str:
    """One readable line per event."""
    match e:
        case ThreadCreated():
            return f"thread created{' metadata ' + _short(_enc.encode(e.metadata).decode()) if e.metadata else ''}"
        case ThreadUpdated():
            return "thread updated"
        case ThreadDeleted():
            return "thread deleted"
        case MessageCreated(role=role, status="in_progress"):
            return f"{role} message {e.message_id} started (run {e.run_id})"
        case MessageCreated(role=role):
            return f"{role} message {e.message_id}: {_short(_text(e.content))!r}"
        case MessageTextAppended():
            return f"  …text {e.message_id}: {_short(e.text, 80)!r}"
        case MessageCompleted():
            return f"message {e.message_id} completed: {_short(_text(e.content))!r}"
        case MessageIncomplete():
            return f"message {e.message_id} incomplete ({e.reason})"
        case MessageUpdated():
            return f"message {e.message_id} metadata updated"
        case MessageDeleted():
            return f"message {e.message_id} deleted"
        case RunCreated():
            return f"run {e.run_id} queued: assistant {e.assistant_id}, model {e.model}"
        case RunStarted():
            return f"run {e.run_id} in_progress"
        case RunRequeued():
            return f"run {e.run_id} queued again ({e.reason})"
        case RunStepCreated(type="tool_calls", tool_calls=[]):
            return f"run {e.run_id} step {e.step_id}: the model writes tool calls"
        case RunStepCreated(type="tool_calls"):
            calls = "; ".join(f"{c['function']['name']}({_short(c['function']['arguments'], 120)})" for c in e.tool_calls)
            return f"run {e.run_id} calls tools: {calls}{_usage(e.usage)}"
        case ToolCallArgumentsAppended():
            named = f" {e.name} ({e.call_id})" if e.call_id else ""
            return f"  …tool call {e.index}{named}: {_short(e.arguments, 80)!r}"
        case RunStepCreated():
            return f"run {e.run_id} step {e.step_id}: writes message {e.message_id}"
        case RunRequiredAction():
            calls = "; ".join(f"{c['function']['name']}({_short(c['function']['arguments'], 120)})" for c in e.tool_calls)
            return f"run {e.run_id} requires_action: {calls}{_usage(e.usage)}"
        case ToolOutputsSubmitted():
            outs = "; ".join(f"{c['function']['name']} → {_short(str(c['function'].get('output')), 120)}"
                             for c in e.tool_calls)
            return f"run {e.run_id} tool outputs: {outs}"
        case RunStepCompleted():
            return f"run {e.run_id} step {e.step_id} completed{_usage(e.usage)}"
        case RunStepEnded():
            return f"run {e.run_id} step {e.step_id} {e.status}"
        case RunUpdated():
            return f"run {e.run_id} metadata updated"
        case RunCancelling():
            return f"run {e.run_id} cancelling"
        case RunCompleted():
            return f"run {e.run_id} completed{_usage(e.usage)}"
        case RunIncomplete():
            return f"run {e.run_id} incomplete ({e.reason}){_usage(e.usage)}"
        case RunFailed():
            return f"run {e.run_id} failed: {e.last_error.get('code')}: {_short(e.last_error.get('message', ''))}"
        case RunCancelled():
            return f"run {e.run_id} cancelled"
        case RunExpired():
            return f"run {e.run_id} expired"
    return type(e).__name__


def line(r: RecordedEvent) -> str:
    who = r.metadata.api_key_id or r.metadata.causation or "-"
    req = f" {r.metadata.request_id}" if r.metadata.request_id else ""
    return f"{r.recorded_at.isoformat(timespec='milliseconds')}  v{r.version:<5} {who}{req}  {describe(r.event)}"


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
