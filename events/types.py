"""Every event Threadline records, defined once.

Events are facts in the past tense. Once written they are never changed, so a field may be added
(with a default) but never renamed, retyped or removed. `type` in the log is the class name.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

JSON = dict[str, Any]


class TextValue(msgspec.Struct, frozen=True):
    value: str
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


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every event. Subclasses are registered by class name."""


# --- agent-… streams ---------------------------------------------------------------------------

class AgentCreated(Event):
    agent_id: str
    project: str
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


class AgentDeleted(Event):
    agent_id: str


# --- thread-… streams --------------------------------------------------------------------------

class ThreadCreated(Event):
    thread_id: str
    project: str
    created_at: int
    metadata: dict[str, str] = {}
    tool_resources: JSON = {}


class ThreadUpdated(Event):
    thread_id: str
    metadata: dict[str, str] | UnsetType = UNSET
    tool_resources: JSON | UnsetType = UNSET


class ThreadDeleted(Event):
    thread_id: str


class MessageCreated(Event):
    message_id: str
    thread_id: str
    created_at: int
    role: Literal["user", "assistant"]
    content: list[ContentPart]
    attachments: list[Attachment] = []
    metadata: dict[str, str] = {}
    assistant_id: str | None = None
    run_id: str | None = None


class MessageUpdated(Event):
    message_id: str
    metadata: dict[str, str]


class MessageDeleted(Event):
    message_id: str


# --- file-… streams ----------------------------------------------------------------------------

class FileUploaded(Event):
    file_id: str
    project: str
    created_at: int
    filename: str
    purpose: str
    bytes: int
    sha256: str


class FileDeleted(Event):
    file_id: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        AgentCreated, AgentUpdated, AgentDeleted,
        ThreadCreated, ThreadUpdated, ThreadDeleted,
        MessageCreated, MessageUpdated, MessageDeleted,
        FileUploaded, FileDeleted,
    )
}

_decoders = {name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()}
_encoder = msgspec.json.Encoder()


def encode_event(event: Event) -> str:
    return _encoder.encode(event).decode()


def decode_event(type_name: str, data: str | bytes) -> Event:
    return _decoders[type_name].decode(data)
