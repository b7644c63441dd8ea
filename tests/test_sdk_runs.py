"""Runs through the real, unmodified SDKs: azure-ai-agents 1.1.0 (sync and async) and openai 3.52
(`client.beta.threads`, sync and async), against `threadline serve` in a subprocess.

Models are the offline built-ins (`builtin/echo`, `builtin/script:<path>`) or, where what the model
receives matters, the fake OpenAI-compatible server of fake_openai.py named in a THREADLINE_MODELS
file. Polling intervals are small and nothing sleeps a fixed time to wait for a state.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import openai
import pytest
from azure.ai.agents import AgentsClient
from azure.ai.agents.aio import AgentsClient as AsyncAgentsClient
from azure.ai.agents.models import (
    AgentThreadCreationOptions, FunctionTool, MessageRole, RunStatus, ThreadMessageOptions, ToolSet,
)
from azure.core.credentials import AzureKeyCredential
from azure.core.pipeline.policies import AzureKeyCredentialPolicy
from openai import AsyncOpenAI, OpenAI

from service import database
from tests.conftest import ServiceProcess, fresh_database, new_key
from tests.fake_openai import FakeOpenAI, text_reply

POLL = 0.02          # seconds between polls (Azure polling_interval)
POLL_MS = 20         # openai poll_interval_ms


def script(tmp_path, *turns) -> str:
    """A builtin/script model name playing these turns."""
    path = tmp_path / f"script-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps({"turns": list(turns)}))
    return f"builtin/script:{path}"


def wait_until(get, done, timeout: float = 10.0, interval: float = POLL):
    """Poll get() until done(result) holds, as a client would; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"still {value!r} after {timeout} s"
        time.sleep(interval)


async def await_until(get, done, timeout: float = 10.0, interval: float = POLL):
    deadline = time.monotonic() + timeout
    while True:
        value = await get()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"still {value!r} after {timeout} s"
        await asyncio.sleep(interval)


WEATHER_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a time zone.",
                                      "parameters": {"type": "object", "properties": {"tz": {"type": "string"}},
                                                     "required": ["tz"]}}},
]


def two_calls_then_text(tmp_path, text: str = "Sunny in Paris; it is 12:00 CET.") -> str:
    return script(tmp_path,
                  {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                                  {"name": "get_time", "arguments": {"tz": "CET"}}]},
                  {"text": text})


# ================================================================ azure-ai-agents

def azure_kwargs(url: str, project: str, key: str) -> dict:
    return dict(endpoint=f"{url}/api/projects/{project}", credential=AzureKeyCredential("unused"),
                authentication_policy=AzureKeyCredentialPolicy(AzureKeyCredential(key), "Authorization",
                                                               prefix="Bearer"))


@pytest.fixture
def project_key(project):
    """A fresh project and its key (conftest's `project`)."""
    return project


@pytest.fixture
def az(service, project_key):
    with AgentsClient(**azure_kwargs(service.url, *project_key)) as c:
        yield c


def test_azure_create_and_process_echo(az):
    agent = az.create_agent(model="builtin/echo", name="echo", instructions="Repeat.")
    thread = az.threads.create()
    az.messages.create(thread.id, role=MessageRole.USER, content="first words")
    az.messages.create(thread.id, role="user", content="the last user message")

    run = az.runs.create_and_process(thread_id=thread.id, agent_id=agent.id, polling_interval=POLL)
    assert run.status == RunStatus.COMPLETED and run.last_error is None
    assert run.thread_id == thread.id and run.agent_id == agent.id and run.completed_at is not None
    assert run.usage.total_tokens == run.usage.prompt_tokens + run.usage.completion_tokens > 0

    reply = az.messages.get_last_message_text_by_role(thread.id, MessageRole.AGENT)
    assert reply.text.value == "the last user message"
    assert az.runs.get(thread.id, run.id).status == RunStatus.COMPLETED
    assert [r.id for r in az.runs.list(thread.id)] == [run.id]


