"""The run lifecycle as pure decide/evolve: every transition and every refusal, no I/O."""

from __future__ import annotations

import pytest

from events.types import (
    FunctionCall, FunctionCallBody, ToolCallArgumentsAppended, ToolCallsExecuted,
    MessageCompleted, MessageCreated, MessageDeleted, MessageIncomplete, MessageTextAppended, RunCancelled,
    RunCancelling, RunCompleted, RunCreated, RunExpired, RunFailed, RunIncomplete, RunRequeued,
    RunRequiredAction, RunStepCompleted, RunStepCreated, RunStepEnded, RunUpdated, TextPart,
    TextValue, ThreadCreated, ToolOutputsSubmitted,
)
from service.domain import run as runs
from service.domain import thread
from service.domain.facts import RunStatus
from service.domain.messages import NewMessage
from service.domain.errors import InvalidRequest, NotFound

T, P, R = "thread_1", "proj", "run_1"
USAGE = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
CALLS = [FunctionCall(id="call_a", function=FunctionCallBody(name="f", arguments="{}")),
         FunctionCall(id="call_b", function=FunctionCallBody(name="g", arguments="{}"))]
RAN = FunctionCall(id="call_s", function=FunctionCallBody(name="clock", arguments="{}", output="12:00"))


def fold(state, events):
    for e in events:
        state = thread.evolve(state, e)
    return state


def create_run(run_id=R, expires_at=1000, messages=()):
    return runs.CreateRun(project=P, run_id=run_id, at=1, expires_at=expires_at,
                          settings=runs.RunSettings(assistant_id="asst_1", model="m", instructions=""),
                          messages=list(messages))


def open_reply(mid="msg_r", step_id="step_m"):
    return runs.OpenMessage(R, step_id, mid, 2, "asst_1")


def new_message(mid="msg_u"):
    return NewMessage(message_id=mid, role="user", content=[])


def step(state, cmd):
    """decide, then fold: the state after the command and the events it made."""
    events = thread.decide(state, cmd)
    return fold(state, events), events


@pytest.fixture
def queued():
    base = fold(thread.ThreadState(T), [ThreadCreated(thread_id=T, project=P, created_at=0)])
    state, _ = step(base, create_run())
    return state


@pytest.fixture
def in_progress(queued):
    return step(queued, runs.StartRun(R, 2))[0]


@pytest.fixture
def writing(in_progress):
    return step(in_progress, open_reply())[0]


@pytest.fixture
def requires_action(in_progress):
    return step(in_progress, runs.RequestToolCalls(R, "step_t", CALLS, 3, USAGE))[0]


def types(events):
    return [type(e).__name__ for e in events]


class TestCreating:
    def test_create_queues_the_run_after_its_additional_messages(self):
        base = fold(thread.ThreadState(T), [ThreadCreated(thread_id=T, project=P, created_at=0)])
        state, events = step(base, create_run(messages=[new_message("msg_x")]))
        assert types(events) == ["MessageCreated", "RunCreated"]
        assert events[0] == MessageCreated(message_id="msg_x", thread_id=T, created_at=1, role="user", content=[])
        assert events[1] == RunCreated(run_id=R, thread_id=T, assistant_id="asst_1", created_at=1, expires_at=1000,
                                       model="m", instructions="")
        assert state.active_run == runs.ActiveRun(R, "queued", 1000) and state.message_count == 1

    def test_a_second_run_and_new_messages_are_refused_while_one_is_active(self, queued):
        for state in (queued, step(queued, runs.StartRun(R, 2))[0]):
            with pytest.raises(InvalidRequest, match=f"Thread {T} already has an active run {R}."):
                thread.decide(state, create_run("run_2"))
            with pytest.raises(InvalidRequest, match=f"Can't add messages to {T} while a run {R} is active."):
                thread.decide(state, thread.AddMessage(P, 2, new_message()))

    def test_runs_on_a_missing_or_foreign_thread_are_not_found(self, queued):
        with pytest.raises(NotFound):
            thread.decide(thread.ThreadState(T), create_run())
        with pytest.raises(NotFound):
            thread.decide(queued, runs.CancelRun("other", R, 5))


