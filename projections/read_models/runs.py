"""Runs, as the API returns them, with their status and deadline as columns (the expiry sweep and
the one-active-run index read them) and where their events start in the thread's stream."""

from __future__ import annotations

from typing import Any

from projections.changes import Change
from projections.read_models.base import ReadModel

MODEL = ReadModel("runs", lock_rank=4, deleted_with="threads")


class RunWritten(Change, tag="run"):
    id: str
    thread_id: str
    expires_at: int | None
    version: int | None     # the thread stream's version of RunCreated
    data: Any
