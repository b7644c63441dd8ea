"""Server-sent event frames from a thread's log: the run, step and message events of §4.

Pure: a `FrameView` folds recorded events into the objects they describe (with the projector's own
changes, so a frame shows exactly what the API would have shown at that point) and turns each event
into the frames a client expects. Every frame has its own `id`, so a client resumes with
`Last-Event-ID` after any frame and misses nothing: the last frame of the event at version `v` is
`v` (so a plain version means "after that whole event"), its earlier frames `v.1`, `v.2`, …. Objects created before the first event a
view sees are seeded from the read model by the shell (see `FrameView.missing`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from events.store import RecordedEvent
from events.types import (
    Event, MessageCreated, MessageDeleted, MessageTextAppended, RunCreated, RunRequiredAction, RunStepCreated,
    RunStepEnded, ThreadCreated, ThreadDeleted, ThreadErased, ThreadUpdated, ToolCall, ToolCallArgumentsAppended,
    ToolCallsExecuted,
)
from projections.memory import ThreadModels
from projections.objects import thread_from

TERMINAL = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
_encoder = msgspec.json.Encoder()

@dataclass(frozen=True, slots=True)
class Frame:
    id: str | None
    event: str
    data: Any

    def encode(self) -> bytes:
        """LF framing, one event line and one single-line data line: the form both SDK parsers read."""
        data = self.data if isinstance(self.data, bytes) else _encoder.encode(self.data)
        head = f"id: {self.id}\nevent: {self.event}\ndata: ".encode() if self.id is not None else \
            f"event: {self.event}\ndata: ".encode()
        return head + data + b"\n\n"


def frame_id(version: int, k: int, count: int) -> str:
    """The id of the k-th (from 1) of an event's `count` frames: `version.k`, the last one `version`."""
    return str(version) if k == count else f"{version}.{k}"


DONE = Frame(None, "done", b"[DONE]")
KEEPALIVE = Frame(None, "ping", b"{}")   # a named event: azure-ai-agents refuses ':' comments


# Beyond §4.2: resumable streams show them, the SDK streams leave them out (openai builds a typed
# event from every `thread.*` name it receives).
_NOT_FOR_SDKS = frozenset({"thread.updated", "thread.deleted", "thread.erased", "thread.message.updated", "thread.message.deleted",
                           "thread.run.updated"})


def _plain(obj: Any) -> dict:
    return msgspec.to_builtins(obj)