@pytest.mark.parametrize("mount", ["project", "root"])
def test_azure_create_thread_and_process_run(service, project_key, mount):
    # the documented endpoint .../api/projects/<name>, and the bare server URL (wire-api §1.1)
    kwargs = azure_kwargs(service.url, *project_key)
    if mount == "root":
        kwargs["endpoint"] = service.url
    with AgentsClient(**kwargs) as az:
        agent = az.create_agent(model="builtin/echo", name="echo")
        run = az.create_thread_and_process_run(
            agent_id=agent.id, polling_interval=POLL,
            thread=AgentThreadCreationOptions(messages=[ThreadMessageOptions(role=MessageRole.USER,
                                                                             content="hi there")]))
        assert run.status == RunStatus.COMPLETED and run.thread_id.startswith("thread_")
        messages = list(az.messages.list(run.thread_id, order="asc"))
        assert [(m.role, m.text_messages[0].text.value) for m in messages] == \
            [(MessageRole.USER, "hi there"), (MessageRole.AGENT, "hi there")]
        assert messages[1].run_id == run.id and messages[1].agent_id == agent.id


def weather_and_time(called: list[tuple[str, str]]) -> tuple:
    """Two Python functions for the SDKs' auto function calls; each call is recorded in `called`."""

    def get_weather(city: str) -> str:
        """Weather for a city.

        :param city: The city.
        :return: The weather.
        """
        called.append(("get_weather", city))
        return json.dumps({"weather": f"sunny in {city}"})

    def get_time(tz: str) -> str:
        """Time in a time zone.

        :param tz: The time zone.
        :return: The time.
        """
        called.append(("get_time", tz))
        return json.dumps({"time": "12:00", "tz": tz})

    return get_weather, get_time


def test_azure_auto_function_calls_run_two_parallel_tools(az, tmp_path):
    called: list[tuple[str, str]] = []
    toolset = ToolSet()
    toolset.add(FunctionTool(set(weather_and_time(called))))
    az.enable_auto_function_calls(toolset)
    agent = az.create_agent(model=two_calls_then_text(tmp_path), name="tools", toolset=toolset)
    assert sorted(t.function.name for t in agent.tools) == ["get_time", "get_weather"]
    thread = az.threads.create()
    az.messages.create(thread.id, role="user", content="Weather and time in Paris?")

    run = az.runs.create_and_process(thread_id=thread.id, agent_id=agent.id, polling_interval=POLL)
    assert run.status == RunStatus.COMPLETED, run.last_error
    assert sorted(called) == [("get_time", "CET"), ("get_weather", "Paris")]      # each called once
    reply = az.messages.get_last_message_by_role(thread.id, MessageRole.AGENT)
    assert reply.text_messages[0].text.value == "Sunny in Paris; it is 12:00 CET." and reply.run_id == run.id

    steps = list(az.run_steps.list(thread.id, run.id, order="asc"))
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "completed"), ("message_creation", "completed")]
    # azure-ai-agents 1.1.0 models no `output` attribute on the function; the field is in the JSON
    outputs = {c.function.name: (json.loads(c.function.arguments), c.function["output"])
               for c in steps[0].step_details.tool_calls}
    assert outputs == {"get_weather": ({"city": "Paris"}, '{"weather": "sunny in Paris"}'),
                       "get_time": ({"tz": "CET"}, '{"time": "12:00", "tz": "CET"}')}
    assert steps[1].step_details.message_creation.message_id == reply.id


def test_azure_cancel_a_slow_run_promptly(az, tmp_path):
    agent = az.create_agent(model=script(tmp_path, {"text": "far too late", "delay": 30}), name="slow")
    thread = az.threads.create()
    az.messages.create(thread.id, role="user", content="take your time")
    run = az.runs.create(thread.id, agent_id=agent.id)
    wait_until(lambda: az.runs.get(thread.id, run.id).status, lambda s: s == RunStatus.IN_PROGRESS)

    started = time.monotonic()
    cancelling = az.runs.cancel(thread.id, run.id)
    assert cancelling.id == run.id and cancelling.status in (RunStatus.CANCELLING, RunStatus.CANCELLED)
    done = wait_until(lambda: az.runs.get(thread.id, run.id), lambda r: r.status not in
                      (RunStatus.QUEUED, RunStatus.IN_PROGRESS, RunStatus.CANCELLING), timeout=5)
    assert time.monotonic() - started < 3
    assert done.status == RunStatus.CANCELLED and done.cancelled_at is not None and done.completed_at is None
    # nothing was said, and the thread takes messages again
    assert [m.role for m in az.messages.list(thread.id)] == [MessageRole.USER]
    az.messages.create(thread.id, role="user", content="never mind")