class TestEngineSteps:
    def test_a_single_turn_run(self, queued):
        state, events = step(queued, runs.StartRun(R, 2))
        assert types(events) == ["RunStarted"] and state.active_run.status == "in_progress"
        state, events = step(state, open_reply())
        assert types(events) == ["RunStepCreated", "MessageCreated"]
        assert events[1] == MessageCreated(message_id="msg_r", thread_id=T, created_at=2, role="assistant", content=[],
                                           assistant_id="asst_1", run_id=R, status="in_progress")
        assert (state.active_run.step_id, state.active_run.message_id) == ("step_m", "msg_r")
        state, events = step(state, runs.AppendText(R, "msg_r", 0, "Hel"))
        assert events == [MessageTextAppended(message_id="msg_r", run_id=R, index=0, text="Hel")]
        content = [TextPart(TextValue("Hello"))]
        state, events = step(state, runs.CloseMessage(R, content, 4, USAGE))
        assert types(events) == ["MessageCompleted", "RunStepCompleted"]
        assert state.active_run.message_id is None and state.active_run.step_id is None
        state, events = step(state, runs.FinishRun(R, 5, "completed", USAGE))
        assert events == [RunCompleted(run_id=R, completed_at=5, usage=USAGE)] and state.active_run is None

    def test_start_only_from_queued_and_text_only_into_the_open_reply(self, writing):
        assert thread.decide(writing, runs.StartRun(R, 3)) == []
        assert thread.decide(writing, runs.AppendText(R, "msg_other", 0, "x")) == []
        assert thread.decide(writing, runs.AppendText(R, "msg_r", 0, "")) == []
        assert thread.decide(writing, open_reply("msg_2", "step_2")) == []

    def test_commands_for_another_or_ended_run_decide_nothing(self, writing):
        for cmd in (runs.StartRun("run_2", 3), runs.AppendText("run_2", "msg_r", 0, "x"),
                    runs.FinishRun("run_2", 3, "completed", USAGE), runs.ExpireRun("run_2", 9999)):
            assert thread.decide(writing, cmd) == []
        ended = step(writing, runs.FinishRun(R, 5, "failed", USAGE))[0]
        assert ended.active_run is None
        assert thread.decide(ended, runs.AppendText(R, "msg_r", 0, "late")) == []

    def test_tool_calls_then_outputs_requeue_the_run(self, requires_action):
        active = requires_action.active_run
        assert active.status == "requires_action" and active.tool_calls == CALLS and active.step_id == "step_t"
        outputs = [{"tool_call_id": "call_b", "output": "B"}, {"tool_call_id": "call_a", "output": "A"}]
        state, events = step(requires_action, runs.SubmitToolOutputs(P, R, outputs, 4))
        (submitted,) = events
        assert isinstance(submitted, ToolOutputsSubmitted) and submitted.step_id == "step_t"
        assert [c.function.output for c in submitted.tool_calls] == ["A", "B"]
        assert state.active_run == runs.ActiveRun(R, "queued", 1000)
        assert types(step(state, runs.StartRun(R, 5))[1]) == ["RunStarted"]

    def test_calls_the_server_ran_complete_the_step_and_the_run_goes_on(self, in_progress):
        opened = step(in_progress, runs.OpenToolCalls(R, "step_t", 3))[0]
        state, events = step(opened, runs.RequestToolCalls(R, "step_t", [RAN], 4, USAGE, waiting=[]))
        (executed,) = events
        assert isinstance(executed, ToolCallsExecuted) and executed.tool_calls == [RAN] and executed.usage == USAGE
        assert state.active_run.status == "in_progress" and state.active_run.step_id is None
        # The next turn writes its reply: the run was not parked for the client.
        assert types(step(state, open_reply())[1]) == ["RunStepCreated", "MessageCreated"]

    def test_a_step_with_calls_of_both_kinds_waits_only_for_the_clients(self, in_progress):
        opened = step(in_progress, runs.OpenToolCalls(R, "step_t", 3))[0]
        state, (required,) = step(opened, runs.RequestToolCalls(R, "step_t", [CALLS[0], RAN, CALLS[1]], 4, USAGE,
                                                                waiting=["call_a", "call_b"]))
        assert isinstance(required, RunRequiredAction) and required.tool_calls == CALLS
        assert required.step_calls == [CALLS[0], RAN, CALLS[1]]
        outputs = [{"tool_call_id": "call_a", "output": "A"}, {"tool_call_id": "call_b", "output": "B"}]
        state, (submitted,) = step(state, runs.SubmitToolOutputs(P, R, outputs, 5))
        # The step completes with every call in the model's order, the server's result kept.
        assert [(c.id, c.function.output) for c in submitted.tool_calls] == [
            ("call_a", "A"), ("call_s", "12:00"), ("call_b", "B")]
        assert state.active_run == runs.ActiveRun(R, "queued", 1000, requeues=0)

    @pytest.mark.parametrize("outputs, message", [
        ([{"tool_call_id": "call_a", "output": "A"}], "All outputs must be submitted in a single request"),
        ([{"tool_call_id": "call_a", "output": "A"}, {"tool_call_id": "call_b", "output": "B"},
          {"tool_call_id": "call_x", "output": "X"}], "No tool call with id 'call_x'"),
        ([{"tool_call_id": "call_a", "output": "A"}, {"tool_call_id": "call_a", "output": "A"},
          {"tool_call_id": "call_b", "output": "B"}], "more than once"),
    ])
    def test_bad_outputs_are_refused(self, requires_action, outputs, message):
        with pytest.raises(InvalidRequest, match=message):
            thread.decide(requires_action, runs.SubmitToolOutputs(P, R, outputs, 4))

    def test_outputs_only_in_requires_action(self, in_progress):
        with pytest.raises(InvalidRequest, match='Runs in status "in_progress" do not accept tool outputs.'):
            thread.decide(in_progress, runs.SubmitToolOutputs(P, R, [], 4))
        with pytest.raises(InvalidRequest, match='Runs in status "completed" do not accept tool outputs.'):
            thread.decide(in_progress, runs.SubmitToolOutputs(P, "run_old", [], 4), {RunStatus("run_old"): "completed"})
        with pytest.raises(NotFound):
            thread.decide(in_progress, runs.SubmitToolOutputs(P, "run_none", [], 4))

    def test_incomplete_keeps_the_partial_reply(self, writing):
        partial = [TextPart(TextValue("Hal"))]
        state, events = step(writing, runs.FinishRun(R, 5, "incomplete", USAGE, reason="max_completion_tokens",
                                                     content=partial))
        assert events[0] == MessageIncomplete(message_id="msg_r", incomplete_at=5, reason="max_tokens", content=partial)
        assert types(events) == ["MessageIncomplete", "RunStepCompleted", "RunIncomplete"]
        assert events[-1].reason == "max_completion_tokens" and state.active_run is None

    def test_failure_ends_the_open_step_and_reply(self, writing):
        error = {"code": "server_error", "message": "boom"}
        _, events = step(writing, runs.FinishRun(R, 5, "failed", USAGE, last_error=error))
        assert types(events) == ["MessageIncomplete", "RunStepEnded", "RunFailed"]
        assert events[0].reason == "run_failed" and events[1].status == "failed" and events[2].last_error == error


