"""Run steps, as the API returns them; a step gets its thread and assistant from its run."""

from __future__ import annotations

from typing import Any

from projections.changes import Change
from projections.read_models.base import ReadModel

MODEL = ReadModel("run_steps", lock_rank=3, deleted_with="threads")


class StepWritten(Change, tag="step"):
    id: str
    run_id: str
    data: Any
