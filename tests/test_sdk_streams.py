"""Streaming runs through the real, unmodified SDKs, against `threadline serve` in a subprocess:
openai 3.52 `client.beta.threads.runs.stream` / `create_and_run_stream` / `submit_tool_outputs_stream`
with (Async)AssistantEventHandler, and azure-ai-agents 1.1.0 `runs.stream` with (Async)AgentEventHandler,
including its automatic function calls that chain the `submit_tool_outputs` stream into the same handler.

Handlers only record what they see: azure-ai-agents swallows exceptions raised inside callbacks, so
every assertion is made after the stream ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from azure.ai.agents import AgentsClient
from azure.ai.agents.aio import AgentsClient as AsyncAgentsClient
from azure.ai.agents.models import (
    AgentEventHandler, AsyncAgentEventHandler, AsyncFunctionTool, AsyncToolSet, FunctionTool, MessageDeltaChunk,
    MessageRole, RunStep, ThreadMessage, ThreadRun, ToolSet,
)
from openai import AssistantEventHandler, AsyncAssistantEventHandler, AsyncOpenAI, OpenAI

from tests.test_sdk_runs import WEATHER_TOOLS, azure_kwargs, script, weather_and_time

ANSWER = "Sunny in Paris; it is 12:00 CET."
PACE = 0.06      # seconds between a script's words: more than the run's 50 ms text batching, so one delta each


def two_calls_then_text(tmp_path) -> str:
    return script(tmp_path,
                  {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                                  {"name": "get_time", "arguments": {"tz": "CET"}}]},
                  {"text": ANSWER, "chunk_delay": PACE})


@pytest.fixture
def project_key(project):
    """A fresh project and its key (conftest's `project`)."""
    return project


@pytest.fixture
def oa(service, project_key):
    with OpenAI(base_url=f"{service.url}/v1", api_key=project_key[1], max_retries=0) as c:
        yield c


@pytest.fixture
def az(service, project_key):
    with AgentsClient(**azure_kwargs(service.url, *project_key)) as c:
        yield c


# ================================================================ openai

class Recorder:
    """What an openai handler saw (shared by the sync and async handlers)."""

    def _init_record(self) -> None:
        self.events: list[str | None] = []
        self.raw_events: list = []
        self.times: list[float] = []           # when each event arrived (time.monotonic)
        self.deltas: list[str] = []
        self.text_created = 0
        self.text_done: list[str] = []
        self.messages_done: list = []
        self.tool_calls_created: list = []
        self.tool_calls_done: list = []
        self.steps_done: list = []
        self.ended = 0

    def _record(self, event) -> None:
        self.events.append(event.event)
        self.raw_events.append(event)
        self.times.append(time.monotonic())


class OpenAIHandler(AssistantEventHandler, Recorder):
    def __init__(self):
        super().__init__()
        self._init_record()

    def on_event(self, event):
        self._record(event)

    def on_text_created(self, text):
        self.text_created += 1

    def on_text_delta(self, delta, snapshot):
        self.deltas.append(delta.value)

    def on_text_done(self, text):
        self.text_done.append(text.value)

    def on_message_done(self, message):
        self.messages_done.append(message)

    def on_tool_call_created(self, tool_call):
        self.tool_calls_created.append(tool_call)

    def on_tool_call_done(self, tool_call):
        self.tool_calls_done.append(tool_call)

    def on_run_step_done(self, run_step):
        self.steps_done.append(run_step)

    def on_end(self):
        self.ended += 1


class AsyncOpenAIHandler(AsyncAssistantEventHandler, Recorder):
    def __init__(self):
        super().__init__()
        self._init_record()

    async def on_event(self, event):
        self._record(event)

    async def on_text_created(self, text):
        self.text_created += 1

    async def on_text_delta(self, delta, snapshot):
        self.deltas.append(delta.value)

    async def on_text_done(self, text):
        self.text_done.append(text.value)

    async def on_message_done(self, message):
        self.messages_done.append(message)

    async def on_tool_call_created(self, tool_call):
        self.tool_calls_created.append(tool_call)

    async def on_tool_call_done(self, tool_call):
        self.tool_calls_done.append(tool_call)

    async def on_run_step_done(self, run_step):
        self.steps_done.append(run_step)

    async def on_end(self):
        self.ended += 1


TEXT_RUN = ["thread.run.created", "thread.run.queued", "thread.run.in_progress", "thread.run.step.created",
            "thread.run.step.in_progress", "thread.message.created", "thread.message.in_progress"]
TEXT_END = ["thread.message.completed", "thread.run.step.completed", "thread.run.completed"]


def assert_text_stream(handler: Recorder, text: str) -> None:
    """The canonical text sequence of wire-api §4.3, and the text delivered piece by piece."""
    names = handler.events
    assert names[:len(TEXT_RUN)] == TEXT_RUN, names
    assert [n for n in names if n != "thread.message.delta"][-len(TEXT_END):] == TEXT_END, names
    assert len(handler.deltas) > 1 and "".join(handler.deltas) == text
    assert names.count("thread.message.delta") == len(handler.deltas)
    assert handler.text_created == 1 and handler.text_done == [text] and handler.ended == 1


def test_openai_stream_text_arrives_in_deltas_that_join_to_the_final_message(oa, tmp_path):
    text = "The quick brown fox jumps over the lazy dog, twice."
    assistant = oa.beta.assistants.create(model=script(tmp_path, {"text": text, "chunk_delay": PACE}))
    thread = oa.beta.threads.create(messages=[{"role": "user", "content": "tell me"}])
    handler = OpenAIHandler()
    with oa.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=handler) as stream:
        stream.until_done()
    assert stream is handler
    assert_text_stream(handler, text)

    run = handler.get_final_run()
    assert run.status == "completed" and run.thread_id == thread.id and run.assistant_id == assistant.id
    assert run.usage.total_tokens == run.usage.prompt_tokens + run.usage.completion_tokens > 0
    (message,) = handler.get_final_messages()
    assert message.status == "completed" and message.role == "assistant" and message.run_id == run.id
    assert message.content[0].text.value == text and handler.messages_done == [message]
    (step,) = handler.steps_done        # the SDK's own step snapshot stays as created: it ignores step.completed
    assert [s.id for s in handler.get_final_run_steps()] == [step.id]
    assert step.type == "message_creation" and step.status == "completed" and step.usage.total_tokens > 0
    assert step.step_details.message_creation.message_id == message.id
    # what was streamed is what was stored
    assert oa.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "completed"
    stored = oa.beta.threads.messages.list(thread.id).data[0]
    assert stored.id == message.id and stored.content[0].text.value == text


