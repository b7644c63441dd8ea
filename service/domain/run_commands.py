"""The commands of a run: what clients ask of it (refused with the API's errors when they do not
apply) and what the run engine reports as it works (deciding nothing once they no longer apply).
Decided by service/domain/run.py."""

from __future__ import annotations

from typing import Literal

import msgspec

from events.types import JSON, ContentPart, RunSettings, ToolCall
from service.domain.messages import NewMessage


# --- commands from clients ---------------------------------------------------------------------

class CreateRun(msgspec.Struct, frozen=True, kw_only=True):
    project: str
    run_id: str
    at: int
    expires_at: int
    settings: RunSettings
    messages: list[NewMessage] = []     # additional_messages, added before the run


class UpdateRun(msgspec.Struct, frozen=True):
    project: str
    run_id: str
    metadata: dict[str, str]


class CancelRun(msgspec.Struct, frozen=True):
    project: str
    run_id: str
    at: int


class SubmitToolOutputs(msgspec.Struct, frozen=True):
    project: str
    run_id: str
    outputs: list[JSON]                     # [{"tool_call_id": ..., "output": ...}]
    at: int


# --- commands from the run engine --------------------------------------------------------------

class StartRun(msgspec.Struct, frozen=True):
    run_id: str
    at: int


class OpenMessage(msgspec.Struct, frozen=True):
    """The model began its reply: a message of the assistant's, in progress."""
    run_id: str
    step_id: str
    message_id: str
    at: int
    assistant_id: str | None = None


class AppendText(msgspec.Struct, frozen=True):
    run_id: str
    message_id: str
    index: int
    text: str


class CloseMessage(msgspec.Struct, frozen=True):
    run_id: str
    content: list[ContentPart]
    at: int
    usage: JSON | None = None


class OpenToolCalls(msgspec.Struct, frozen=True):
    """The model began writing tool calls: their step opens now, so clients see them as they come."""
    run_id: str
    step_id: str
    at: int


class AppendToolCallArguments(msgspec.Struct, frozen=True):
    run_id: str
    step_id: str
    pieces: list[JSON]      # [{"index", "arguments", "call_id"?, "name"?}] in the order the model wrote them


class RequestToolCalls(msgspec.Struct, frozen=True):
    """The model's calls, in its order: the server-run ones done, the others for the client."""
    run_id: str
    step_id: str
    tool_calls: list[ToolCall]
    at: int
    usage: JSON | None = None
    waiting: list[str] | None = None    # ids of the calls the client must answer (None: all of them)


class FinishRun(msgspec.Struct, frozen=True):
    run_id: str
    at: int
    outcome: Literal["completed", "incomplete", "failed"]
    usage: JSON
    reason: Literal["max_completion_tokens", "max_prompt_tokens"] | None = None
    last_error: JSON | None = None
    content: list[ContentPart] | None = None    # what the open reply holds, if one is open


class ExpireRun(msgspec.Struct, frozen=True):
    run_id: str
    at: int
    content: list[ContentPart] | None = None    # what the open reply holds, if one is open


class RequeueRun(msgspec.Struct, frozen=True):
    """The process executing the run is gone (its lease lapsed) or is shutting down."""
    run_id: str
    at: int
    reason: str


CLIENT_COMMANDS = (CreateRun, UpdateRun, CancelRun, SubmitToolOutputs)
ENGINE_COMMANDS = (StartRun, OpenMessage, AppendText, CloseMessage, OpenToolCalls, AppendToolCallArguments,
                   RequestToolCalls, FinishRun, ExpireRun, RequeueRun)
