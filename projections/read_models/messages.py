"""Messages, as the API returns them; a message's project is its thread's."""

from __future__ import annotations

from typing import Any

from projections.changes import Change
from projections.read_models.base import ReadModel

MODEL = ReadModel("messages", lock_rank=2, deleted_with="threads")


class MessageWritten(Change, tag="message"):
    id: str
    thread_id: str
    run_id: str | None
    data: Any
