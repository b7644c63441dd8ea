"""Runs: the lifecycle of §6.1, decided inside the thread that owns them.

A run lives in its thread's stream, so the thread's actor orders every transition and "one active
run per thread" is a plain check on the state. The state keeps only the active run (what the next
decision needs); facts about older runs (does it exist, how did it end) come from the read model,
looked up by the shell and handed over in the command, as for messages.

Commands from clients (create, update, cancel, submit outputs) are refused with the API's errors.
Commands from the run engine (start, text, tool calls, finish) that no longer apply — the run was
cancelled, expired or deleted meanwhile — decide nothing, and the engine stops.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import msgspec

from events.types import (
    JSON, ContentPart, Event, MessageCompleted, MessageCreated, MessageDeleted, MessageIncomplete,
    MessageTextAppended, RunCancelled, RunCancelling, RunCompleted, RunCreated, RunExpired, RunFailed,
    RunIncomplete, RunRequeued, RunRequiredAction, RunStarted, RunStepCompleted, RunStepCreated,
    RunSettings, RunStepEnded, RunUpdated, ToolCall, ToolCallArgumentsAppended, ToolCallsExecuted,
    ToolOutputsSubmitted,
)
from service.domain.errors import InvalidRequest, NotFound
from service.domain.facts import Facts, RunStatus
from service.domain.run_commands import (  # noqa: F401 - the commands are used as runs.<Command>
    CreateRun, UpdateRun, CancelRun, SubmitToolOutputs, StartRun, OpenMessage, AppendText, CloseMessage,
    OpenToolCalls, AppendToolCallArguments, RequestToolCalls, FinishRun, ExpireRun, RequeueRun, CLIENT_COMMANDS,
    ENGINE_COMMANDS,
)

ACTIVE = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
MAX_REQUEUES = 3   # a run whose executing process keeps dying fails rather than loop forever


class ActiveRun(msgspec.Struct):
    run_id: str
    status: Literal["queued", "in_progress", "requires_action", "cancelling"]
    expires_at: int
    requeues: int = 0
    step_id: str | None = None          # the step being worked on
    message_id: str | None = None       # the reply being written
    tool_calls: list[ToolCall] = []     # calls waiting for outputs (requires_action)
    step_usage: JSON | None = None      # usage of the model call that asked for them
    step_calls: list[ToolCall] = []     # every call of that step, when the server ran some of them


def _given(requested: Mapping[str, Any], name: str, otherwise: Any) -> Any:
    value = requested.get(name)
    return value if value is not None else otherwise


def run_settings(assistant: JSON, requested: Mapping[str, Any], *, truncation: JSON,
                 additional_instructions: str | None = None) -> RunSettings:
    """A new run's effective settings: what the request gives (None: not given), else the
    assistant's, else the API's defaults; additional instructions are appended to the instructions."""
    instructions = _given(requested, "instructions", assistant.get("instructions") or "")
    if additional_instructions:
        instructions = f"{instructions}\n\n{additional_instructions}" if instructions else additional_instructions
    return RunSettings(
        assistant_id=requested["assistant_id"], model=requested.get("model") or assistant["model"],
        instructions=instructions,
        tools=_given(requested, "tools", assistant.get("tools") or []),
        tool_resources=_given(requested, "tool_resources", assistant.get("tool_resources") or {}),
        metadata=requested.get("metadata") or {},
        temperature=_given(requested, "temperature", assistant.get("temperature")),
        top_p=_given(requested, "top_p", assistant.get("top_p")),
        max_prompt_tokens=requested.get("max_prompt_tokens"),
        max_completion_tokens=requested.get("max_completion_tokens"),
        truncation_strategy=truncation,
        response_format=_given(requested, "response_format", assistant.get("response_format") or "auto"),
        tool_choice=_given(requested, "tool_choice", "auto"),
        parallel_tool_calls=_given(requested, "parallel_tool_calls", True),
        reasoning_effort=_given(requested, "reasoning_effort", assistant.get("reasoning_effort")),
    )


def thread_is_free(thread_id: str, active: ActiveRun | None, *, adding: Literal["messages", "run"]) -> None:
    if active is None:
        return
    if adding == "messages":
        raise InvalidRequest(f"Can't add messages to {thread_id} while a run {active.run_id} is active.")
    raise InvalidRequest(f"Thread {thread_id} already has an active run {active.run_id}.")


def _ending(active: ActiveRun, status: Literal["failed", "cancelled", "expired"], at: int,
            last_error: JSON | None = None, content: list[ContentPart] | None = None) -> list[Event]:
    """The open step and reply end with the run."""
    events: list[Event] = []
    if active.message_id is not None:
        reason = {"failed": "run_failed", "cancelled": "run_cancelled", "expired": "run_expired"}[status]
        events.append(MessageIncomplete(message_id=active.message_id, incomplete_at=at, reason=reason, content=content))
    if active.step_id is not None:
        events.append(RunStepEnded(step_id=active.step_id, run_id=active.run_id, at=at, status=status,
                                   last_error=last_error))
    return events


def _cancelled(active: ActiveRun, at: int, usage: JSON | None = None, content=None) -> list[Event]:
    return [*_ending(active, "cancelled", at, content=content),
            RunCancelled(run_id=active.run_id, cancelled_at=at, usage=usage)]


def _failed(active: ActiveRun, at: int, last_error: JSON, usage: JSON | None = None, content=None) -> list[Event]:
    return [*_ending(active, "failed", at, last_error=last_error, content=content),
            RunFailed(run_id=active.run_id, failed_at=at, last_error=last_error, usage=usage)]


def _require_known(run_id: str, active: ActiveRun | None, run_status: str | None) -> ActiveRun | None:
    """The active run if it is this one; otherwise the run must at least exist."""
    if active is not None and active.run_id == run_id:
        return active
    if run_status is None:
        raise NotFound("run", run_id)
    return None


def decide_client(thread_id: str, active: ActiveRun | None, cmd: Any, facts: Facts) -> list[Event]:
    match cmd:
        case CreateRun(run_id=run_id, at=at, expires_at=expires_at, settings=settings, messages=messages):
            thread_is_free(thread_id, active, adding="run")
            run = RunCreated(run_id=run_id, thread_id=thread_id, created_at=at, expires_at=expires_at,
                             **msgspec.structs.asdict(settings))
            return [*(m.created(thread_id, at) for m in messages), run]
        case UpdateRun(run_id=run_id, metadata=metadata):
            _require_known(run_id, active, facts.get(RunStatus(run_id)))
            return [RunUpdated(run_id=run_id, metadata=metadata)]
        case CancelRun(run_id=run_id, at=at):
            run_status = facts.get(RunStatus(run_id))
            mine = _require_known(run_id, active, run_status)
            if mine is None:
                raise InvalidRequest(f"Cannot cancel run with status '{run_status}'.")
            if mine.status == "cancelling":
                return []
            if mine.status == "in_progress":
                return [RunCancelling(run_id=run_id, at=at)]    # the engine stops the model, then ends it
            return [RunCancelling(run_id=run_id, at=at), *_cancelled(mine, at)]
        case SubmitToolOutputs(run_id=run_id, outputs=outputs, at=at):
            run_status = facts.get(RunStatus(run_id))
            mine = _require_known(run_id, active, run_status)
            status = mine.status if mine is not None else run_status
            if mine is None or mine.status != "requires_action":
                raise InvalidRequest(f'Runs in status "{status}" do not accept tool outputs.')
            return [_outputs_submitted(mine, outputs, at)]
    raise TypeError(f"unknown command {cmd!r}")


def _outputs_submitted(active: ActiveRun, outputs: list[JSON], at: int) -> ToolOutputsSubmitted:
    pending = [c.id for c in active.tool_calls]
    given = [o["tool_call_id"] for o in outputs]
    unknown = [i for i in given if i not in pending]
    if unknown:
        raise InvalidRequest(f"No tool call with id '{unknown[0]}' is waiting for output in run {active.run_id}.",
                             param="tool_outputs")
    duplicated = sorted({i for i in given if given.count(i) > 1})
    if duplicated:
        raise InvalidRequest(f"Tool output for call '{duplicated[0]}' was given more than once.", param="tool_outputs")
    missing = [i for i in pending if i not in given]
    if missing:
        raise InvalidRequest(
            f"Expected tool outputs for call ids {pending}, but got only {given}. "
            "All outputs must be submitted in a single request.", param="tool_outputs")
    by_id = {o["tool_call_id"]: o["output"] for o in outputs}
    calls = [c.with_output(by_id[c.id]) if c.id in by_id else c for c in active.step_calls or active.tool_calls]
    return ToolOutputsSubmitted(run_id=active.run_id, step_id=active.step_id or "", submitted_at=at, tool_calls=calls,
                                usage=active.step_usage)


def decide_engine(thread_id: str, active: ActiveRun | None, cmd: Any) -> list[Event]:
    if active is None or active.run_id != cmd.run_id:
        return []   # ended, or the thread moved on: nothing left to do for this command
    match cmd:
        case StartRun(at=at):
            return [RunStarted(run_id=active.run_id, started_at=at)] if active.status == "queued" else []
        case OpenMessage(step_id=step_id, message_id=message_id, at=at, assistant_id=assistant_id):
            if active.status != "in_progress" or active.message_id is not None:
                return []
            message = MessageCreated(message_id=message_id, thread_id=thread_id, created_at=at, role="assistant",
                                     content=[], assistant_id=assistant_id, run_id=active.run_id, status="in_progress")
            return [RunStepCreated(step_id=step_id, run_id=active.run_id, created_at=at,
                                   type="message_creation", message_id=message_id), message]
        case AppendText(message_id=message_id, index=index, text=text):
            if active.status != "in_progress" or active.message_id != message_id or not text:
                return []
            return [MessageTextAppended(message_id=message_id, run_id=active.run_id, index=index, text=text)]
        case CloseMessage(content=content, at=at, usage=usage):
            if active.status != "in_progress" or active.message_id is None:
                return []
            return [MessageCompleted(message_id=active.message_id, completed_at=at, content=content),
                    RunStepCompleted(step_id=active.step_id or "", run_id=active.run_id, completed_at=at, usage=usage)]
        case OpenToolCalls(step_id=step_id, at=at):
            if active.status != "in_progress" or active.message_id is not None or active.step_id is not None:
                return []
            return [RunStepCreated(step_id=step_id, run_id=active.run_id, created_at=at, type="tool_calls")]
        case AppendToolCallArguments(step_id=step_id, pieces=pieces):
            if active.status != "in_progress" or active.step_id != step_id:
                return []
            return [ToolCallArgumentsAppended(run_id=active.run_id, step_id=step_id, index=p["index"],
                                              arguments=p.get("arguments") or "", call_id=p.get("call_id"),
                                              name=p.get("name")) for p in pieces]
        case RequestToolCalls(step_id=step_id, tool_calls=tool_calls, at=at, usage=usage, waiting=waiting):
            if active.status != "in_progress" or active.message_id is not None:
                return []
            outcome = _calls_outcome(active.run_id, step_id, tool_calls, waiting, at, usage)
            if active.step_id == step_id:       # the step opened as the model began: its calls are complete now
                return [outcome]
            if active.step_id is not None:
                return []
            # Asked for all at once (no step opened while the model wrote): the calls come with the step.
            shown = tool_calls if waiting is None else []
            return [RunStepCreated(step_id=step_id, run_id=active.run_id, created_at=at, type="tool_calls",
                                   tool_calls=shown), outcome]
        case FinishRun() if active.status == "cancelling":
            return _cancelled(active, cmd.at, cmd.usage, cmd.content)   # cancellation won the race
        case FinishRun(at=at, outcome=outcome, usage=usage) if active.status == "in_progress":
            if outcome == "failed":
                return _failed(active, at, cmd.last_error or {"code": "server_error", "message": "The run failed."},
                               usage, cmd.content)
            events: list[Event] = []
            if active.message_id is not None:
                events.append(MessageIncomplete(message_id=active.message_id, incomplete_at=at, reason="max_tokens",
                                                content=cmd.content) if outcome == "incomplete" else
                              MessageCompleted(message_id=active.message_id, completed_at=at, content=cmd.content or []))
            if active.step_id is not None:
                events.append(RunStepCompleted(step_id=active.step_id, run_id=active.run_id, completed_at=at))
            if outcome == "incomplete":
                return [*events, RunIncomplete(run_id=active.run_id, at=at, reason=cmd.reason or "max_completion_tokens",
                                               usage=usage)]
            return [*events, RunCompleted(run_id=active.run_id, completed_at=at, usage=usage)]
        case FinishRun():
            return []
        case ExpireRun(at=at, content=content):
            if at < active.expires_at:
                return []
            return [*_ending(active, "expired", at, content=content), RunExpired(run_id=active.run_id, expired_at=at)]
        case RequeueRun(at=at, reason=reason):
            if active.status == "cancelling":
                return _cancelled(active, at)
            if active.status != "in_progress":
                return []       # queued: just run it; requires_action: waiting for the client
            if active.requeues >= MAX_REQUEUES:
                return _failed(active, at, {"code": "server_error", "message":
                               f"The run was interrupted {active.requeues + 1} times ({reason}) and was given up."})
            # The interrupted turn is redone from the committed state; its partial reply goes away
            # (the log keeps it) so the thread ends with one answer.
            events: list[Event] = []
            if active.message_id is not None:
                events.append(MessageDeleted(message_id=active.message_id))
            if active.step_id is not None:
                events.append(RunStepEnded(step_id=active.step_id, run_id=active.run_id, at=at, status="cancelled"))
            return [*events, RunRequeued(run_id=active.run_id, at=at, reason=reason)]
    raise TypeError(f"unknown command {cmd!r}")


def _calls_outcome(run_id: str, step_id: str, calls: list[ToolCall], waiting: list[str] | None, at: int,
                   usage: JSON | None) -> Event:
    """The client answers what is waiting (requires_action); with nothing waiting, the step is done."""
    if waiting is None:
        return RunRequiredAction(run_id=run_id, step_id=step_id, tool_calls=calls, usage=usage)
    if not waiting:
        return ToolCallsExecuted(run_id=run_id, step_id=step_id, completed_at=at, tool_calls=calls, usage=usage)
    return RunRequiredAction(run_id=run_id, step_id=step_id, tool_calls=[c for c in calls if c.id in waiting],
                             usage=usage, step_calls=calls)


def evolve_run(active: ActiveRun | None, event: Event) -> ActiveRun | None:
    """The active run after an event of its thread (None once it ends)."""
    if isinstance(event, RunCreated):
        return ActiveRun(run_id=event.run_id, status="queued", expires_at=event.expires_at)
    if active is None:
        return None
    replace = msgspec.structs.replace
    match event:
        case RunStarted():
            return replace(active, status="in_progress")
        case RunRequeued():
            return replace(active, status="queued", step_id=None, message_id=None, requeues=active.requeues + 1)
        case RunStepCreated(step_id=step_id, message_id=message_id):
            return replace(active, step_id=step_id, message_id=message_id)
        case MessageCompleted(message_id=mid) | MessageIncomplete(message_id=mid) | MessageDeleted(message_id=mid):
            return replace(active, message_id=None) if mid == active.message_id else active
        case RunStepCompleted(step_id=sid) | RunStepEnded(step_id=sid):
            return replace(active, step_id=None) if sid == active.step_id else active
        case RunRequiredAction(tool_calls=tool_calls, usage=usage, step_calls=step_calls):
            return replace(active, status="requires_action", tool_calls=tool_calls, step_usage=usage,
                           step_calls=step_calls)
        case ToolOutputsSubmitted():
            return replace(active, status="queued", step_id=None, tool_calls=[], step_usage=None, step_calls=[])
        case ToolCallsExecuted(step_id=sid):
            return replace(active, step_id=None) if sid == active.step_id else active
        case RunCancelling():
            return replace(active, status="cancelling")
        case RunCompleted() | RunIncomplete() | RunFailed() | RunCancelled() | RunExpired():
            return None
    return active
