"""The read models: one module each, declaring its table and how it relates to the others. The
rebuild, erasure and the in-memory models derive their lists from these declarations; the
changes each one takes are typed in its module (projections/changes.py has their shared base)."""

from __future__ import annotations

from projections.read_models import agents, files, messages, run_steps, runs, threads
from projections.read_models.base import ReadModel

ALL: tuple[ReadModel, ...] = (agents.MODEL, threads.MODEL, messages.MODEL, runs.MODEL, run_steps.MODEL,
                              files.MODEL)
BY_TABLE = {m.table: m for m in ALL}


def rebuilt() -> tuple[str, ...]:
    """The tables a rebuild makes afresh from the log."""
    return tuple(m.table for m in ALL if m.rebuilt)


def lock_order() -> tuple[str, ...]:
    """The order a rebuild's switch locks the live tables: the order one change's statement locks
    them (a change's target first, then the table it reads), so it rarely waits for an append
    that waits for it."""
    return tuple(m.table for m in sorted(ALL, key=lambda m: m.lock_rank))


def of_thread() -> tuple[str, ...]:
    """The tables that hold a thread's content: gone with the thread (and vacuumed on erasure)."""
    return tuple(m.table for m in ALL if m.table == threads.MODEL.table or m.deleted_with == threads.MODEL.table)
