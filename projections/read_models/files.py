"""Files, as the API returns them. Their bytes are not a read model (events/blobs.py)."""

from __future__ import annotations

from typing import Any

from projections.changes import Change
from projections.read_models.base import ReadModel

MODEL = ReadModel("files", lock_rank=1)


class FileWritten(Change, tag="file"):
    id: str
    project: str
    purpose: str
    data: Any
