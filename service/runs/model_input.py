"""What a run sends the model, made from what is stored: a stored message as a tail entry, the
run's finished tool rounds replayed as chat messages, the tool choice the model is offered, and
the image files its messages show as data URLs."""

from __future__ import annotations

import base64
import mimetypes
from typing import Any

import msgspec

from projections import queries
from service.models.context import history_messages
from service.models.tokens import count_message
from service.runs.tail import Entry
from service.tools.runtime import ToolRuntime


class _StoredMessage(msgspec.Struct):
    """What a run needs of a message's stored JSON (decoding only this is several times faster)."""
    id: str
    role: str
    content: list[dict] | None = None


_stored_message = msgspec.json.Decoder(_StoredMessage)


def tail_entry(stored: str, encoding: str) -> Entry:
    """A stored message as the tail holds it: its chat message (image files left out) and tokens."""
    m = _stored_message.decode(stored)
    message = {"role": m.role, "content": m.content}
    chat = history_messages([message], lambda _: None)[0]
    return Entry(m.id, chat, count_message(chat, encoding), message if shows_image(message) else None)


def shows_image(message: dict) -> bool:
    return any(p.get("type") == "image_file" for p in message.get("content") or ())


def tool_rounds(steps: list[dict], tools: ToolRuntime) -> list[dict]:
    """The run's finished tool rounds, as the chat messages that replay them to the model."""
    out: list[dict] = []
    for step in steps:
        details = step.get("step_details") or {}
        if details.get("type") != "tool_calls" or step.get("status") != "completed":
            continue
        out += tools.replay([tools.call_of(c) for c in details["tool_calls"]])
    return out


def offered_tool_choice(choice: Any, tools: list[dict]) -> Any:
    if not tools:
        return None
    if choice in (None, "auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice["function"]["name"]}}
    return "auto"    # a built-in tool this server does not run


MAX_IMAGE_BYTES = 20 * 1024 * 1024


async def image_urls(db, messages: list[dict]) -> dict[str, str]:
    """Data URLs of the image files the messages show (files of a few MB, read from the blob store)."""
    wanted = {p["image_file"]["file_id"] for m in messages for p in m.get("content") or ()
              if p.get("type") == "image_file"}
    out: dict[str, str] = {}
    for file_id in wanted:
        row = await queries.file_name_and_size(db, file_id)
        if row is None or row[1] > MAX_IMAGE_BYTES:
            continue
        mime = mimetypes.guess_type(row[0])[0] or "image/png"
        data = b"".join([chunk async for chunk in queries.file_chunks(db, file_id)])
        out[file_id] = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    return out
