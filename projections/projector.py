"""The projector: a pure function from freshly appended events to read-model changes.

The changes travel as one JSON array in the append's own statement, where `apply_read_models`
writes them; events and read models commit together in a single round trip.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import msgspec

from events.store import Projection
from events.types import (
    AgentCreated, AgentDeleted, AgentUpdated, Event, FileDeleted, FileUploaded, MessageCreated,
    MessageDeleted, MessageUpdated, ThreadCreated, ThreadDeleted, ThreadUpdated,
)
from projections.objects import assistant_from, file_from, message_from, thread_from

Change = tuple[Any, ...]   # (kind, id, ...): one row written, merged or deleted


def _changed(event, *drop: str) -> dict:
    """The fields an *Updated event carries (the ones that changed), to merge into the row."""
    return {k: v for k, v in msgspec.structs.asdict(event).items() if k not in drop and v is not msgspec.UNSET}


def _agent_updated(e: AgentUpdated) -> Change:
    changed = _changed(e, "agent_id")
    if "response_format" in changed and changed["response_format"] is None:
        changed["response_format"] = "auto"   # the API shows a cleared format as "auto"
    return ("agent.merge", e.agent_id, changed)


CHANGES: dict[type, Callable[[Any], Change]] = {
    AgentCreated: lambda e: ("agent", e.agent_id, e.project, assistant_from(e)),
    AgentUpdated: _agent_updated,
    AgentDeleted: lambda e: ("agent.delete", e.agent_id),
    ThreadCreated: lambda e: ("thread", e.thread_id, e.project, thread_from(e)),
    ThreadUpdated: lambda e: ("thread.merge", e.thread_id, _changed(e, "thread_id")),
    ThreadDeleted: lambda e: ("thread.delete", e.thread_id),
    MessageCreated: lambda e: ("message", e.message_id, e.thread_id, e.run_id, message_from(e)),
    MessageUpdated: lambda e: ("message.merge", e.message_id, {"metadata": e.metadata}),
    MessageDeleted: lambda e: ("message.delete", e.message_id),
    FileUploaded: lambda e: ("file", e.file_id, e.project, e.purpose, file_from(e)),
    FileDeleted: lambda e: ("file.delete", e.file_id),
}


def read_model_changes(events: Sequence[Event]) -> list[Change]:
    """Every read-model change the events make, in event order."""
    return [CHANGES[type(e)](e) for e in events if type(e) in CHANGES]


_encoder = msgspec.json.Encoder()

READ_MODELS = Projection("apply_read_models", lambda events: _encoder.encode(read_model_changes(events)).decode())