async def test_azure_async_create_and_process(service, project_key):
    async with AsyncAgentsClient(**azure_kwargs(service.url, *project_key)) as client:
        agent = await client.create_agent(model="builtin/echo", name="echo")
        thread = await client.threads.create()
        await client.messages.create(thread.id, role="user", content="hello from aio")
        run = await client.runs.create_and_process(thread_id=thread.id, agent_id=agent.id, polling_interval=POLL)
        assert run.status == RunStatus.COMPLETED
        reply = await client.messages.get_last_message_text_by_role(thread.id, MessageRole.AGENT)
        assert reply.text.value == "hello from aio"


async def test_azure_async_create_thread_and_process_run(service, project_key):
    async with AsyncAgentsClient(**azure_kwargs(service.url, *project_key)) as client:
        agent = await client.create_agent(model="builtin/echo", name="echo")
        run = await client.create_thread_and_process_run(
            agent_id=agent.id, polling_interval=POLL,
            thread=AgentThreadCreationOptions(messages=[ThreadMessageOptions(role="user", content="and again")]))
        assert run.status == RunStatus.COMPLETED
        reply = await client.messages.get_last_message_text_by_role(run.thread_id, MessageRole.AGENT)
        assert reply.text.value == "and again"


def test_azure_a_failing_model_fails_the_run_with_its_error(az, tmp_path):
    agent = az.create_agent(model=script(tmp_path, {"error": {"code": "rate_limit_exceeded",
                                                             "message": "slow down"}}), name="failing")
    thread = az.threads.create()
    az.messages.create(thread.id, role="user", content="hello")
    run = az.runs.create_and_process(thread_id=thread.id, agent_id=agent.id, polling_interval=POLL)
    assert run.status == RunStatus.FAILED and run.failed_at is not None
    assert (run.last_error.code, run.last_error.message) == ("rate_limit_exceeded", "slow down")
    az.messages.create(thread.id, role="user", content="the thread is unlocked")


# ================================================================ openai

@pytest.fixture
async def key(db):
    return await new_key(db, f"oar-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def oa(service, key):
    with OpenAI(base_url=f"{service.url}/v1", api_key=key, max_retries=0) as c:
        yield c


def test_openai_create_and_poll_echo(oa):
    assistant = oa.beta.assistants.create(model="builtin/echo", instructions="Repeat.")
    thread = oa.beta.threads.create(messages=[{"role": "user", "content": "echo me"}])
    run = oa.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                               poll_interval_ms=POLL_MS)
    assert run.status == "completed" and run.object == "thread.run" and run.last_error is None
    assert run.instructions == "Repeat." and run.model == "builtin/echo" and run.expires_at is None
    assert run.usage.total_tokens == run.usage.prompt_tokens + run.usage.completion_tokens > 0
    reply = oa.beta.threads.messages.list(thread.id).data[0]
    assert reply.role == "assistant" and reply.run_id == run.id and reply.content[0].text.value == "echo me"

    # create_and_run_poll: thread and run in one request
    run = oa.beta.threads.create_and_run_poll(assistant_id=assistant.id, poll_interval_ms=POLL_MS,
                                              thread={"messages": [{"role": "user", "content": "once more"}]})
    assert run.status == "completed"
    assert oa.beta.threads.messages.list(run.thread_id).data[0].content[0].text.value == "once more"