class TestCancelling:
    def test_cancel_while_executing_waits_for_the_engine(self, writing):
        state, events = step(writing, runs.CancelRun(P, R, 5))
        assert events == [RunCancelling(run_id=R, at=5)] and state.active_run.status == "cancelling"
        assert thread.decide(state, runs.CancelRun(P, R, 6)) == []      # idempotent
        assert thread.decide(state, runs.AppendText(R, "msg_r", 0, "x")) == []
        state, events = step(state, runs.FinishRun(R, 7, "completed", USAGE))            # whatever it says
        assert types(events) == ["MessageIncomplete", "RunStepEnded", "RunCancelled"]
        assert events[0].reason == "run_cancelled" and events[1].status == "cancelled"
        assert state.active_run is None

    @pytest.mark.parametrize("fixture", ["queued", "requires_action"])
    def test_cancel_with_nothing_executing_is_immediate(self, fixture, request):
        state, events = step(request.getfixturevalue(fixture), runs.CancelRun(P, R, 5))
        assert types(events)[0] == "RunCancelling" and types(events)[-1] == "RunCancelled"
        assert state.active_run is None

    def test_cancel_of_a_finished_run_is_refused_with_its_status(self, queued):
        with pytest.raises(InvalidRequest, match="Cannot cancel run with status 'completed'."):
            thread.decide(queued, runs.CancelRun(P, "run_old", 5), {RunStatus("run_old"): "completed"})
        with pytest.raises(NotFound):
            thread.decide(queued, runs.CancelRun(P, "run_none", 5))


