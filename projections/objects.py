"""The objects the API returns, built from events. A read-model row stores one of them as JSON."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from events.types import (
    AgentCreated, Attachment, ContentPart, FileUploaded, MessageCreated, ThreadCreated,
)

JSON = dict[str, Any]


class Assistant(msgspec.Struct):
    id: str
    created_at: int
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
    object: Literal["file"] = "file"


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


def assistant_from(e: AgentCreated) -> Assistant:
    return Assistant(
        id=e.agent_id, created_at=e.created_at, model=e.model, name=e.name, description=e.description,
        instructions=e.instructions, tools=e.tools, tool_resources=e.tool_resources,
        metadata=e.metadata, temperature=e.temperature, top_p=e.top_p,
        response_format=e.response_format if e.response_format is not None else "auto",
    )


def thread_from(e: ThreadCreated) -> Thread:
    return Thread(id=e.thread_id, created_at=e.created_at, metadata=e.metadata, tool_resources=e.tool_resources)


def message_from(e: MessageCreated) -> Message:
    return Message(
        id=e.message_id, created_at=e.created_at, thread_id=e.thread_id, role=e.role, content=e.content,
        completed_at=e.created_at, assistant_id=e.assistant_id, run_id=e.run_id,
        attachments=e.attachments, metadata=e.metadata,
    )


def file_from(e: FileUploaded) -> File:
    return File(id=e.file_id, bytes=e.bytes, created_at=e.created_at, filename=e.filename, purpose=e.purpose)
