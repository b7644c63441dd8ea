"""A thread and its messages. Its stream is `thread-<id>`; the ThreadActor is its only writer.

The state keeps just what decisions need (not the messages themselves): a thread with 100,000
messages folds into a few integers. Facts about single messages that a decision needs (does this
message exist?) are looked up by the shell and handed over in the command.
"""

from __future__ import annotations

import msgspec
from msgspec import UNSET, UnsetType

from events.types import (
    Event, JSON, MessageCreated, MessageDeleted, MessageUpdated, RunCreated, ThreadCreated, ThreadDeleted,
    ThreadErased, ThreadUpdated,
)
from service.domain import run as runs
from service.domain.decider import Decider
from service.domain.errors import InvalidRequest, NotFound
from service.domain.facts import Facts, MessageExists, RunStatus
from service.domain.messages import NewMessage

MAX_MESSAGES = 100_000


class ThreadState(msgspec.Struct):
    thread_id: str
    version: int = 0
    project: str | None = None
    deleted: bool = False
    message_count: int = 0
    active_run: runs.ActiveRun | None = None
    erased: bool = False


class CreateThread(msgspec.Struct, frozen=True, kw_only=True):
    project: str
    at: int
    metadata: dict[str, str] = {}
    tool_resources: JSON = {}
    messages: list[NewMessage] = []


class UpdateThread(msgspec.Struct, frozen=True):
    project: str
    metadata: dict[str, str] | UnsetType = UNSET
    tool_resources: JSON | UnsetType = UNSET


class DeleteThread(msgspec.Struct, frozen=True):
    project: str


class EraseThread(msgspec.Struct, frozen=True):
    """Also for deleted threads: their log still holds their content until erased."""
    project: str
    at: int
    reason: str = "erasure request"


class AddMessage(msgspec.Struct, frozen=True):
    project: str
    at: int
    message: NewMessage


class UpdateMessage(msgspec.Struct, frozen=True):
    project: str
    message_id: str
    metadata: dict[str, str]


class DeleteMessage(msgspec.Struct, frozen=True):
    project: str
    message_id: str


def _require_thread(state: ThreadState, project: str) -> None:
    if state.version == 0 or state.deleted or state.project != project:
        raise NotFound("thread", state.thread_id)


def _require_room(state: ThreadState, adding: int) -> None:
    if state.message_count + adding > MAX_MESSAGES:
        raise InvalidRequest(
            f"Thread {state.thread_id} already holds {state.message_count} messages; "
            f"a thread can hold at most {MAX_MESSAGES}.", code="thread_message_limit_reached")


def needs(state: ThreadState, cmd) -> tuple[MessageExists | RunStatus, ...]:
    """The read-side facts `decide` needs for this command (none for most)."""
    match cmd:
        case UpdateMessage(message_id=message_id) | DeleteMessage(message_id=message_id):
            return (MessageExists(message_id),)
        case runs.UpdateRun(run_id=run_id) | runs.CancelRun(run_id=run_id) | runs.SubmitToolOutputs(run_id=run_id):
            active = state.active_run
            return () if active is not None and active.run_id == run_id else (RunStatus(run_id),)
    return ()


def decide(state: ThreadState, cmd, facts: Facts = {}) -> list[Event]:  # noqa: B006 - read only
    """The events the command makes; `facts`: what `needs` asked for (a fact not given counts as
    no such message or run)."""
    if isinstance(cmd, runs.ENGINE_COMMANDS):
        if state.deleted:
            return []
        return runs.decide_engine(state.thread_id, state.active_run, cmd)
    if isinstance(cmd, runs.CLIENT_COMMANDS):
        _require_thread(state, cmd.project)
        if isinstance(cmd, runs.CreateRun):
            _require_room(state, len(cmd.messages))
        return runs.decide_client(state.thread_id, state.active_run, cmd, facts)
    match cmd:
        case CreateThread(project=project, at=at, messages=messages):
            if state.version != 0:
                return []
            _require_room(state, len(messages))
            return [ThreadCreated(thread_id=state.thread_id, project=project, created_at=at, metadata=cmd.metadata,
                                  tool_resources=cmd.tool_resources),
                    *(m.created(state.thread_id, at) for m in messages)]
        case UpdateThread(project=project, metadata=metadata, tool_resources=tool_resources):
            _require_thread(state, project)
            return [ThreadUpdated(thread_id=state.thread_id, metadata=metadata, tool_resources=tool_resources)]
        case DeleteThread(project=project):
            _require_thread(state, project)
            return [ThreadDeleted(thread_id=state.thread_id)]
        case EraseThread(project=project, at=at, reason=reason):
            if state.version == 0 or state.project != project:
                raise NotFound("thread", state.thread_id)
            if state.erased:
                return []
            ending = runs.decide_engine(state.thread_id, state.active_run,
                                        runs.FinishRun(state.active_run.run_id, at, "failed", {})) \
                if state.active_run is not None else []
            return [*ending, ThreadErased(thread_id=state.thread_id, erased_at=at, reason=reason)]
        case AddMessage(project=project, at=at, message=message):
            _require_thread(state, project)
            runs.thread_is_free(state.thread_id, state.active_run, adding="messages")
            _require_room(state, 1)
            return [message.created(state.thread_id, at)]
        case UpdateMessage(project=project, message_id=message_id, metadata=metadata):
            _require_thread(state, project)
            if not facts.get(MessageExists(message_id), False):
                raise NotFound("message", message_id)
            return [MessageUpdated(message_id=message_id, metadata=metadata)]
        case DeleteMessage(project=project, message_id=message_id):
            _require_thread(state, project)
            if not facts.get(MessageExists(message_id), False):
                raise NotFound("message", message_id)
            return [MessageDeleted(message_id=message_id)]
    raise TypeError(f"unknown command {cmd!r}")


def evolve(state: ThreadState, event: Event) -> ThreadState:
    version = state.version + 1
    if state.active_run is not None or isinstance(event, RunCreated):
        state = msgspec.structs.replace(state, active_run=runs.evolve_run(state.active_run, event))
    match event:
        case ThreadCreated(project=project):
            return msgspec.structs.replace(state, version=version, project=project)
        case ThreadDeleted():
            return msgspec.structs.replace(state, version=version, deleted=True)
        case ThreadErased():
            return msgspec.structs.replace(state, version=version, deleted=True, erased=True)
        case MessageCreated():
            return msgspec.structs.replace(state, version=version, message_count=state.message_count + 1)
        case MessageDeleted():
            return msgspec.structs.replace(state, version=version, message_count=state.message_count - 1)
    return msgspec.structs.replace(state, version=version)


DECIDER = Decider("thread", ThreadState, decide, evolve, needs=needs, terminal=lambda state: state.deleted,
                  snapshots=True)