class TestExpiry:
    def test_not_before_expires_at(self, requires_action):
        assert thread.decide(requires_action, runs.ExpireRun(R, 999)) == []

    def test_requires_action_expires_with_its_step(self, requires_action):
        state, events = step(requires_action, runs.ExpireRun(R, 1000))
        assert events == [RunStepEnded(step_id="step_t", run_id=R, at=1000, status="expired"),
                          RunExpired(run_id=R, expired_at=1000)]
        assert state.active_run is None

    def test_a_reply_in_progress_ends_incomplete(self, writing):
        _, events = step(writing, runs.ExpireRun(R, 1001))
        assert types(events) == ["MessageIncomplete", "RunStepEnded", "RunExpired"]
        assert events[0].reason == "run_expired"

    def test_a_reply_in_progress_keeps_the_text_it_streamed(self, writing):
        text = [TextPart(TextValue("half an ans"))]
        _, events = step(writing, runs.ExpireRun(R, 1001, content=text))
        assert events[0].content == text


class TestRecovery:
    def test_an_interrupted_turn_is_redone_without_its_partial_reply(self, writing):
        state, events = step(writing, runs.RequeueRun(R, 5, "its process stopped"))
        assert events == [MessageDeleted(message_id="msg_r"),
                          RunStepEnded(step_id="step_m", run_id=R, at=5, status="cancelled"),
                          RunRequeued(run_id=R, at=5, reason="its process stopped")]
        assert state.active_run.status == "queued" and state.active_run.requeues == 1
        assert state.message_count == writing.message_count - 1

    def test_queued_and_waiting_runs_need_no_requeue(self, queued, requires_action):
        assert thread.decide(queued, runs.RequeueRun(R, 5, "x")) == []
        assert thread.decide(requires_action, runs.RequeueRun(R, 5, "x")) == []

    def test_a_cancelling_run_is_cancelled(self, writing):
        cancelling = step(writing, runs.CancelRun(P, R, 5))[0]
        assert types(thread.decide(cancelling, runs.RequeueRun(R, 6, "x")))[-1] == "RunCancelled"

    def test_a_run_that_keeps_dying_fails(self, in_progress):
        state = in_progress
        for _ in range(runs.MAX_REQUEUES):
            state = step(state, runs.RequeueRun(R, 5, "crash"))[0]
            state = step(state, runs.StartRun(R, 6))[0]
        _, events = step(state, runs.RequeueRun(R, 7, "crash"))
        assert isinstance(events[-1], RunFailed) and events[-1].last_error["code"] == "server_error"


def test_update_needs_a_known_run(queued):
    assert thread.decide(queued, runs.UpdateRun(P, R, {"a": "b"})) == [RunUpdated(run_id=R, metadata={"a": "b"})]
    assert thread.decide(queued, runs.UpdateRun(P, "run_old", {}), {RunStatus("run_old"): "completed"}) == [
        RunUpdated(run_id="run_old", metadata={})]
    with pytest.raises(NotFound):
        thread.decide(queued, runs.UpdateRun(P, "run_none", {}))


def test_every_ending_unlocks_the_thread(writing):
    endings = [RunCompleted(run_id=R, completed_at=1, usage=USAGE), RunIncomplete(run_id=R, at=1,
               reason="max_prompt_tokens", usage=USAGE), RunFailed(run_id=R, failed_at=1, last_error={}),
               RunCancelled(run_id=R, cancelled_at=1), RunExpired(run_id=R, expired_at=1)]
    for ending in endings:
        state = thread.evolve(writing, ending)
        assert state.active_run is None
        assert thread.decide(state, thread.AddMessage(P, 2, new_message("msg_new"))) != []


def test_snapshot_roundtrip_keeps_the_active_run(requires_action):
    import msgspec
    encoded = msgspec.json.encode(requires_action)
    assert msgspec.json.decode(encoded, type=thread.ThreadState) == requires_action


def test_events_in_a_completed_message_fold_to_the_same_count(writing):
    done = fold(writing, [MessageCompleted(message_id="msg_r", completed_at=3, content=[]),
                          RunStepCompleted(step_id="step_m", run_id=R, completed_at=3)])
    assert done.message_count == writing.message_count and done.active_run.message_id is None


