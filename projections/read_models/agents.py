"""Assistants (agents), as the API returns them; json keeps their tools' schemas in order."""

from __future__ import annotations

from typing import Any

from projections.changes import Change
from projections.read_models.base import ReadModel

MODEL = ReadModel("agents", lock_rank=0)


class AgentWritten(Change, tag="agent"):
    id: str
    project: str
    data: Any