def test_openai_create_and_run_stream_with_the_default_handler(oa, tmp_path):
    words = "a new thread and its first run, streamed"
    assistant = oa.beta.assistants.create(model=script(tmp_path, {"text": words, "chunk_delay": PACE}))
    with oa.beta.threads.create_and_run_stream(assistant_id=assistant.id,
                                               thread={"messages": [{"role": "user", "content": words}]}) as stream:
        pieces = list(stream.text_deltas)          # the default AssistantEventHandler
    assert len(pieces) > 1 and "".join(pieces) == words
    run = stream.get_final_run()
    assert run.status == "completed" and run.thread_id.startswith("thread_")
    assert stream.get_final_messages()[0].content[0].text.value == words

    handler = OpenAIHandler()
    with oa.beta.threads.create_and_run_stream(assistant_id=assistant.id, event_handler=handler,
                                               thread={"messages": [{"role": "user", "content": words}]}) as stream:
        stream.until_done()
    assert handler.events[0] == "thread.created" and handler.events[1:1 + len(TEXT_RUN)] == TEXT_RUN
    created = handler.raw_events[0].data
    assert created.object == "thread" and handler.get_final_run().thread_id == created.id
    assert "".join(handler.deltas) == words
    assert oa.beta.threads.messages.list(created.id).data[0].content[0].text.value == words


