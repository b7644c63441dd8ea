"""Read-model changes: what an event does to the read models, as a tagged union with named fields.

The projector makes them (pure), `apply_read_models` writes them in the append's own statement
(projections/sql/functions/apply_read_models.sql reads the same names), and the in-memory models
fold them (projections/memory.py). A new row's type lives in its read model's module; merging into
a row and deleting one are the same for every read model.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Table = Literal["agents", "threads", "messages", "runs", "run_steps", "files"]


class Change(msgspec.Struct, frozen=True, tag_field="kind"):
    """Base of every change; `kind` names it in the JSON."""


class Merged(Change, tag="merge"):
    """Keys set in an existing row (the ones an *Updated event carries, a status change, ...)."""
    table: Table
    id: str
    patch: dict[str, Any]


class Deleted(Change, tag="delete"):
    """A row gone; a thread takes its messages, runs and steps with it."""
    table: Table
    id: str
