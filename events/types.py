"""Every event Threadline records, defined once.

Events are facts in the past tense. Once written they are never changed, so a field may be added
(with a default) but never renamed, retyped or removed. `type` in the log is the class name.

Content is marked where it is defined: a `Sealed` string (or a JSON field that `seals` paths inside
it) is encrypted under its thread's key in the log (events/cipher.py derives what to encrypt from
these marks, so a new event cannot leave its content in plaintext by missing a list). Each type also
says how it reads as a line of `threadline replay` (`describe`).

(Over 400 lines on purpose: this file is the one list of every fact the service records, and each
definition carries what is derived from it; a reader scans it top to bottom.)
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, UnsetType

JSON = dict[str, Any]

SEALED = "sealed"
Sealed = Annotated[str, msgspec.Meta(extra={SEALED: True})]     # content: encrypted at rest


def seals(*paths: tuple[str, ...]) -> msgspec.Meta:
    """For a JSON-typed field: the paths inside it ("*": every item of a list) to content strings."""
    return msgspec.Meta(extra={SEALED: paths})




class TextValue(msgspec.Struct, frozen=True):
    value: Sealed
    annotations: list[JSON] = []


class TextPart(msgspec.Struct, frozen=True, tag="text", tag_field="type"):
    text: TextValue


class ImageFile(msgspec.Struct, frozen=True):
    file_id: str
    detail: Literal["auto", "low", "high"] = "auto"


class ImageFilePart(msgspec.Struct, frozen=True, tag="image_file", tag_field="type"):
    image_file: ImageFile


class ImageUrl(msgspec.Struct, frozen=True):
    url: str
    detail: Literal["auto", "low", "high"] = "auto"


class ImageUrlPart(msgspec.Struct, frozen=True, tag="image_url", tag_field="type"):
    image_url: ImageUrl


ContentPart = TextPart | ImageFilePart | ImageUrlPart


class Attachment(msgspec.Struct, frozen=True):
    file_id: str
    tools: list[JSON] = []


# --- tool calls, as a run step records them -----------------------------------------------------
# A tagged union on "type", in the wire shape of `step_details.tool_calls[]`. Each tool the server
# runs adds its call type here, with its content marked `Sealed`.

class FunctionCallBody(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    arguments: Sealed                   # the JSON the model wrote
    output: Sealed | None = None        # what the client (or the server, for its own tools) answered


class _Call(msgspec.Struct, frozen=True, tag_field="type"):
    @property
    def type(self) -> str:
        return self.__struct_config__.tag


class FunctionCall(_Call, tag="function"):
    id: str
    function: FunctionCallBody

    def summary(self) -> str:
        return f"{self.function.name}({_short(self.function.arguments, 120)})"

    def with_output(self, output: str) -> "FunctionCall":
        return msgspec.structs.replace(self, function=msgspec.structs.replace(self.function, output=output))


ToolCall = FunctionCall


EVENT_TYPES: dict[str, type["Event"]] = {}      # every event type by class name, filled as they are defined


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every event. A subclass registers itself under its class name: `type` in the log.
    `frames` names the SSE frames (and so the webhook event types) it can make, in their order;
    service/streams/frames.py builds them, and delivers any thread.run.*, thread.run.step.* and
    thread.message.* frame not built otherwise as the run, step or message object it names."""

    frames: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__ in EVENT_TYPES:
            raise TypeError(f"two event types are named {cls.__name__}")
        EVENT_TYPES[cls.__name__] = cls

    def describe(self) -> str:
        return type(self).__name__


# --- agent-… streams ---------------------------------------------------------------------------

class AgentSettings(msgspec.Struct, frozen=True, kw_only=True):
    """An assistant's settings, as it is created with them (the domain's CreateAgent carries them)."""
    model: str
    name: str | None = None
    description: str | None = None
    instructions: str | None = None
    tools: list[JSON] = []
    tool_resources: JSON = {}
    metadata: dict[str, str] = {}
    temperature: float | None = None
    top_p: float | None = None
    response_format: str | JSON | None = None
    reasoning_effort: str | None = None


