"""A thread's read models folded in memory from its events, with the projector's own changes.

The SQL read models answer "now"; this answers "as of version N" (audit, point-in-time reads) and
gives stream frames the objects exactly as they were at each event.
"""

from __future__ import annotations

from typing import Any

import msgspec

from events.types import Event
from projections.changes import Deleted, Merged
from projections.projector import read_model_changes
from projections.read_models.messages import MessageWritten
from projections.read_models.run_steps import StepWritten
from projections.read_models.runs import RunWritten
from projections.read_models.threads import ThreadWritten


def _plain(obj: Any) -> dict:
    return obj if isinstance(obj, dict) else msgspec.to_builtins(obj)


class ThreadModels:
    def __init__(self) -> None:
        self.thread: dict | None = None
        self.messages: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.steps: dict[str, dict] = {}
        # The read models of a thread, by table (the others are not a thread's: agents, files).
        self._rows = {"messages": self.messages, "runs": self.runs, "run_steps": self.steps}

    def apply(self, event: Event, version: int) -> None:
        for change in read_model_changes([event], [version]):
            match change:
                case ThreadWritten(data=data):
                    self.thread = _plain(data)
                case MessageWritten(id=id_, data=data) | RunWritten(id=id_, data=data):
                    rows = self.messages if isinstance(change, MessageWritten) else self.runs
                    rows[id_] = _plain(data)
                case StepWritten(id=id_, run_id=run_id, data=data):
                    run = self.runs.get(run_id) or {}
                    self.steps[id_] = {**_plain(data), "thread_id": run.get("thread_id", ""),
                                       "assistant_id": run.get("assistant_id")}
                case Merged(table="threads", patch=patch):
                    if self.thread is not None:
                        self.thread = {**self.thread, **_plain(patch)}
                case Merged(table=table, id=id_, patch=patch) if table in self._rows:
                    rows = self._rows[table]
                    if id_ in rows:
                        rows[id_] = {**rows[id_], **_plain(patch)}
                case Deleted(table="threads"):
                    self.thread = None
                    for rows in self._rows.values():     # the read models deleted with their thread
                        rows.clear()
                case Deleted(table=table, id=id_) if table in self._rows:
                    self._rows[table].pop(id_, None)

    def sorted_messages(self) -> list[dict]:
        return [self.messages[k] for k in sorted(self.messages)]
