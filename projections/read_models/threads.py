"""Threads, as the API returns them. Deleting one deletes its messages, runs and steps."""

from __future__ import annotations

from typing import Any

from projections.changes import Change
from projections.read_models.base import ReadModel

MODEL = ReadModel("threads", lock_rank=5)


class ThreadWritten(Change, tag="thread"):
    id: str
    project: str
    data: Any