def test_openai_submit_tool_outputs_and_poll(oa, tmp_path):
    assistant = oa.beta.assistants.create(model=two_calls_then_text(tmp_path, "Sunny, 12:00."), tools=WEATHER_TOOLS)
    thread = oa.beta.threads.create(messages=[{"role": "user", "content": "Weather and time in Paris?"}])
    run = oa.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                               poll_interval_ms=POLL_MS)
    assert run.status == "requires_action" and run.required_action.type == "submit_tool_outputs"
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [(c.type, c.function.name, json.loads(c.function.arguments)) for c in calls] == \
        [("function", "get_weather", {"city": "Paris"}), ("function", "get_time", {"tz": "CET"})]
    assert len({c.id for c in calls}) == 2
    # the pending action is stable across reads
    assert oa.beta.threads.runs.retrieve(run.id, thread_id=thread.id).required_action == run.required_action

    with pytest.raises(openai.BadRequestError):       # every call must be answered in one request
        oa.beta.threads.runs.submit_tool_outputs(run.id, thread_id=thread.id,
                                                 tool_outputs=[{"tool_call_id": calls[0].id, "output": "x"}])
    run = oa.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, poll_interval_ms=POLL_MS,
        tool_outputs=[{"tool_call_id": calls[0].id, "output": "sunny"},
                      {"tool_call_id": calls[1].id, "output": "12:00"}])
    assert run.status == "completed" and run.required_action is None
    reply = oa.beta.threads.messages.list(thread.id).data[0]
    assert reply.role == "assistant" and reply.content[0].text.value == "Sunny, 12:00."


def test_openai_run_steps_list_shows_tool_calls_with_outputs(oa, tmp_path):
    assistant = oa.beta.assistants.create(model=two_calls_then_text(tmp_path, "Done."), tools=WEATHER_TOOLS)
    thread = oa.beta.threads.create(messages=[{"role": "user", "content": "go"}])
    runs = oa.beta.threads.runs
    run = runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=POLL_MS)
    assert run.status == "requires_action"

    pending = runs.steps.list(run.id, thread_id=thread.id).data
    assert [(s.type, s.status) for s in pending] == [("tool_calls", "in_progress")]
    assert [c.function.output for c in pending[0].step_details.tool_calls] == [None, None]

    calls = run.required_action.submit_tool_outputs.tool_calls
    run = runs.submit_tool_outputs_and_poll(run_id=run.id, thread_id=thread.id, poll_interval_ms=POLL_MS,
                                            tool_outputs=[{"tool_call_id": c.id, "output": f"out-{c.function.name}"}
                                                          for c in calls])
    assert run.status == "completed"

    steps = runs.steps.list(run.id, thread_id=thread.id, order="asc").data
    assert [(s.object, s.type, s.status) for s in steps] == [("thread.run.step", "tool_calls", "completed"),
                                                             ("thread.run.step", "message_creation", "completed")]
    assert all(s.run_id == run.id and s.thread_id == thread.id and s.assistant_id == assistant.id for s in steps)
    tool_step, message_step = steps
    assert tool_step.step_details.type == "tool_calls"
    assert [(c.id, c.type, c.function.name, c.function.output) for c in tool_step.step_details.tool_calls] == \
        [(c.id, "function", c.function.name, f"out-{c.function.name}") for c in calls]
    assert tool_step.completed_at is not None and tool_step.usage is not None
    reply = oa.beta.threads.messages.list(thread.id).data[0]
    assert message_step.step_details.type == "message_creation"
    assert message_step.step_details.message_creation.message_id == reply.id
    assert [s.id for s in runs.steps.list(run.id, thread_id=thread.id).data] == [message_step.id, tool_step.id]
    assert runs.steps.retrieve(tool_step.id, thread_id=thread.id, run_id=run.id) == tool_step


async def test_openai_async_create_and_poll(service, key):
    async with AsyncOpenAI(base_url=f"{service.url}/v1", api_key=key, max_retries=0) as client:
        assistant = await client.beta.assistants.create(model="builtin/echo")
        thread = await client.beta.threads.create(messages=[{"role": "user", "content": "async hello"}])
        run = await client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                             poll_interval_ms=POLL_MS)
        assert run.status == "completed"
        messages = await client.beta.threads.messages.list(thread.id)
        assert messages.data[0].content[0].text.value == "async hello"