def test_required_action_event_carries_the_calls(in_progress):
    _, events = step(in_progress, runs.RequestToolCalls(R, "step_t", CALLS, 3, USAGE))
    # The step is in progress until the outputs come: its usage is not on it yet.
    assert events[0] == RunStepCreated(step_id="step_t", run_id=R, created_at=3, type="tool_calls",
                                       tool_calls=CALLS, usage=None)
    assert events[1] == RunRequiredAction(run_id=R, step_id="step_t", tool_calls=CALLS, usage=USAGE)


def test_a_tool_step_opens_as_the_model_begins_and_gets_its_usage_when_it_completes(in_progress):
    state, opened = step(in_progress, runs.OpenToolCalls(R, "step_s", 3))
    assert opened == [RunStepCreated(step_id="step_s", run_id=R, created_at=3, type="tool_calls")]
    assert state.active_run.step_id == "step_s"
    state, pieces = step(state, runs.AppendToolCallArguments(R, "step_s", [
        {"index": 0, "call_id": "call_a", "name": "f", "arguments": '{"ci'}, {"index": 0, "arguments": 'ty": 1}'}]))
    assert pieces == [ToolCallArgumentsAppended(run_id=R, step_id="step_s", index=0, arguments='{"ci',
                                                call_id="call_a", name="f"),
                      ToolCallArgumentsAppended(run_id=R, step_id="step_s", index=0, arguments='ty": 1}')]
    assert step(state, runs.AppendToolCallArguments(R, "step_other", [{"index": 0, "arguments": "x"}]))[1] == []
    state, required = step(state, runs.RequestToolCalls(R, "step_s", CALLS, 4, USAGE))
    assert required == [RunRequiredAction(run_id=R, step_id="step_s", tool_calls=CALLS, usage=USAGE)]
    outputs = [{"tool_call_id": c.id, "output": "ok"} for c in CALLS]
    _, submitted = step(state, runs.SubmitToolOutputs("proj", R, outputs, 5))
    assert submitted[0].usage == USAGE and submitted[0].step_id == "step_s"


def test_a_run_takes_what_the_request_gives_else_the_assistants_settings_else_the_defaults():
    assistant = {"model": "gpt-4o", "instructions": "Be terse.", "tools": [{"type": "function"}],
                 "temperature": 0.0, "top_p": 0.5, "response_format": {"type": "json_object"},
                 "reasoning_effort": "low"}
    ids = dict(truncation={"type": "auto", "last_messages": None})
    inherited = runs.run_settings(assistant, {"assistant_id": "a1", "model": None, "temperature": None}, **ids)
    assert (inherited.model, inherited.instructions, inherited.tools, inherited.temperature, inherited.top_p,
            inherited.response_format, inherited.reasoning_effort) == (
        "gpt-4o", "Be terse.", [{"type": "function"}], 0.0, 0.5, {"type": "json_object"}, "low")
    assert (inherited.tool_choice, inherited.parallel_tool_calls, inherited.metadata) == ("auto", True, {})
    given = runs.run_settings(assistant, {"assistant_id": "a1", "model": "o3", "instructions": "", "tools": [],
                                          "temperature": 1.5, "tool_choice": "none", "parallel_tool_calls": False,
                                          "reasoning_effort": "high", "metadata": {"k": "v"}},
                              additional_instructions="Answer in French.", **ids)
    assert (given.model, given.instructions, given.tools, given.temperature, given.tool_choice,
            given.parallel_tool_calls, given.reasoning_effort, given.metadata) == (
        "o3", "Answer in French.", [], 1.5, "none", False, "high", {"k": "v"})
    appended = runs.run_settings(assistant, {"assistant_id": "a1"}, additional_instructions="Cite.", **ids)
    assert appended.instructions == "Be terse.\n\nCite." and appended.assistant_id == "a1"
    bare = runs.run_settings({"model": "m"}, {"assistant_id": "a1"}, **ids)
    assert (bare.instructions, bare.tools, bare.response_format, bare.temperature) == ("", [], "auto", None)


def test_a_command_on_a_past_run_asks_for_its_status_and_one_on_the_active_run_does_not(queued):
    assert thread.needs(queued, runs.CancelRun(P, R, 5)) == ()
    assert thread.needs(queued, runs.UpdateRun(P, "run_old", {})) == (RunStatus("run_old"),)
    assert thread.needs(queued, runs.SubmitToolOutputs(P, "run_old", [], 4)) == (RunStatus("run_old"),)
    assert thread.needs(queued, thread.AddMessage(P, 2, new_message())) == ()
