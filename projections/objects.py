"""The objects the API returns, built from events. A read-model row stores one of them as JSON."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from events.types import (
    AgentCreated, AgentSettings, Attachment, ContentPart, FileUploaded, MessageCreated, RunCreated, RunStepCreated,
    ThreadCreated,
)

JSON = dict[str, Any]


class Assistant(AgentSettings):
    id: str
    created_at: int
    object: Literal["assistant"] = "assistant"


class Thread(msgspec.Struct):
    id: str
    created_at: int
    metadata: dict[str, str] = {}
    tool_resources: JSON = {}
    object: Literal["thread"] = "thread"


class Message(msgspec.Struct):
    id: str
    created_at: int
    thread_id: str
    role: Literal["user", "assistant"]
    content: list[ContentPart]
    status: Literal["in_progress", "incomplete", "completed"] = "completed"
    incomplete_details: JSON | None = None
    completed_at: int | None = None
    incomplete_at: int | None = None
    assistant_id: str | None = None
    run_id: str | None = None
    attachments: list[Attachment] = []
    metadata: dict[str, str] = {}
    object: Literal["thread.message"] = "thread.message"


class File(msgspec.Struct):
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None
    expires_at: int | None = None
    object: Literal["file"] = "file"


class Run(msgspec.Struct):
    id: str
    created_at: int
    thread_id: str
    assistant_id: str
    model: str
    instructions: str
    expires_at: int | None
    status: str = "queued"
    required_action: JSON | None = None
    last_error: JSON | None = None
    started_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    completed_at: int | None = None
    incomplete_details: JSON | None = None
    tools: list[JSON] = []
    tool_resources: JSON = {}
    metadata: dict[str, str] = {}
    usage: JSON | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    truncation_strategy: JSON = {}
    response_format: str | JSON | None = "auto"
    tool_choice: str | JSON | None = "auto"
    parallel_tool_calls: bool = True
    reasoning_effort: str | None = None
    object: Literal["thread.run"] = "thread.run"


class RunStep(msgspec.Struct):
    id: str
    created_at: int
    run_id: str
    thread_id: str
    type: Literal["message_creation", "tool_calls"]
    step_details: JSON
    assistant_id: str | None = None      # filled in from the run's row
    status: str = "in_progress"
    last_error: JSON | None = None
    expired_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    completed_at: int | None = None
    usage: JSON | None = None
    metadata: dict[str, str] = {}
    object: Literal["thread.run.step"] = "thread.run.step"


class DeletionStatus(msgspec.Struct):
    id: str
    object: str
    deleted: bool = True


class ListPage(msgspec.Struct):
    """A page of any list endpoint; `data` holds the objects of the listed kind."""
    data: list[Any]
    first_id: str | None
    last_id: str | None
    has_more: bool
    object: Literal["list"] = "list"


_AGENT_SETTINGS = msgspec.structs.fields(AgentSettings)


def assistant_from(e: AgentCreated) -> Assistant:
    settings = {f.name: getattr(e, f.name) for f in _AGENT_SETTINGS}
    if settings["response_format"] is None:
        settings["response_format"] = "auto"
    return Assistant(id=e.agent_id, created_at=e.created_at, **settings)


def thread_from(e: ThreadCreated) -> Thread:
    return Thread(id=e.thread_id, created_at=e.created_at, metadata=e.metadata, tool_resources=e.tool_resources)


def message_from(e: MessageCreated) -> Message:
    return Message(
        id=e.message_id, created_at=e.created_at, thread_id=e.thread_id, role=e.role, content=e.content,
        status=e.status, completed_at=e.created_at if e.status == "completed" else None,
        assistant_id=e.assistant_id, run_id=e.run_id, attachments=e.attachments, metadata=e.metadata,
    )


def run_from(e: RunCreated) -> Run:
    return Run(
        id=e.run_id, created_at=e.created_at, thread_id=e.thread_id, assistant_id=e.assistant_id, model=e.model,
        instructions=e.instructions, expires_at=e.expires_at, tools=e.tools, tool_resources=e.tool_resources,
        metadata=e.metadata, temperature=e.temperature, top_p=e.top_p, max_prompt_tokens=e.max_prompt_tokens,
        max_completion_tokens=e.max_completion_tokens, truncation_strategy=e.truncation_strategy,
        response_format=e.response_format, tool_choice=e.tool_choice, parallel_tool_calls=e.parallel_tool_calls,
        reasoning_effort=e.reasoning_effort,
    )


def step_from(e: RunStepCreated) -> RunStep:
    if e.type == "message_creation":
        details = {"type": "message_creation", "message_creation": {"message_id": e.message_id}}
    else:
        details = {"type": "tool_calls", "tool_calls": e.tool_calls}
    return RunStep(id=e.step_id, created_at=e.created_at, run_id=e.run_id, thread_id="", type=e.type,
                   step_details=details, usage=e.usage)


def file_from(e: FileUploaded) -> File:
    return File(id=e.file_id, bytes=e.bytes, created_at=e.created_at, filename=e.filename, purpose=e.purpose,
                expires_at=e.expires_at)
