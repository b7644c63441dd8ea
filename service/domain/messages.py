"""A message as a client adds it: what it says. The thread it joins and the moment come with the
command that adds it (CreateThread, AddMessage, CreateRun's additional messages)."""

from __future__ import annotations

from typing import Literal

import msgspec

from events.types import Attachment, ContentPart, MessageCreated


class NewMessage(msgspec.Struct, frozen=True, kw_only=True):
    message_id: str
    role: Literal["user", "assistant"]
    content: list[ContentPart]
    attachments: list[Attachment] = []
    metadata: dict[str, str] = {}

    def created(self, thread_id: str, at: int) -> MessageCreated:
        return MessageCreated(message_id=self.message_id, thread_id=thread_id, created_at=at, role=self.role,
                              content=self.content, attachments=self.attachments, metadata=self.metadata)