def test_openai_stream_to_requires_action_then_submit_tool_outputs_stream(oa, tmp_path):
    assistant = oa.beta.assistants.create(model=two_calls_then_text(tmp_path), tools=WEATHER_TOOLS)
    thread = oa.beta.threads.create(messages=[{"role": "user", "content": "Weather and time in Paris?"}])
    first = OpenAIHandler()
    with oa.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=first) as stream:
        stream.until_done()
    # The calls arrive as deltas while the model writes them: one or more, then requires_action.
    assert first.events[:5] == ["thread.run.created", "thread.run.queued", "thread.run.in_progress",
                                "thread.run.step.created", "thread.run.step.in_progress"]
    assert set(first.events[5:-1]) == {"thread.run.step.delta"} and first.events[-1] == "thread.run.requires_action"
    run = first.get_final_run()
    assert run.status == "requires_action" and run.required_action.type == "submit_tool_outputs"
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == \
        [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]
    assert [(c.id, c.type, c.function.name) for c in first.tool_calls_created] == \
        [(c.id, "function", c.function.name) for c in calls]
    assert [(c.id, c.function.name, c.function.arguments) for c in first.tool_calls_done] == \
        [(c.id, c.function.name, c.function.arguments) for c in calls]
    (step,) = first.get_final_run_steps()
    assert step.type == "tool_calls" and step.status == "in_progress" and first.deltas == []

    second = OpenAIHandler()
    outputs = {"get_weather": "sunny", "get_time": "12:00"}
    with oa.beta.threads.runs.submit_tool_outputs_stream(
            thread_id=thread.id, run_id=run.id, event_handler=second,
            tool_outputs=[{"tool_call_id": c.id, "output": outputs[c.function.name]} for c in calls]) as stream:
        stream.until_done()
    assert second.events[:3] == ["thread.run.step.completed", "thread.run.queued", "thread.run.in_progress"]
    tool_step = second.steps_done[0]
    assert tool_step.id == step.id and tool_step.status == "completed"
    assert [(c.id, c.function.output) for c in tool_step.step_details.tool_calls] == \
        [(c.id, outputs[c.function.name]) for c in calls]
    assert "".join(second.deltas) == ANSWER and second.text_done == [ANSWER]
    final = second.get_final_run()
    assert final.id == run.id and final.status == "completed" and final.required_action is None
    assert second.get_final_messages()[0].content[0].text.value == ANSWER
    assert second.events[-1] == "thread.run.completed"


async def test_openai_async_streams_text_and_tool_calls(service, project_key, tmp_path):
    async with AsyncOpenAI(base_url=f"{service.url}/v1", api_key=project_key[1], max_retries=0) as client:
        runs = client.beta.threads.runs
        text = "Async streams deliver every word in order."
        assistant = await client.beta.assistants.create(model=script(tmp_path, {"text": text, "chunk_delay": PACE}))
        thread = await client.beta.threads.create(messages=[{"role": "user", "content": "go"}])
        handler = AsyncOpenAIHandler()
        async with runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=handler) as stream:
            await stream.until_done()
        assert_text_stream(handler, text)
        assert (await handler.get_final_run()).status == "completed"
        assert (await handler.get_final_messages())[0].content[0].text.value == text

        tools = await client.beta.assistants.create(model=two_calls_then_text(tmp_path), tools=WEATHER_TOOLS)
        first = AsyncOpenAIHandler()
        async with client.beta.threads.create_and_run_stream(
                assistant_id=tools.id, event_handler=first,
                thread={"messages": [{"role": "user", "content": "Weather and time?"}]}) as stream:
            await stream.until_done()
        assert first.events[0] == "thread.created" and first.events[-1] == "thread.run.requires_action"
        run = await first.get_final_run()
        calls = run.required_action.submit_tool_outputs.tool_calls
        assert [c.function.name for c in first.tool_calls_done] == [c.function.name for c in calls] == \
            ["get_weather", "get_time"]

        second = AsyncOpenAIHandler()
        async with runs.submit_tool_outputs_stream(
                thread_id=run.thread_id, run_id=run.id, event_handler=second,
                tool_outputs=[{"tool_call_id": c.id, "output": "ok"} for c in calls]) as stream:
            await stream.until_done()
        assert "".join(second.deltas) == ANSWER
        assert (await second.get_final_run()).status == "completed"
        assert (await second.get_final_messages())[0].content[0].text.value == ANSWER