class AgentCreated(Event, AgentSettings):
    agent_id: str
    project: str
    created_at: int


class AgentUpdated(Event):
    """Only the fields that changed are present."""
    agent_id: str
    model: str | UnsetType = UNSET
    name: str | None | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    instructions: str | None | UnsetType = UNSET
    tools: list[JSON] | UnsetType = UNSET
    tool_resources: JSON | UnsetType = UNSET
    metadata: dict[str, str] | UnsetType = UNSET
    temperature: float | None | UnsetType = UNSET
    top_p: float | None | UnsetType = UNSET
    response_format: str | JSON | None | UnsetType = UNSET
    reasoning_effort: str | None | UnsetType = UNSET


class AgentDeleted(Event):
    agent_id: str


# --- thread-… streams --------------------------------------------------------------------------

class ThreadCreated(Event):
    frames = ("thread.created",)
    thread_id: str
    project: str
    created_at: int
    metadata: dict[str, str] = {}
    tool_resources: JSON = {}

    def describe(self) -> str:
        return f"thread created{' metadata ' + _short(_json(self.metadata)) if self.metadata else ''}"


class ThreadUpdated(Event):
    frames = ("thread.updated",)
    thread_id: str
    metadata: dict[str, str] | UnsetType = UNSET
    tool_resources: JSON | UnsetType = UNSET

    def describe(self) -> str:
        return "thread updated"


class ThreadDeleted(Event):
    frames = ("thread.deleted",)
    thread_id: str

    def describe(self) -> str:
        return "thread deleted"


class ThreadErased(Event):
    """The thread's content key was destroyed: its words are gone from the log for good."""
    frames = ("thread.erased",)
    thread_id: str
    erased_at: int
    reason: str = "erasure request"


class MessageCreated(Event):
    frames = ("thread.message.created", "thread.message.in_progress", "thread.message.completed")
    message_id: str
    thread_id: str
    created_at: int
    role: Literal["user", "assistant"]
    content: list[ContentPart]
    attachments: list[Attachment] = []
    metadata: dict[str, str] = {}
    assistant_id: str | None = None
    run_id: str | None = None
    status: Literal["in_progress", "completed"] = "completed"   # a run's reply starts in_progress

    def describe(self) -> str:
        if self.status == "in_progress":
            return f"{self.role} message {self.message_id} started (run {self.run_id})"
        return f"{self.role} message {self.message_id}: {_short(_text(self.content))!r}"


class MessageTextAppended(Event):
    """Text a model produced for an in-progress message (tokens, gathered for a few milliseconds)."""
    frames = ("thread.message.delta",)
    message_id: str
    run_id: str
    index: int          # the content part the text belongs to
    text: Sealed

    def describe(self) -> str:
        return f"  …text {self.message_id}: {_short(self.text, 80)!r}"


class MessageCompleted(Event):
    frames = ("thread.message.completed",)
    message_id: str
    completed_at: int
    content: list[ContentPart]

    def describe(self) -> str:
        return f"message {self.message_id} completed: {_short(_text(self.content))!r}"


class MessageIncomplete(Event):
    frames = ("thread.message.incomplete",)
    message_id: str
    incomplete_at: int
    reason: Literal["content_filter", "max_tokens", "run_cancelled", "run_expired", "run_failed"]
    content: list[ContentPart] | None = None   # None: whatever the read model holds stays

    def describe(self) -> str:
        return f"message {self.message_id} incomplete ({self.reason})"


class MessageUpdated(Event):
    frames = ("thread.message.updated",)
    message_id: str
    metadata: dict[str, str]

    def describe(self) -> str:
        return f"message {self.message_id} metadata updated"


class MessageDeleted(Event):
    frames = ("thread.message.deleted",)
    message_id: str

    def describe(self) -> str:
        return f"message {self.message_id} deleted"


# --- runs: also in the thread's stream, so the thread's actor decides every transition --------