def test_openai_out_of_completion_tokens_is_incomplete(oa, tmp_path):
    assistant = oa.beta.assistants.create(model=script(tmp_path, {"text": "cut short", "finish_reason": "length"}))
    thread = oa.beta.threads.create(messages=[{"role": "user", "content": "tell me everything"}])
    run = oa.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                               max_completion_tokens=256, poll_interval_ms=POLL_MS)
    assert run.status == "incomplete" and run.incomplete_details.reason == "max_completion_tokens"
    reply = oa.beta.threads.messages.list(thread.id).data[0]
    assert reply.role == "assistant" and reply.content[0].text.value == "cut short"
    # a message's incomplete reasons are OpenAI's MessageObject enum: max_tokens, run_cancelled, ...
    assert reply.status == "incomplete" and reply.incomplete_details.reason == "max_tokens"


def test_openai_cancel_update_and_list_runs(oa, tmp_path):
    assistant = oa.beta.assistants.create(model=script(tmp_path, {"text": "never", "delay": 30}))
    thread = oa.beta.threads.create(messages=[{"role": "user", "content": "wait"}])
    runs = oa.beta.threads.runs
    run = runs.create(thread_id=thread.id, assistant_id=assistant.id, metadata={"k": "v"})
    assert run.status in ("queued", "in_progress") and run.metadata == {"k": "v"}
    with pytest.raises(openai.BadRequestError) as info:            # the thread is locked
        oa.beta.threads.messages.create(thread.id, role="user", content="more")
    assert info.value.body["message"] == f"Can't add messages to {thread.id} while a run {run.id} is active."
    assert runs.update(run.id, thread_id=thread.id, metadata={"k": "w"}).metadata == {"k": "w"}

    cancelling = runs.cancel(run.id, thread_id=thread.id)
    assert cancelling.status in ("cancelling", "cancelled")
    run = runs.poll(run.id, thread_id=thread.id, poll_interval_ms=POLL_MS)
    assert run.status == "cancelled" and run.cancelled_at is not None and run.metadata == {"k": "w"}
    with pytest.raises(openai.BadRequestError):                     # cancelling a cancelled run
        runs.cancel(run.id, thread_id=thread.id)
    assert [r.id for r in runs.list(thread_id=thread.id)] == [run.id]


# ---------------------------------------------------------------- a service with a short run expiry

@pytest.fixture(scope="module")
async def expiring_service(server_url):
    """A service whose runs expire 2 s after creation, on a database of its own: every process
    sweeps every run of its database, so on a shared one another service could expire these runs
    behind this one's back (see test_openai_two_replicas_...)."""
    url = await fresh_database(server_url)
    pool = await database.connect(url, 2)
    try:
        await database.prepare(pool)
        key = await new_key(pool, f"exp-{uuid.uuid4().hex[:10]}")
    finally:
        await pool.close()
    proc = await asyncio.to_thread(ServiceProcess, url, {"THREADLINE_RUN_EXPIRY_SECONDS": "2",
                                                         "THREADLINE_RUN_SWEEP_SECONDS": "0.2"})
    proc.key = key
    yield proc
    proc.stop()


async def test_openai_run_left_in_requires_action_expires(expiring_service, tmp_path):
    async with AsyncOpenAI(base_url=f"{expiring_service.url}/v1", api_key=expiring_service.key,
                           max_retries=0) as client:
        runs = client.beta.threads.runs
        assistant = await client.beta.assistants.create(
            model=script(tmp_path, {"tool_calls": [{"name": "get_time", "arguments": {"tz": "UTC"}}]}),
            tools=WEATHER_TOOLS)
        thread = await client.beta.threads.create(messages=[{"role": "user", "content": "time?"}])
        run = await runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=POLL_MS)
        assert run.status == "requires_action" and run.expires_at == run.created_at + 2

        run = await await_until(lambda: runs.retrieve(run.id, thread_id=thread.id),
                                lambda r: r.status != "requires_action", timeout=10)
        assert run.status == "expired" and run.required_action is None and run.expires_at is None
        steps = (await runs.steps.list(run.id, thread_id=thread.id)).data
        assert [(s.type, s.status) for s in steps] == [("tool_calls", "expired")] and steps[0].expired_at
        with pytest.raises(openai.BadRequestError):
            await runs.submit_tool_outputs(run.id, thread_id=thread.id,
                                           tool_outputs=[{"tool_call_id": "call_x", "output": "late"}])
        # the thread is unlocked
        await client.beta.threads.messages.create(thread.id, role="user", content="still there?")