def test_openai_stream_of_a_failing_run_ends_with_thread_run_failed(oa, tmp_path):
    assistant = oa.beta.assistants.create(model=script(tmp_path, {"error": {"code": "server_error",
                                                                            "message": "the model fell over"}}))
    thread = oa.beta.threads.create(messages=[{"role": "user", "content": "hello"}])
    handler = OpenAIHandler()
    with oa.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=handler) as stream:
        stream.until_done()                      # no exception
    assert handler.events[-1] == "thread.run.failed" and "error" not in handler.events
    failed = handler.raw_events[-1].data
    assert failed.status == "failed" and failed.failed_at is not None
    assert (failed.last_error.code, failed.last_error.message) == ("server_error", "the model fell over")
    assert handler.get_final_run() == failed and handler.deltas == [] and handler.ended == 1
    # the thread is unlocked
    oa.beta.threads.messages.create(thread.id, role="user", content="again?")


# ================================================================ azure-ai-agents

class AzureRecorder:
    def _init_record(self) -> None:
        self.deltas: list[str] = []
        self.messages: list[ThreadMessage] = []
        self.runs: list[ThreadRun] = []
        self.steps: list[RunStep] = []
        self.step_deltas = 0
        self.errors: list[str] = []
        self.done = 0
        self.unhandled: list[tuple[str, object, float]] = []     # (event name, data, time.monotonic)
        self.in_progress_at: float | None = None

    def _run(self, run: ThreadRun) -> None:
        self.runs.append(run)
        if run.status == "in_progress" and self.in_progress_at is None:
            self.in_progress_at = time.monotonic()

    def run_statuses(self) -> list[str]:
        return [r.status for r in self.runs]

    def final_text(self) -> str:
        completed = [m for m in self.messages if m.status == "completed"]
        assert len(completed) == 1, [(m.id, m.status) for m in self.messages]
        return completed[0].text_messages[0].text.value


class AzureHandler(AgentEventHandler, AzureRecorder):
    def __init__(self):
        super().__init__()
        self._init_record()

    def on_message_delta(self, delta: MessageDeltaChunk):
        self.deltas.append(delta.text)

    def on_thread_message(self, message: ThreadMessage):
        self.messages.append(message)

    def on_thread_run(self, run: ThreadRun):
        self._run(run)

    def on_run_step(self, step: RunStep):
        self.steps.append(step)

    def on_run_step_delta(self, delta):
        self.step_deltas += 1

    def on_error(self, data: str):
        self.errors.append(data)

    def on_done(self):
        self.done += 1

    def on_unhandled_event(self, event_type: str, event_data):
        self.unhandled.append((event_type, event_data, time.monotonic()))


class AsyncAzureHandler(AsyncAgentEventHandler, AzureRecorder):
    def __init__(self):
        super().__init__()
        self._init_record()

    async def on_message_delta(self, delta: MessageDeltaChunk):
        self.deltas.append(delta.text)

    async def on_thread_message(self, message: ThreadMessage):
        self.messages.append(message)

    async def on_thread_run(self, run: ThreadRun):
        self._run(run)

    async def on_run_step(self, step: RunStep):
        self.steps.append(step)

    async def on_run_step_delta(self, delta):
        self.step_deltas += 1

    async def on_error(self, data: str):
        self.errors.append(data)

    async def on_done(self):
        self.done += 1

    async def on_unhandled_event(self, event_type: str, event_data):
        self.unhandled.append((event_type, event_data, time.monotonic()))


def test_azure_stream_text_from_deltas_equals_the_final_message(az, tmp_path):
    text = "Agents stream their answers word by word."
    agent = az.create_agent(model=script(tmp_path, {"text": text, "chunk_delay": PACE}), name="streamer")
    thread = az.threads.create()
    az.messages.create(thread.id, role=MessageRole.USER, content="stream please")
    with az.runs.stream(thread.id, agent_id=agent.id, event_handler=AzureHandler()) as stream:
        stream.until_done()
    handler: AzureHandler = stream
    assert handler.run_statuses() == ["queued", "queued", "in_progress", "completed"]
    assert all(r.agent_id == agent.id and r.thread_id == thread.id for r in handler.runs)
    assert len(handler.deltas) > 1 and "".join(handler.deltas) == text == handler.final_text()
    assert [m.status for m in handler.messages] == ["in_progress", "in_progress", "completed"]
    assert [(s.type, s.status) for s in handler.steps] == [("message_creation", "in_progress")] * 2 + \
        [("message_creation", "completed")]
    assert handler.done == 1 and handler.errors == [] and handler.unhandled == []
    run = handler.runs[-1]
    assert run.usage.total_tokens > 0 and az.runs.get(thread.id, run.id).status == "completed"
    assert az.messages.get_last_message_text_by_role(thread.id, MessageRole.AGENT).text.value == text