class FrameView:
    """The objects of one thread's runs as of the last event folded in, and the frames each event makes."""

    def __init__(self, run_id: str | None = None, *, include_thread_created: bool = False, sdk: bool = False):
        self.run_id = run_id                 # None: every event of the thread
        self.include_thread_created = include_thread_created
        self.sdk = sdk                       # only the event names the SDKs know (§4.2)
        self.model = ThreadModels()
        self.runs, self.steps, self.messages = self.model.runs, self.model.steps, self.model.messages
        self.run_status: str | None = None

    # -- seeding objects that began before the events we see --------------------------------------

    def missing(self, events: list[RecordedEvent]) -> dict[str, set[str]]:
        """Ids the events refer to that the view has not seen created: the shell loads them."""
        want: dict[str, set[str]] = {"runs": set(), "steps": set(), "messages": set()}
        for r in events:
            e = r.event
            run_id = getattr(e, "run_id", None)
            if run_id and not isinstance(e, RunCreated) and run_id not in self.runs:
                want["runs"].add(run_id)
            step_id = getattr(e, "step_id", None)
            if step_id and not isinstance(e, RunStepCreated) and step_id not in self.steps:
                want["steps"].add(step_id)
            message_id = getattr(e, "message_id", None)
            if message_id and not isinstance(e, MessageCreated) and message_id not in self.messages:
                want["messages"].add(message_id)
        return want

    def seed(self, kind: str, obj: dict) -> None:
        getattr(self, kind)[obj["id"]] = obj

    # -- folding --------------------------------------------------------------------------------

    def frames(self, recorded: RecordedEvent, after_frame: int = 0) -> list[Frame]:
        """Fold one event in; the frames it makes for this view (none if it is not about our run),
        without its first `after_frame` frames (a client resuming after frame `v.k` has them)."""
        e = recorded.event
        before = self._belongs(e)
        self.model.apply(e, recorded.version)
        if not (before or self._belongs(e)):
            return []
        named = self._named(e)
        # Numbered over all of the event's frames, before the SDK filter: every view gives a frame the same id.
        return [Frame(frame_id(recorded.version, k, len(named)), name, data)
                for k, (name, data) in enumerate(named, 1)
                if k > after_frame and (not self.sdk or name not in _NOT_FOR_SDKS)]

    def _belongs(self, e: Event) -> bool:
        if self.run_id is None:
            return True
        if isinstance(e, ThreadCreated):
            return self.include_thread_created
        run_id = getattr(e, "run_id", None)
        if run_id is not None:
            return run_id == self.run_id
        message_id = getattr(e, "message_id", None)
        if message_id is not None:
            message = self.messages.get(message_id)
            if message is not None:
                return message.get("run_id") == self.run_id
            # A message deleted before this view saw it created is gone from the read model, so
            # it cannot be seeded: the partial reply of a turn redone after a crash, whose deletion
            # a client resuming after it must still be told. Its step (seeded: the same commit
            # ends it) still names it.
            return any(s.get("run_id") == self.run_id and
                       ((s.get("step_details") or {}).get("message_creation") or {}).get("message_id") == message_id
                       for s in self.steps.values())
        return False

    def _named(self, e: Event) -> list[tuple[str, Any]]:
        match e:
            case ThreadCreated():
                return [("thread.created", _plain(thread_from(e)))]
            case ThreadUpdated():
                return [("thread.updated", {"id": e.thread_id, **_plain(e)})]
            case ThreadErased():
                return [("thread.erased", {"id": e.thread_id, "object": "thread.erased", "erased_at": e.erased_at})]
            case ThreadDeleted():
                return [("thread.deleted", {"id": e.thread_id, "object": "thread.deleted", "deleted": True})]
            case RunStepCreated():
                step = self.steps[e.step_id]
                if e.type == "tool_calls" and e.tool_calls:     # calls given whole (older logs)
                    # Created with no calls, then the calls as a delta: the order openai's handler needs.
                    empty = {**step, "step_details": {"type": "tool_calls", "tool_calls": []}}
                    return [("thread.run.step.created", empty), ("thread.run.step.in_progress", empty),
                            _calls_delta(e.step_id, list(enumerate(e.tool_calls)))]
                return [("thread.run.step.created", step), ("thread.run.step.in_progress", step)]
            case MessageCreated():
                message = self.messages[e.message_id]
                if e.status == "in_progress":
                    return [("thread.message.created", message), ("thread.message.in_progress", message)]
                return [("thread.message.created", message), ("thread.message.completed", message)]
            case ToolCallArgumentsAppended():
                return _tool_call_deltas(e)
            case MessageTextAppended():
                return [("thread.message.delta", {"id": e.message_id, "object": "thread.message.delta", "delta": {
                    "content": [{"index": e.index, "type": "text", "text": {"value": e.text, "annotations": []}}]}})]
            case MessageDeleted():
                return [("thread.message.deleted", {"id": e.message_id, "object": "thread.message.deleted",
                                                    "deleted": True})]
            case RunStepEnded():
                return [(f"thread.run.step.{e.status}", self.steps.get(e.step_id) or {"id": e.step_id})]
            case RunRequiredAction(step_calls=step_calls) if step_calls:
                # The calls the server ran were not streamed as the model wrote them: they come now.
                waiting = {c.id for c in e.tool_calls}
                ran = [(i, c) for i, c in enumerate(step_calls) if c.id not in waiting]
                return [_calls_delta(e.step_id, ran), *self._objects(e)]
            case ToolCallsExecuted():
                return [_calls_delta(e.step_id, list(enumerate(e.tool_calls))), *self._objects(e)]
        return self._objects(e)

    def _objects(self, e: Event) -> list[tuple[str, Any]]:
        """The frames an event declares, each with the run, step or message it names (deltas are
        built above: they carry what changed, not the object)."""
        out: list[tuple[str, Any]] = []
        for name in e.frames:
            if name.endswith(".delta"):
                continue
            if name.startswith("thread.run.step."):
                out.append((name, self.steps.get(e.step_id) or {"id": e.step_id}))
            elif name.startswith("thread.run."):
                out.append((name, self._run(e.run_id)))
            elif name.startswith("thread.message."):
                out.append((name, self.messages.get(e.message_id) or {"id": e.message_id}))
        return out

    def _run(self, run_id: str) -> dict:
        run = self.runs.get(run_id) or {"id": run_id}
        if run_id == self.run_id:
            self.run_status = run.get("status")
        return run


def _step_delta(step_id: str, *calls: dict) -> tuple[str, dict]:
    return ("thread.run.step.delta", {"id": step_id, "object": "thread.run.step.delta",
                                      "delta": {"step_details": {"type": "tool_calls", "tool_calls": list(calls)}}})


def _calls_delta(step_id: str, calls: list[tuple[int, ToolCall]]) -> tuple[str, dict]:
    """Whole calls as one delta; a function call still waiting shows `output: null`, as OpenAI's do."""
    shown = []
    for index, call in calls:
        plain = {"index": index, **msgspec.to_builtins(call)}
        if call.type == "function":
            plain["function"].setdefault("output", None)
        shown.append(plain)
    return _step_delta(step_id, *shown)


def _tool_call_deltas(e: ToolCallArgumentsAppended) -> list[tuple[str, dict]]:
    """A call's first piece announces it (id, name, empty arguments); every piece after is arguments
    only: openai's handler concatenates strings and would double a repeated id or name."""
    frames = []
    if e.call_id is not None:
        frames.append(_step_delta(e.step_id, {"index": e.index, "id": e.call_id, "type": "function", "function": {
            "name": e.name or "", "arguments": "", "output": None}}))
    if e.arguments:
        frames.append(_step_delta(e.step_id, {"index": e.index, "type": "function",
                                              "function": {"arguments": e.arguments}}))
    return frames