# ---------------------------------------------------------------- two replicas on one database

@pytest.fixture(scope="module")
async def replica(database_url):
    """A second `threadline serve` on the same database as `service`, as behind a load balancer."""
    proc = await asyncio.to_thread(ServiceProcess, database_url)
    yield proc
    proc.stop()


def test_openai_two_replicas_a_run_ended_by_one_unlocks_the_thread_on_the_other(service, replica, key, tmp_path):
    with OpenAI(base_url=f"{service.url}/v1", api_key=key, max_retries=0) as a, \
            OpenAI(base_url=f"{replica.url}/v1", api_key=key, max_retries=0) as b:
        assistant = a.beta.assistants.create(model=script(tmp_path, {"tool_calls": [{"name": "get_time",
                                                                                    "arguments": {"tz": "UTC"}}]}),
                                             tools=WEATHER_TOOLS)
        thread = a.beta.threads.create(messages=[{"role": "user", "content": "time?"}])
        run = a.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                  poll_interval_ms=POLL_MS)
        assert run.status == "requires_action"

        assert b.beta.threads.runs.cancel(run.id, thread_id=thread.id).status in ("cancelling", "cancelled")
        run = a.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=POLL_MS)
        assert run.status == "cancelled"                 # both replicas read the same run
        # A's actor still holds the thread's old state; it must not refuse on it.
        a.beta.threads.messages.create(thread.id, role="user", content="next question")
        next_run = a.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
        assert next_run.status in ("queued", "in_progress", "requires_action")


# ---------------------------------------------------------------- what the model receives (fake provider)

@pytest.fixture(scope="module")
async def fake():
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
async def fake_service(database_url, fake, tmp_path_factory):
    table = fake.models_file_content("fake-gpt")
    table["models"]["fake-reasoner"] = {"base_url": fake.url, "max_tokens_param": "max_completion_tokens"}
    models = tmp_path_factory.mktemp("models") / "models.json"
    models.write_text(json.dumps(table))
    proc = await asyncio.to_thread(ServiceProcess, database_url, {"THREADLINE_MODELS": str(models)})
    yield proc
    proc.stop()


@pytest.mark.parametrize("model, tokens_param", [("fake-gpt", "max_tokens"),
                                                 ("fake-reasoner", "max_completion_tokens")])
async def test_openai_truncation_and_settings_reach_the_model(fake_service, fake, key, model, tokens_param):
    fake.requests.clear()
    fake.script(text_reply("Only ", "the last ", "one."))
    async with AsyncOpenAI(base_url=f"{fake_service.url}/v1", api_key=key, max_retries=0) as client:
        tools = WEATHER_TOOLS[:1]
        assistant = await client.beta.assistants.create(model=model, instructions="Be brief.", tools=tools)
        thread = await client.beta.threads.create(messages=[
            {"role": "user", "content": "first question"}, {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"}])
        run = await client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=POLL_MS,
            truncation_strategy={"type": "last_messages", "last_messages": 1},
            max_completion_tokens=500, temperature=0.25)
        assert run.status == "completed", run.last_error
        assert run.truncation_strategy.type == "last_messages" and run.truncation_strategy.last_messages == 1
        assert run.max_completion_tokens == 500 and run.temperature == 0.25
        assert (run.usage.prompt_tokens, run.usage.completion_tokens, run.usage.total_tokens) == (11, 7, 18)
        reply = (await client.beta.threads.messages.list(thread.id)).data[0]
        assert reply.content[0].text.value == "Only the last one."

    assert len(fake.requests) == 1
    sent = fake.requests[0].body
    assert sent["model"] == model and sent["stream"] is True
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "second question"}]
    assert sent[tokens_param] == 500
    assert ({"max_tokens", "max_completion_tokens"} - {tokens_param}).isdisjoint(sent)     # only one of them
    assert sent["temperature"] == 0.25
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]
    assert sent["tools"][0]["function"]["parameters"] == tools[0]["function"]["parameters"]