def test_azure_stream_with_auto_function_calls_chains_the_tool_outputs_stream(az, tmp_path):
    called: list[tuple[str, str]] = []
    toolset = ToolSet()
    toolset.add(FunctionTool(set(weather_and_time(called))))
    az.enable_auto_function_calls(toolset)
    agent = az.create_agent(model=two_calls_then_text(tmp_path), name="tools", toolset=toolset)
    thread = az.threads.create()
    az.messages.create(thread.id, role="user", content="Weather and time in Paris?")

    with az.runs.stream(thread.id, agent_id=agent.id, event_handler=AzureHandler()) as stream:
        stream.until_done()
    handler: AzureHandler = stream
    assert sorted(called) == [("get_time", "CET"), ("get_weather", "Paris")]      # each called once
    statuses = handler.run_statuses()
    assert statuses[:4] == ["queued", "queued", "in_progress", "requires_action"], statuses
    assert statuses[-1] == "completed" and statuses.count("requires_action") == 1
    assert len({r.id for r in handler.runs}) == 1
    assert handler.done == 2 and handler.errors == []           # two streams, one handler
    assert "".join(handler.deltas) == ANSWER == handler.final_text()
    assert handler.step_deltas >= 2     # each call announced, then its arguments as the model writes them
    tool_steps = [s for s in handler.steps if s.type == "tool_calls"]
    assert [s.status for s in tool_steps] == ["in_progress", "in_progress", "completed"]
    outputs = {c.function.name: c.function["output"] for c in tool_steps[-1].step_details.tool_calls}
    assert outputs == {"get_weather": '{"weather": "sunny in Paris"}', "get_time": '{"time": "12:00", "tz": "CET"}'}
    assert az.messages.get_last_message_text_by_role(thread.id, MessageRole.AGENT).text.value == ANSWER


def test_azure_stream_of_a_failing_run_shows_failed_in_on_thread_run(az, tmp_path):
    agent = az.create_agent(model=script(tmp_path, {"error": {"code": "rate_limit_exceeded",
                                                             "message": "slow down"}}), name="failing")
    thread = az.threads.create()
    az.messages.create(thread.id, role="user", content="hello")
    with az.runs.stream(thread.id, agent_id=agent.id, event_handler=AzureHandler()) as stream:
        seen = [event_type for event_type, _data, _ret in stream]      # iterating, no exception
    handler: AzureHandler = stream
    assert seen[-2:] == ["thread.run.failed", "done"]
    failed = handler.runs[-1]
    assert failed.status == "failed" and failed.failed_at is not None
    assert (failed.last_error.code, failed.last_error.message) == ("rate_limit_exceeded", "slow down")
    assert handler.errors == [] and handler.deltas == [] and handler.done == 1
    az.messages.create(thread.id, role="user", content="the thread is unlocked")


