"""The projector: a pure function from freshly appended events to read-model changes.

Every event type has an entry in CHANGES (None: it changes no read model), so a new type cannot be
forgotten (tests/test_projector.py). The changes travel as one JSON array in the append's own
statement, where `apply_read_models` writes them; events and read models commit together in a
single round trip.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import msgspec

from events.blobs import BLOB_DELETIONS
from events.store import Projection
from events.types import (
    AgentCreated, AgentDeleted, AgentUpdated, Event, FileDeleted, FileUploaded, MessageCompleted,
    MessageCreated, MessageDeleted, MessageIncomplete, MessageTextAppended, MessageUpdated, RunCancelled,
    RunCancelling, RunCompleted, RunCreated, RunExpired, RunFailed, RunIncomplete, RunRequeued,
    RunRequiredAction, RunStarted, RunStepCompleted, RunStepCreated, RunStepEnded, RunUpdated,
    ThreadCreated, ThreadDeleted, ThreadErased, ThreadUpdated, ToolCallArgumentsAppended, ToolCallsExecuted,
    ToolOutputsSubmitted,
)
from projections.changes import Change, Deleted, Merged
from projections.objects import assistant_from, file_from, message_from, run_from, step_from, thread_from
from projections.read_models.agents import AgentWritten
from projections.read_models.files import FileWritten
from projections.read_models.messages import MessageWritten
from projections.read_models.run_steps import StepWritten
from projections.read_models.runs import RunWritten
from projections.read_models.threads import ThreadWritten

# An event and its version in its stream (a run remembers where its events start) → its changes.
Project = Callable[[Any, int | None], Change | list[Change] | None]


def no_change(_event, _version) -> None:
    """For an event that changes no read model (streams show it; a row gets it later)."""
    return None


def _changed(event, *drop: str) -> dict:
    """The fields an *Updated event carries (the ones that changed), to merge into the row."""
    return {k: v for k, v in msgspec.structs.asdict(event).items() if k not in drop and v is not msgspec.UNSET}


def _agent_updated(e: AgentUpdated, _) -> Change:
    changed = _changed(e, "agent_id")
    if "response_format" in changed and changed["response_format"] is None:
        changed["response_format"] = "auto"   # the API shows a cleared format as "auto"
    return Merged("agents", e.agent_id, changed)


def _message_incomplete(e: MessageIncomplete, _) -> Change:
    patch: dict = {"status": "incomplete", "incomplete_at": e.incomplete_at, "incomplete_details": {"reason": e.reason}}
    if e.content is not None:
        patch["content"] = e.content
    return Merged("messages", e.message_id, patch)


def _run(run_id: str, **patch) -> Change:
    return Merged("runs", run_id, patch)


def _ended(run_id: str, status: str, **patch) -> Change:
    """A run that ends has no deadline and no pending action any more."""
    return _run(run_id, status=status, expires_at=None, required_action=None, **patch)


def _step(step_id: str, **patch) -> Change:
    return Merged("run_steps", step_id, patch)


def _calls(calls) -> dict:
    return {"type": "tool_calls", "tool_calls": calls}


def _outputs_submitted(e: ToolOutputsSubmitted, _) -> list[Change]:
    step = {"status": "completed", "completed_at": e.submitted_at, "step_details": _calls(e.tool_calls)}
    if e.usage is not None:     # older logs put the usage on the step when it was created
        step["usage"] = e.usage
    return [_step(e.step_id, **step), _run(e.run_id, status="queued", required_action=None)]


CHANGES: dict[type, Project] = {
    AgentCreated: lambda e, _: AgentWritten(e.agent_id, e.project, assistant_from(e)),
    AgentUpdated: _agent_updated,
    AgentDeleted: lambda e, _: Deleted("agents", e.agent_id),
    ThreadCreated: lambda e, _: ThreadWritten(e.thread_id, e.project, thread_from(e)),
    ThreadUpdated: lambda e, _: Merged("threads", e.thread_id, _changed(e, "thread_id")),
    ThreadDeleted: lambda e, _: Deleted("threads", e.thread_id),
    ThreadErased: lambda e, _: Deleted("threads", e.thread_id),     # nothing of it stays in the read models
    MessageCreated: lambda e, _: MessageWritten(e.message_id, e.thread_id, e.run_id, message_from(e)),
    MessageUpdated: lambda e, _: Merged("messages", e.message_id, {"metadata": e.metadata}),
    MessageDeleted: lambda e, _: Deleted("messages", e.message_id),
    MessageTextAppended: no_change,     # streams show the text; the row gets it on completion
    MessageCompleted: lambda e, _: Merged("messages", e.message_id, {
        "status": "completed", "completed_at": e.completed_at, "content": e.content}),
    MessageIncomplete: _message_incomplete,
    # Where the run starts in its thread's stream: a run's event stream replays from there.
    RunCreated: lambda e, version: RunWritten(e.run_id, e.thread_id, e.expires_at, version, run_from(e)),
    RunStarted: lambda e, _: _run(e.run_id, status="in_progress", started_at=e.started_at),
    RunRequeued: lambda e, _: _run(e.run_id, status="queued"),
    RunStepCreated: lambda e, _: StepWritten(e.step_id, e.run_id, step_from(e)),
    RunStepCompleted: lambda e, _: _step(e.step_id, status="completed", completed_at=e.completed_at, usage=e.usage),
    RunStepEnded: lambda e, _: _step(e.step_id, **{"status": e.status, f"{e.status}_at": e.at,
                                                   "last_error": e.last_error}),
    ToolCallArgumentsAppended: no_change,   # streams show the pieces; the step gets the calls whole
    RunRequiredAction: lambda e, _: [
        _step(e.step_id, step_details=_calls(e.step_calls or e.tool_calls)),
        _run(e.run_id, status="requires_action", required_action={
            "type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": e.tool_calls}})],
    ToolOutputsSubmitted: _outputs_submitted,
    ToolCallsExecuted: lambda e, _: _step(e.step_id, status="completed", completed_at=e.completed_at, usage=e.usage,
                                          step_details=_calls(e.tool_calls)),
    RunUpdated: lambda e, _: _run(e.run_id, metadata=e.metadata),
    RunCancelling: lambda e, _: _run(e.run_id, status="cancelling"),
    RunCompleted: lambda e, _: _ended(e.run_id, "completed", completed_at=e.completed_at, usage=e.usage),
    RunIncomplete: lambda e, _: _ended(e.run_id, "incomplete", incomplete_details={"reason": e.reason},
                                       usage=e.usage),
    RunFailed: lambda e, _: _ended(e.run_id, "failed", failed_at=e.failed_at, last_error=e.last_error, usage=e.usage),
    RunCancelled: lambda e, _: _ended(e.run_id, "cancelled", cancelled_at=e.cancelled_at, usage=e.usage),
    RunExpired: lambda e, _: _ended(e.run_id, "expired", usage=e.usage),
    FileUploaded: lambda e, _: FileWritten(e.file_id, e.project, e.purpose, file_from(e)),
    FileDeleted: lambda e, _: Deleted("files", e.file_id),   # its bytes go too: events/blobs.py
}


# Read by the rebuild, which skips decoding (and decrypting) these.
NO_CHANGE_TYPES = frozenset(t.__name__ for t, project in CHANGES.items() if project is no_change)


def read_model_changes(events: Sequence[Event], versions: Sequence[int] | None = None) -> list[Change]:
    """Every read-model change the events make, in event order."""
    changes: list[Change] = []
    for i, e in enumerate(events):
        change = CHANGES[type(e)](e, versions[i] if versions else None)
        if isinstance(change, list):
            changes.extend(change)
        elif change is not None:
            changes.append(change)
    return changes


_encoder = msgspec.json.Encoder()

def _read_model_changes(events: Sequence[Event], versions: Sequence[int]) -> str | None:
    changes = read_model_changes(events, versions)
    return _encoder.encode(changes).decode() if changes else None


READ_MODELS = Projection("apply_read_models", _read_model_changes)
# What the service's store writes with every append: the read models, and deleted files' bytes gone.
SERVICE_PROJECTIONS = (READ_MODELS, BLOB_DELETIONS)
