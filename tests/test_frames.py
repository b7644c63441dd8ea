"""The frames of a thread's events come from what each event type declares (events/types.py
`frames`): a whole run, folded through a FrameView, makes the frames the SDKs expect in their order,
every one of them declared by its event, and webhooks deliver every declared frame but deltas.
Pure: no database."""

from __future__ import annotations

from datetime import datetime, timezone

from events.store import EventMetadata, RecordedEvent
from events.types import (
    EVENT_TYPES, FunctionCall, FunctionCallBody, MessageCompleted, MessageCreated, MessageTextAppended,
    RunCompleted, RunCreated, RunRequiredAction, RunStarted, RunStepCompleted, RunStepCreated, TextPart, TextValue,
    ThreadCreated, ToolCallArgumentsAppended, ToolOutputsSubmitted,
)
from service.streams.frames import FrameView
from service.webhooks.payloads import EVENT_TYPES as WEBHOOK_TYPES

T, R = "thread_f", "run_f"
CALL = FunctionCall(id="call_1", function=FunctionCallBody(name="f", arguments="{}"))
RUN = [
    ThreadCreated(thread_id=T, project="p", created_at=1),
    RunCreated(run_id=R, thread_id=T, assistant_id="a", created_at=2, expires_at=99, model="m", instructions=""),
    RunStarted(run_id=R, started_at=3),
    RunStepCreated(step_id="step_t", run_id=R, created_at=4, type="tool_calls"),
    ToolCallArgumentsAppended(run_id=R, step_id="step_t", index=0, arguments="{}", call_id="call_1", name="f"),
    RunRequiredAction(run_id=R, step_id="step_t", tool_calls=[CALL]),
    ToolOutputsSubmitted(run_id=R, step_id="step_t", submitted_at=5, tool_calls=[CALL.with_output("ok")]),
    RunStarted(run_id=R, started_at=6),
    RunStepCreated(step_id="step_m", run_id=R, created_at=7, type="message_creation", message_id="msg_r"),
    MessageCreated(message_id="msg_r", thread_id=T, created_at=7, role="assistant", content=[], run_id=R,
                   status="in_progress"),
    MessageTextAppended(message_id="msg_r", run_id=R, index=0, text="Done."),
    MessageCompleted(message_id="msg_r", completed_at=8, content=[TextPart(TextValue("Done."))]),
    RunStepCompleted(step_id="step_m", run_id=R, completed_at=8),
    RunCompleted(run_id=R, completed_at=8, usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
]


def recorded(events):
    at = datetime.now(timezone.utc)
    return [RecordedEvent(i, f"thread-{T}", i, type(e).__name__, e, EventMetadata(), at)
            for i, e in enumerate(events, 1)]


def test_a_run_makes_the_frames_its_events_declare_in_the_order_the_sdks_expect():
    view = FrameView(R)
    made = [(type(r.event), [f.event for f in view.frames(r)]) for r in recorded(RUN)]
    for kind, names in made:
        assert set(names) <= set(kind.frames), (kind.__name__, names)
    assert [n for _, names in made for n in names] == [
        "thread.run.created", "thread.run.queued", "thread.run.in_progress",
        "thread.run.step.created", "thread.run.step.in_progress", "thread.run.step.delta", "thread.run.step.delta",
        "thread.run.requires_action", "thread.run.step.completed", "thread.run.queued", "thread.run.in_progress",
        "thread.run.step.created", "thread.run.step.in_progress", "thread.message.created",
        "thread.message.in_progress", "thread.message.delta", "thread.message.completed",
        "thread.run.step.completed", "thread.run.completed"]
    again = FrameView(R)
    frames = {f.event: f.data for r in recorded(RUN) for f in again.frames(r)}
    assert frames["thread.run.completed"]["status"] == "completed"     # the run object as of that event
    assert frames["thread.message.completed"]["status"] == "completed"


def test_webhooks_deliver_every_declared_frame_but_deltas():
    declared = {n for cls in EVENT_TYPES.values() for n in cls.frames}
    assert set(WEBHOOK_TYPES) == {n for n in declared if not n.endswith(".delta")}
    assert {"thread.run.requires_action", "thread.run.step.completed", "thread.message.completed",
            "thread.erased"} <= set(WEBHOOK_TYPES)