async def test_azure_async_stream_text_and_auto_function_calls(service, project_key, tmp_path):
    called: list[tuple[str, str]] = []
    sync_weather, get_time = weather_and_time(called)

    async def get_weather(city: str) -> str:
        """Weather for a city.

        :param city: The city.
        :return: The weather.
        """
        return sync_weather(city)      # an async function among the tools, as AsyncToolSet allows

    async with AsyncAgentsClient(**azure_kwargs(service.url, *project_key)) as client:
        text = "Asynchronous agents stream too."
        agent = await client.create_agent(model=script(tmp_path, {"text": text, "chunk_delay": PACE}), name="aio")
        thread = await client.threads.create()
        await client.messages.create(thread.id, role="user", content="go")
        stream = await client.runs.stream(thread.id, agent_id=agent.id, event_handler=AsyncAzureHandler())
        async with stream as handler:
            await handler.until_done()
        assert handler.run_statuses()[-1] == "completed" and handler.done == 1
        assert len(handler.deltas) > 1 and "".join(handler.deltas) == text == handler.final_text()

        toolset = AsyncToolSet()
        toolset.add(AsyncFunctionTool({get_weather, get_time}))
        client.enable_auto_function_calls(toolset)
        agent = await client.create_agent(model=two_calls_then_text(tmp_path), name="aio-tools", toolset=toolset)
        thread = await client.threads.create()
        await client.messages.create(thread.id, role="user", content="Weather and time in Paris?")
        stream = await client.runs.stream(thread.id, agent_id=agent.id, event_handler=AsyncAzureHandler())
        async with stream as handler:
            await handler.until_done()
        assert sorted(called) == [("get_time", "CET"), ("get_weather", "Paris")]
        assert "requires_action" in handler.run_statuses() and handler.run_statuses()[-1] == "completed"
        assert handler.done == 2 and handler.errors == []
        assert "".join(handler.deltas) == ANSWER == handler.final_text()


async def test_azure_async_stream_of_a_failing_run(service, project_key, tmp_path):
    async with AsyncAgentsClient(**azure_kwargs(service.url, *project_key)) as client:
        agent = await client.create_agent(model=script(tmp_path, {"error": {"code": "invalid_prompt",
                                                                           "message": "no"}}), name="f")
        thread = await client.threads.create()
        await client.messages.create(thread.id, role="user", content="hello")
        stream = await client.runs.stream(thread.id, agent_id=agent.id, event_handler=AsyncAzureHandler())
        async with stream as handler:
            await handler.until_done()
        assert handler.run_statuses()[-1] == "failed" and handler.done == 1 and handler.errors == []
        assert (handler.runs[-1].last_error.code, handler.runs[-1].last_error.message) == ("invalid_prompt", "no")


# ================================================================ keep-alive

DEFAULT_KEEPALIVE = 15.0


async def test_both_sdks_ride_out_a_40_second_silence_on_the_default_keepalives(service, project_key, tmp_path):
    """The model is silent for 40 s before its first token: the stream sends `event: ping` every
    15 s (the service default) and neither SDK's parser chokes on it. Both SDKs stream at once."""
    assert "THREADLINE_STREAM_KEEPALIVE_SECONDS" not in os.environ, "the service must run with the default"
    text = "Still here after a long think."
    model = script(tmp_path, {"text": text, "delay": 40, "chunk_delay": PACE})

    async def with_openai() -> AsyncOpenAIHandler:
        async with AsyncOpenAI(base_url=f"{service.url}/v1", api_key=project_key[1], max_retries=0) as client:
            assistant = await client.beta.assistants.create(model=model)
            thread = await client.beta.threads.create(messages=[{"role": "user", "content": "think hard"}])
            handler = AsyncOpenAIHandler()
            async with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id,
                                                       event_handler=handler) as stream:
                await stream.until_done()
            return handler

    async def with_azure() -> AsyncAzureHandler:
        async with AsyncAgentsClient(**azure_kwargs(service.url, *project_key)) as client:
            agent = await client.create_agent(model=model, name="thinker")
            thread = await client.threads.create()
            await client.messages.create(thread.id, role="user", content="think hard")
            handler = AsyncAzureHandler()
            stream = await client.runs.stream(thread.id, agent_id=agent.id, event_handler=handler)
            async with stream:
                await handler.until_done()
            return handler

    started = time.monotonic()
    oa_handler, az_handler = await asyncio.gather(with_openai(), with_azure())
    assert time.monotonic() - started < 60

    # azure: every keep-alive is an unknown event name, handed to on_unhandled_event
    assert [(e, d) for e, d, _ in az_handler.unhandled] == [("ping", "{}")] * len(az_handler.unhandled)
    pings = [t for _, _, t in az_handler.unhandled]
    assert len(pings) >= 2
    gaps = [b - a for a, b in zip([az_handler.in_progress_at] + pings, pings)]
    assert all(DEFAULT_KEEPALIVE - 1.5 < g < DEFAULT_KEEPALIVE + 5 for g in gaps), gaps
    assert az_handler.run_statuses()[-1] == "completed" and az_handler.done == 1 and az_handler.errors == []
    assert "".join(az_handler.deltas) == text == az_handler.final_text()

    # openai 3.52 turns an SSE event whose name is not `thread.*` into an event object whose `event`
    # is None (built from `{}`); AssistantEventHandler passes it to on_event and otherwise ignores it.
    arrivals = list(zip(oa_handler.events, oa_handler.times))
    oa_pings = [t for name, t in arrivals if name is None]
    assert len(oa_pings) >= 2 and all(e.data is None for e in oa_handler.raw_events if e.event is None)
    in_progress = next(t for name, t in arrivals if name == "thread.run.in_progress")
    gaps = [b - a for a, b in zip([in_progress] + oa_pings, oa_pings)]
    assert all(DEFAULT_KEEPALIVE - 1.5 < g < DEFAULT_KEEPALIVE + 5 for g in gaps), gaps
    assert [n for n in oa_handler.events if n is not None][:len(TEXT_RUN)] == TEXT_RUN
    assert "".join(oa_handler.deltas) == text and oa_handler.text_done == [text]
    assert (await oa_handler.get_final_run()).status == "completed"
    assert (await oa_handler.get_final_messages())[0].content[0].text.value == text