class RunSettings(msgspec.Struct, frozen=True, kw_only=True):
    """A run's effective settings: the assistant's defaults merged with the request's overrides
    (the domain's run_settings)."""
    assistant_id: str
    model: str
    instructions: Sealed
    tools: list[JSON] = []
    tool_resources: JSON = {}
    metadata: dict[str, str] = {}
    temperature: float | None = None
    top_p: float | None = None
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    truncation_strategy: JSON = msgspec.field(default_factory=lambda: {"type": "auto", "last_messages": None})
    response_format: str | JSON | None = "auto"
    tool_choice: str | JSON | None = "auto"
    parallel_tool_calls: bool = True
    reasoning_effort: str | None = None


class RunCreated(Event, RunSettings):
    """A run, queued, with its effective settings."""
    frames = ("thread.run.created", "thread.run.queued")
    run_id: str
    thread_id: str
    created_at: int
    expires_at: int

    def describe(self) -> str:
        return f"run {self.run_id} queued: assistant {self.assistant_id}, model {self.model}"


class RunStarted(Event):
    """queued → in_progress, by the process that holds the run's lease."""
    frames = ("thread.run.in_progress",)
    run_id: str
    started_at: int

    def describe(self) -> str:
        return f"run {self.run_id} in_progress"


class RunRequeued(Event):
    """in_progress → queued: the process executing it stopped; another will redo the current turn."""
    frames = ("thread.run.queued",)
    run_id: str
    at: int
    reason: str

    def describe(self) -> str:
        return f"run {self.run_id} queued again ({self.reason})"


class RunStepCreated(Event):
    frames = ("thread.run.step.created", "thread.run.step.in_progress", "thread.run.step.delta")
    step_id: str
    run_id: str
    created_at: int
    type: Literal["message_creation", "tool_calls"]
    message_id: str | None = None
    tool_calls: list[ToolCall] = []
    usage: JSON | None = None       # a tool_calls step's model call is over when the step is created

    def describe(self) -> str:
        if self.type == "tool_calls" and not self.tool_calls:
            return f"run {self.run_id} step {self.step_id}: the model writes tool calls"
        if self.type == "tool_calls":
            return f"run {self.run_id} calls tools: {_calls(self.tool_calls)}{_usage(self.usage)}"
        return f"run {self.run_id} step {self.step_id}: writes message {self.message_id}"


class RunStepCompleted(Event):
    frames = ("thread.run.step.completed",)
    step_id: str
    run_id: str
    completed_at: int
    usage: JSON | None = None

    def describe(self) -> str:
        return f"run {self.run_id} step {self.step_id} completed{_usage(self.usage)}"


class RunStepEnded(Event):
    """An open step ended with its run."""
    frames = ("thread.run.step.failed", "thread.run.step.cancelled", "thread.run.step.expired")
    step_id: str
    run_id: str
    at: int
    status: Literal["failed", "cancelled", "expired"]
    last_error: JSON | None = None

    def describe(self) -> str:
        return f"run {self.run_id} step {self.step_id} {self.status}"


class ToolCallArgumentsAppended(Event):
    """A piece of a tool call the model is writing into an open tool_calls step (gathered for a few
    milliseconds). A call's first piece names it: its id and function name."""
    frames = ("thread.run.step.delta",)
    run_id: str
    step_id: str
    index: int                      # the call's place in the step
    arguments: Sealed               # the next fragment of its JSON arguments
    call_id: str | None = None
    name: str | None = None

    def describe(self) -> str:
        named = f" {self.name} ({self.call_id})" if self.call_id else ""
        return f"  …tool call {self.index}{named}: {_short(self.arguments, 80)!r}"


class RunRequiredAction(Event):
    frames = ("thread.run.step.delta", "thread.run.requires_action")
    run_id: str
    step_id: str
    tool_calls: list[ToolCall]      # the calls the client must answer
    usage: JSON | None = None       # of the model call that asked for the tools: the step's, once it completes
    # Every call of the step in the model's order, when the server ran some of them itself (empty:
    # the step's calls are tool_calls).
    step_calls: list[ToolCall] = []

    def describe(self) -> str:
        return f"run {self.run_id} requires_action: {_calls(self.tool_calls)}{_usage(self.usage)}"


