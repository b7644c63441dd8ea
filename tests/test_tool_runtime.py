"""The tool runtime's run loop: model ↔ tools the server runs ↔ tools the client runs.

No server-run tool type ships yet (file_search, code_interpreter and the rest come with their
issues), so these tests give the service a small one of their own, `clock`, through the same
`create_app(tools=...)` seam the real ones will use. The model is a real local OpenAI-compatible
server; the service runs in-process on real Postgres."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
from aiohttp.test_utils import TestClient, TestServer

from conftest import Client
from conftest import test_config as make_config
from events.types import FunctionCall, FunctionCallBody
from fake_openai import FakeOpenAI, FakeToolCall, text_reply, tool_calls_reply
from service.app import create_app
from service.tools.base import ModelCall, ToolContext, ToolFailed
from service.tools.function import FunctionTool
from service.tools.runtime import ToolRuntime
from test_runs_api import wait_run
from test_streams import parse

LOOKUP = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
CLOCK = {"type": "clock", "zone": "CET"}


class ClockTool(FunctionTool):
    """A server-run tool: tells the time of its zone (fixed, so tests can assert it)."""
    type: ClassVar[str] = "clock"
    on_server: ClassVar[bool] = True

    def __init__(self) -> None:
        self.contexts: list[ToolContext] = []

    def check(self, definition, param):
        pass

    def offered(self, definition):
        return [{"type": "function", "function": {"name": "clock_now", "parameters": {"type": "object"}}}]

    def names(self, definition):
        return ["clock_now"]

    async def execute(self, call: ModelCall, context: ToolContext) -> FunctionCall:
        self.contexts.append(context)
        if json.loads(call.arguments or "{}").get("fail"):
            raise ToolFailed("clock failed: the zone is unknown.")
        return FunctionCall(id=call.id, function=FunctionCallBody(
            name=call.name, arguments=call.arguments, output=f"12:00 {context.definition['zone']}"))


@pytest.fixture
async def fake():
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
def clock():
    return ClockTool()


@pytest.fixture
async def api(fake, clock, database_url, project, tmp_path, monkeypatch):
    (tmp_path / "models.json").write_text(json.dumps(fake.models_file_content("fake-a", api_key_env="FAKE_KEY")))
    monkeypatch.setenv("FAKE_KEY", "sk-fake")
    app = create_app(make_config(models_file=str(tmp_path / "models.json")), database_url,
                     tools=ToolRuntime([FunctionTool(), clock]))
    http = TestClient(TestServer(app))
    await http.start_server()
    yield Client(http, project[1])
    await http.close()


async def start(api: Client, tools: list) -> tuple[str, str]:
    assistant = await api.ok("POST", "/assistants", {"model": "fake-a", "tools": tools})
    thread = await api.ok("POST", "/threads", {"messages": [{"role": "user", "content": "what time is it?"}]})
    run = await api.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"]})
    return thread["id"], run["id"]


async def steps_of(api: Client, thread_id: str, run_id: str) -> list[dict]:
    return (await api.ok("GET", f"/threads/{thread_id}/runs/{run_id}/steps?order=asc"))["data"]


async def test_a_server_run_tool_is_executed_and_the_model_answers_with_its_result(api, fake, clock, project):
    fake.script(tool_calls_reply(FakeToolCall("call_c", "clock_now", ['{', '}'])), text_reply("It is noon."))
    thread_id, run_id = await start(api, [CLOCK])
    # Within seconds: the engine goes on by itself (a run left behind is adopted only after its lease lapses).
    run = await wait_run(api, thread_id, run_id, timeout=5.0)
    assert run["status"] == "completed" and run["required_action"] is None
    # The model was offered the tool's schema, and its second turn saw the result.
    assert fake.requests[0].body["tools"][0]["function"]["name"] == "clock_now"
    second = fake.requests[1].body["messages"]
    assert second[-2]["tool_calls"][0]["function"] == {"name": "clock_now", "arguments": "{}"}
    assert second[-1] == {"role": "tool", "tool_call_id": "call_c", "content": "12:00 CET"}
    tool_step, message_step = await steps_of(api, thread_id, run_id)
    assert tool_step["status"] == "completed" and tool_step["usage"]["total_tokens"] == 29
    assert tool_step["step_details"]["tool_calls"] == [{"id": "call_c", "type": "function", "function": {
        "name": "clock_now", "arguments": "{}", "output": "12:00 CET"}}]
    assert message_step["type"] == "message_creation" and message_step["status"] == "completed"
    # The tool was told whose run it works for.
    (ctx,) = clock.contexts
    assert (ctx.project, ctx.thread_id, ctx.run_id) == (project[0], thread_id, run_id)
    assert run["usage"] == {"prompt_tokens": 31, "completion_tokens": 16, "total_tokens": 47}   # both calls, once each


async def test_the_stream_shows_the_servers_result_before_the_step_completes(api, fake):
    fake.script(tool_calls_reply(FakeToolCall("call_c", "clock_now", ['{}'])), text_reply("Noon."))
    assistant = await api.ok("POST", "/assistants", {"model": "fake-a", "tools": [CLOCK]})
    thread = await api.ok("POST", "/threads", {"messages": [{"role": "user", "content": "time?"}]})
    status, raw, _ = await api.raw("POST", f"/threads/{thread['id']}/runs",
                                   json={"assistant_id": assistant["id"], "stream": True})
    assert status == 200
    frames = [(e, json.loads(d) if d != "[DONE]" else d) for _, e, d in parse(raw)]
    names = [e for e, _ in frames]
    assert "thread.run.requires_action" not in names
    assert names.count("thread.run.queued") == 1 and names.count("thread.run.in_progress") == 1
    deltas = [d["delta"]["step_details"]["tool_calls"] for e, d in frames if e == "thread.run.step.delta"]
    # The call is announced once, whole, with its result: the model's raw pieces are not shown as
    # a function the client should answer.
    assert deltas == [[{"index": 0, "id": "call_c", "type": "function", "function": {
        "name": "clock_now", "arguments": "{}", "output": "12:00 CET"}}]]
    at = names.index("thread.run.step.delta")
    assert names[at + 1] == "thread.run.step.completed" and names[-2:] == ["thread.run.completed", "done"]
    assert names.count("thread.message.completed") == 1


async def test_a_step_with_both_kinds_waits_only_for_the_clients_calls(api, fake):
    fake.script(tool_calls_reply(FakeToolCall("call_l", "lookup", ['{"q":1}']),
                                 FakeToolCall("call_c", "clock_now", ['{}'])),
                text_reply("Found it at noon."))
    thread_id, run_id = await start(api, [LOOKUP, CLOCK])
    waiting = await wait_run(api, thread_id, run_id)
    assert waiting["status"] == "requires_action"
    assert [c["id"] for c in waiting["required_action"]["submit_tool_outputs"]["tool_calls"]] == ["call_l"]
    (step,) = await steps_of(api, thread_id, run_id)
    assert [c["id"] for c in step["step_details"]["tool_calls"]] == ["call_l", "call_c"]
    await api.ok("POST", f"/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
                 {"tool_outputs": [{"tool_call_id": "call_l", "output": "in the drawer"}]})
    done = await wait_run(api, thread_id, run_id)
    assert done["status"] == "completed"
    (step, _) = await steps_of(api, thread_id, run_id)
    assert [c["function"]["output"] for c in step["step_details"]["tool_calls"]] == ["in the drawer", "12:00 CET"]
    assert fake.requests[1].body["messages"][-2:] == [
        {"role": "tool", "tool_call_id": "call_l", "content": "in the drawer"},
        {"role": "tool", "tool_call_id": "call_c", "content": "12:00 CET"}]


async def test_a_server_run_tool_that_fails_fails_its_step_and_the_run(api, fake):
    fake.script(tool_calls_reply(FakeToolCall("call_c", "clock_now", ['{"fail": true}'])))
    thread_id, run_id = await start(api, [CLOCK])
    run = await wait_run(api, thread_id, run_id)
    assert run["status"] == "failed"
    assert run["last_error"] == {"code": "server_error", "message": "clock failed: the zone is unknown."}
    (step,) = await steps_of(api, thread_id, run_id)
    assert step["status"] == "failed" and step["last_error"]["code"] == "server_error"
    assert len(fake.requests) == 1


async def test_a_type_the_runtime_lacks_is_still_refused(api):
    status, body = await api.call("POST", "/assistants", {"model": "fake-a", "tools": [{"type": "code_interpreter"}]})
    assert status == 400 and body["error"]["param"] == "tools[0].type"
    assert "Supported values are: 'function', 'clock'" in body["error"]["message"]