LONG_ARGUMENTS = {"city": "Paris", "detail": "hourly forecast for the next three days, in Celsius"}


def test_both_sdks_see_tool_call_arguments_as_the_model_writes_them(oa, az, tmp_path):
    """on_tool_call_delta / on_run_step_delta get the arguments piece by piece while the model streams
    them (they used to come in one delta after the model had finished), and the pieces add up."""
    model = script(tmp_path, {"tool_calls": [{"name": "get_weather", "arguments": LONG_ARGUMENTS}],
                              "chunk_delay": PACE}, {"text": "Done."})
    full = json.dumps(LONG_ARGUMENTS)

    class Collect(AssistantEventHandler):
        def __init__(self):
            super().__init__()
            self.fragments: list[str] = []

        def on_tool_call_delta(self, delta, snapshot):
            if delta.function is not None and delta.function.arguments:
                self.fragments.append(delta.function.arguments)

    assistant = oa.beta.assistants.create(model=model, tools=WEATHER_TOOLS)
    thread = oa.beta.threads.create(messages=[{"role": "user", "content": "Weather?"}])
    handler = Collect()
    with oa.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id, event_handler=handler) as s:
        s.until_done()
    assert len(handler.fragments) > 1 and "".join(handler.fragments) == full
    (step,) = handler.get_final_run_steps()
    assert step.step_details.tool_calls[0].function.arguments == full and step.usage is None   # in progress
    run = handler.get_final_run()
    listed = oa.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data[0]
    assert listed.status == "in_progress" and listed.usage is None
    assert listed.step_details.tool_calls[0].function.arguments == full
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    done = oa.beta.threads.runs.submit_tool_outputs_and_poll(run_id=run.id, thread_id=thread.id,
                                                             tool_outputs=[{"tool_call_id": call.id, "output": "ok"}])
    assert done.status == "completed"
    completed = oa.beta.threads.runs.steps.retrieve(listed.id, thread_id=thread.id, run_id=run.id)
    assert completed.status == "completed" and completed.usage is not None and completed.usage.total_tokens > 0

    from azure.ai.agents.models import AgentEventHandler

    class AzureCollect(AgentEventHandler):
        def __init__(self):
            super().__init__()
            self.fragments: list[str] = []

        def on_run_step_delta(self, delta):
            for call in delta.delta.step_details.tool_calls or []:
                if call.function is not None and call.function.arguments:
                    self.fragments.append(call.function.arguments)

    agent = az.create_agent(model=model, name="streamer", tools=WEATHER_TOOLS)
    az_thread = az.threads.create()
    az.messages.create(az_thread.id, role="user", content="Weather?")
    with az.runs.stream(az_thread.id, agent_id=agent.id, event_handler=AzureCollect()) as stream:
        stream.until_done()
    assert len(stream.fragments) > 1 and "".join(stream.fragments) == full
