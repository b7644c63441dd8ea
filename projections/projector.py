"""The projector: a pure function from freshly appended events to read-model changes.

The changes travel as one JSON array in the append's own statement, where `apply_read_models`
writes them; events and read models commit together in a single round trip.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import msgspec

from events.store import Projection
from events.types import (
    AgentCreated, AgentDeleted, AgentUpdated, Event, FileDeleted, FileUploaded, MessageCompleted,
    MessageCreated, MessageDeleted, MessageIncomplete, MessageTextAppended, MessageUpdated, RunCancelled,
    RunCancelling, RunCompleted, RunCreated, RunExpired, RunFailed, RunIncomplete, RunRequeued,
    RunRequiredAction, RunStarted, RunStepCompleted, RunStepCreated, RunStepEnded, RunUpdated,
    ThreadCreated, ThreadDeleted, ThreadErased, ThreadUpdated, ToolCallArgumentsAppended, ToolCallsExecuted,
    ToolOutputsSubmitted,
)
from projections.objects import assistant_from, file_from, message_from, run_from, step_from, thread_from

Change = tuple[Any, ...]   # (kind, id, ...): one row written, merged or deleted (None: no row changes)


def _changed(event, *drop: str) -> dict:
    """The fields an *Updated event carries (the ones that changed), to merge into the row."""
    return {k: v for k, v in msgspec.structs.asdict(event).items() if k not in drop and v is not msgspec.UNSET}


def _agent_updated(e: AgentUpdated) -> Change:
    changed = _changed(e, "agent_id")
    if "response_format" in changed and changed["response_format"] is None:
        changed["response_format"] = "auto"   # the API shows a cleared format as "auto"
    return ("agent.merge", e.agent_id, changed)


def _message_incomplete(e: MessageIncomplete) -> Change:
    patch: dict = {"status": "incomplete", "incomplete_at": e.incomplete_at, "incomplete_details": {"reason": e.reason}}
    if e.content is not None:
        patch["content"] = e.content
    return ("message.merge", e.message_id, patch)


def _run(run_id: str, **patch) -> Change:
    return ("run.merge", run_id, patch)


def _ended(run_id: str, status: str, **patch) -> Change:
    """A run that ends has no deadline and no pending action any more."""
    return _run(run_id, status=status, expires_at=None, required_action=None, **patch)


def _step_ended(e: RunStepEnded) -> Change:
    return ("step.merge", e.step_id, {"status": e.status, f"{e.status}_at": e.at, "last_error": e.last_error})


CHANGES: dict[type, Callable[[Any], Change | list[Change] | None]] = {
    AgentCreated: lambda e: ("agent", e.agent_id, e.project, assistant_from(e)),
    AgentUpdated: _agent_updated,
    AgentDeleted: lambda e: ("agent.delete", e.agent_id),
    ThreadCreated: lambda e: ("thread", e.thread_id, e.project, thread_from(e)),
    ThreadUpdated: lambda e: ("thread.merge", e.thread_id, _changed(e, "thread_id")),
    ThreadDeleted: lambda e: ("thread.delete", e.thread_id),
    ThreadErased: lambda e: ("thread.delete", e.thread_id),     # nothing of it stays in the read models
    MessageCreated: lambda e: ("message", e.message_id, e.thread_id, e.run_id, message_from(e)),
    MessageUpdated: lambda e: ("message.merge", e.message_id, {"metadata": e.metadata}),
    MessageDeleted: lambda e: ("message.delete", e.message_id),
    MessageTextAppended: lambda e: None,   # streams show the text; the row gets it on completion
    MessageCompleted: lambda e: ("message.merge", e.message_id,
                                 {"status": "completed", "completed_at": e.completed_at, "content": e.content}),
    MessageIncomplete: _message_incomplete,
    RunCreated: lambda e: ("run", e.run_id, e.thread_id, e.expires_at, run_from(e), None),
    RunStarted: lambda e: _run(e.run_id, status="in_progress", started_at=e.started_at),
    RunRequeued: lambda e: _run(e.run_id, status="queued"),
    RunStepCreated: lambda e: ("step", e.step_id, e.run_id, step_from(e)),
    RunStepCompleted: lambda e: ("step.merge", e.step_id,
                                 {"status": "completed", "completed_at": e.completed_at, "usage": e.usage}),
    RunStepEnded: _step_ended,
    ToolCallArgumentsAppended: lambda e: None,   # streams show the pieces; the step gets the calls whole
    RunRequiredAction: lambda e: [
        ("step.merge", e.step_id, {"step_details": {"type": "tool_calls", "tool_calls": e.step_calls or e.tool_calls}}),
        _run(e.run_id, status="requires_action", required_action={
            "type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": e.tool_calls}})],
    ToolOutputsSubmitted: lambda e: None,  # two rows change: see _outputs_submitted
    ToolCallsExecuted: lambda e: ("step.merge", e.step_id, {
        "status": "completed", "completed_at": e.completed_at, "usage": e.usage,
        "step_details": {"type": "tool_calls", "tool_calls": e.tool_calls}}),
    RunUpdated: lambda e: _run(e.run_id, metadata=e.metadata),
    RunCancelling: lambda e: _run(e.run_id, status="cancelling"),
    RunCompleted: lambda e: _ended(e.run_id, "completed", completed_at=e.completed_at, usage=e.usage),
    RunIncomplete: lambda e: _ended(e.run_id, "incomplete", incomplete_details={"reason": e.reason}, usage=e.usage),
    RunFailed: lambda e: _ended(e.run_id, "failed", failed_at=e.failed_at, last_error=e.last_error, usage=e.usage),
    RunCancelled: lambda e: _ended(e.run_id, "cancelled", cancelled_at=e.cancelled_at, usage=e.usage),
    RunExpired: lambda e: _ended(e.run_id, "expired", usage=e.usage),
    FileUploaded: lambda e: ("file", e.file_id, e.project, e.purpose, file_from(e)),
    FileDeleted: lambda e: ("file.delete", e.file_id),
}


def _outputs_submitted(e: ToolOutputsSubmitted) -> list[Change]:
    step = {"status": "completed", "completed_at": e.submitted_at,
            "step_details": {"type": "tool_calls", "tool_calls": e.tool_calls}}
    if e.usage is not None:     # older logs put the usage on the step when it was created
        step["usage"] = e.usage
    return [("step.merge", e.step_id, step), _run(e.run_id, status="queued", required_action=None)]


def read_model_changes(events: Sequence[Event], versions: Sequence[int] | None = None) -> list[Change]:
    """Every read-model change the events make, in event order."""
    changes: list[Change] = []
    for i, e in enumerate(events):
        if isinstance(e, ToolOutputsSubmitted):
            changes.extend(_outputs_submitted(e))
            continue
        if isinstance(e, RunCreated):
            # Where the run starts in its thread's stream: a run's event stream replays from there.
            changes.append(("run", e.run_id, e.thread_id, e.expires_at, run_from(e), versions[i] if versions else None))
            continue
        change = CHANGES[type(e)](e)
        if isinstance(change, list):
            changes.extend(change)
        elif change is not None:
            changes.append(change)
    return changes


_encoder = msgspec.json.Encoder()

READ_MODELS = Projection("apply_read_models",
                         lambda events, versions: _encoder.encode(read_model_changes(events, versions)).decode())