class ToolOutputsSubmitted(Event):
    """requires_action → queued; the tool_calls step completes with the outputs filled in."""
    frames = ("thread.run.step.completed", "thread.run.queued")
    run_id: str
    step_id: str
    submitted_at: int
    tool_calls: list[ToolCall]      # the step's calls, each with its output
    usage: JSON | None = None       # the step's usage, now that it completes

    def describe(self) -> str:
        outputs = "; ".join(f"{c.function.name} → {_short(str(c.function.output), 120)}" for c in self.tool_calls)
        return f"run {self.run_id} tool outputs: {outputs}"


class ToolCallsExecuted(Event):
    """The server ran every call of the step itself: the step completes and the run goes on."""
    frames = ("thread.run.step.delta", "thread.run.step.completed")
    run_id: str
    step_id: str
    completed_at: int
    tool_calls: list[ToolCall]      # in the model's order, each with its result
    usage: JSON | None = None       # of the model call that asked for the tools

    def describe(self) -> str:
        return f"run {self.run_id} ran tools: {_calls(self.tool_calls)}{_usage(self.usage)}"


class RunUpdated(Event):
    frames = ("thread.run.updated",)
    run_id: str
    metadata: dict[str, str]

    def describe(self) -> str:
        return f"run {self.run_id} metadata updated"


class RunCancelling(Event):
    frames = ("thread.run.cancelling",)
    run_id: str
    at: int

    def describe(self) -> str:
        return f"run {self.run_id} cancelling"


class RunCompleted(Event):
    frames = ("thread.run.completed",)
    run_id: str
    completed_at: int
    usage: JSON

    def describe(self) -> str:
        return f"run {self.run_id} completed{_usage(self.usage)}"


class RunIncomplete(Event):
    frames = ("thread.run.incomplete",)
    run_id: str
    at: int
    reason: Literal["max_completion_tokens", "max_prompt_tokens"]
    usage: JSON

    def describe(self) -> str:
        return f"run {self.run_id} incomplete ({self.reason}){_usage(self.usage)}"


class RunFailed(Event):
    frames = ("thread.run.failed",)
    run_id: str
    failed_at: int
    last_error: JSON                # {"code": server_error|rate_limit_exceeded|invalid_prompt, "message"}
    usage: JSON | None = None

    def describe(self) -> str:
        return f"run {self.run_id} failed: {self.last_error.get('code')}: {_short(self.last_error.get('message', ''))}"


class RunCancelled(Event):
    frames = ("thread.run.cancelled",)
    run_id: str
    cancelled_at: int
    usage: JSON | None = None

    def describe(self) -> str:
        return f"run {self.run_id} cancelled"


class RunExpired(Event):
    frames = ("thread.run.expired",)
    run_id: str
    expired_at: int
    usage: JSON | None = None

    def describe(self) -> str:
        return f"run {self.run_id} expired"


# --- file-… streams ----------------------------------------------------------------------------

class FileUploaded(Event):
    file_id: str
    project: str
    created_at: int
    filename: str
    purpose: str
    bytes: int
    sha256: str
    expires_at: int | None = None      # from `expires_after`: the file is deleted then


class FileDeleted(Event):
    file_id: str


# --- how events read in `threadline replay` ---------------------------------------------------

def _short(s: str, n: int = 200) -> str:
    s = s.replace("\n", " ")
    return s if len(s) <= n else s[: n - 1] + "…"


def _text(content) -> str:
    return " ".join(p.text.value if isinstance(p, TextPart) else f"[{type(p).__name__}]"
                    for p in content or ())


def _usage(u) -> str:
    return f" (tokens: {u.get('prompt_tokens', 0)} in, {u.get('completion_tokens', 0)} out)" if u else ""


def _calls(calls: list[ToolCall]) -> str:
    return "; ".join(c.summary() for c in calls)


def _json(value) -> str:
    return msgspec.json.encode(value).decode()



_decoders = {name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()}
_encoder = msgspec.json.Encoder()


def encode_event(event: Event) -> str:
    return _encoder.encode(event).decode()


def decode_event(type_name: str, data: str | bytes) -> Event:
    return _decoders[type_name].decode(data)
