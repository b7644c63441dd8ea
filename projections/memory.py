"""A thread's read models folded in memory from its events, with the projector's own changes.

The SQL read models answer "now"; this answers "as of version N" (audit, point-in-time reads) and
gives stream frames the objects exactly as they were at each event.
"""

from __future__ import annotations

from typing import Any

import msgspec

from events.types import Event
from projections.projector import read_model_changes


def _plain(obj: Any) -> dict:
    return obj if isinstance(obj, dict) else msgspec.to_builtins(obj)


class ThreadModels:
    def __init__(self) -> None:
        self.thread: dict | None = None
        self.messages: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.steps: dict[str, dict] = {}

    def apply(self, event: Event, version: int) -> None:
        for change in read_model_changes([event], [version]):
            kind, id_ = change[0], change[1]
            match kind:
                case "thread":
                    self.thread = _plain(change[3])
                case "thread.merge":
                    if self.thread is not None:
                        self.thread = {**self.thread, **_plain(change[2])}
                case "thread.delete":
                    self.thread = None
                    self.messages.clear()
                    self.runs.clear()
                    self.steps.clear()
                case "message":
                    self.messages[id_] = _plain(change[4])
                case "run":
                    self.runs[id_] = _plain(change[4])
                case "step":
                    step = _plain(change[3])
                    run = self.runs.get(change[2]) or {}
                    self.steps[id_] = {**step, "thread_id": run.get("thread_id", ""),
                                       "assistant_id": run.get("assistant_id")}
                case "message.delete":
                    self.messages.pop(id_, None)
                case "message.merge" | "run.merge" | "step.merge":
                    table = {"message": self.messages, "run": self.runs, "step": self.steps}[kind.split(".")[0]]
                    if id_ in table:
                        table[id_] = {**table[id_], **_plain(change[2])}

    def sorted_messages(self) -> list[dict]:
        return [self.messages[k] for k in sorted(self.messages)]
