"""Runs through the HTTP API with the built-in offline models, on real Postgres."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from conftest import Client, until
from conftest import test_config as make_config
from service.api.http import SERVICES
from service.app import create_app

TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete"}


async def wait_run(client: Client, thread_id: str, run_id: str, until=TERMINAL | {"requires_action"},
                   timeout: float = 15.0) -> dict:
    """Poll the run until its status is in `until` (with a deadline, as a client would)."""
    deadline = time.monotonic() + timeout
    while True:
        run = await client.ok("GET", f"/threads/{thread_id}/runs/{run_id}")
        if run["status"] in until:
            return run
        assert time.monotonic() < deadline, f"run still {run['status']} after {timeout} s"
        await asyncio.sleep(0.02)


def script(tmp_path, *turns) -> str:
    path = tmp_path / f"script-{time.monotonic_ns()}.json"
    path.write_text(json.dumps({"turns": list(turns)}))
    return f"builtin/script:{path}"


WEATHER_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]


async def start(client: Client, model: str, text: str = "hello there", **run) -> tuple[str, dict]:
    assistant = await client.ok("POST", "/assistants", {"model": model, "instructions": "Be brief.",
                                                        "tools": WEATHER_TOOLS})
    thread = await client.ok("POST", "/threads", {"messages": [{"role": "user", "content": text}]})
    created = await client.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"], **run})
    return thread["id"], created


async def test_an_echo_run_completes_with_the_reply_its_step_and_usage(client):
    thread_id, run = await start(client, "builtin/echo", "hello there")
    assert run["status"] in ("queued", "in_progress") and run["object"] == "thread.run"
    assert run["expires_at"] == run["created_at"] + 600 and run["instructions"] == "Be brief."
    done = await wait_run(client, thread_id, run["id"])
    assert done["status"] == "completed" and done["completed_at"] and done["expires_at"] is None
    assert done["usage"]["total_tokens"] == done["usage"]["prompt_tokens"] + done["usage"]["completion_tokens"] > 0
    messages = (await client.ok("GET", f"/threads/{thread_id}/messages"))["data"]
    reply = messages[0]
    assert reply["role"] == "assistant" and reply["run_id"] == run["id"] and reply["status"] == "completed"
    assert reply["content"][0]["text"]["value"] == "hello there"
    assert reply["assistant_id"] == run["assistant_id"]
    steps = (await client.ok("GET", f"/threads/{thread_id}/runs/{run['id']}/steps"))["data"]
    assert [s["type"] for s in steps] == ["message_creation"]
    assert steps[0]["status"] == "completed" and steps[0]["step_details"]["message_creation"]["message_id"] == reply["id"]
    assert steps[0]["thread_id"] == thread_id and steps[0]["assistant_id"] == run["assistant_id"]
    one = await client.ok("GET", f"/threads/{thread_id}/runs/{run['id']}/steps/{steps[0]['id']}")
    assert one == steps[0]
    listed = await client.ok("GET", f"/threads/{thread_id}/runs")
    assert [r["id"] for r in listed["data"]] == [run["id"]]
    by_run = await client.ok("GET", f"/threads/{thread_id}/messages", params={"run_id": run["id"]})
    assert [m["id"] for m in by_run["data"]] == [reply["id"]]


async def test_an_active_run_locks_the_thread_with_openais_wording(client, tmp_path):
    thread_id, run = await start(client, script(tmp_path, {"text": "slow", "delay": 30}))
    status, body = await client.call("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": "x"})
    assert status == 400 and body["error"]["message"] == f"Can't add messages to {thread_id} while a run {run['id']} is active."
    status, body = await client.call("POST", f"/threads/{thread_id}/runs", {"assistant_id": run["assistant_id"]})
    assert status == 400 and body["error"]["message"] == f"Thread {thread_id} already has an active run {run['id']}."
    cancelled = await client.ok("POST", f"/threads/{thread_id}/runs/{run['id']}/cancel")
    assert cancelled["status"] in ("cancelling", "cancelled")
    done = await wait_run(client, thread_id, run["id"], timeout=5)
    assert done["status"] == "cancelled" and done["cancelled_at"]
    # Unlocked: a message and a new run are accepted again.
    await client.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": "again"})
    status, body = await client.call("POST", f"/threads/{thread_id}/runs/{run['id']}/cancel")
    assert status == 400 and body["error"]["message"] == "Cannot cancel run with status 'cancelled'."


async def test_tool_calls_require_action_and_all_outputs_in_one_request(client, tmp_path):
    model = script(tmp_path,
                   {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                                   {"name": "get_time", "arguments": {}}]},
                   {"text": "Sunny, and it is noon."})
    thread_id, run = await start(client, model)
    waiting = await wait_run(client, thread_id, run["id"])
    assert waiting["status"] == "requires_action"
    calls = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    path = f"/threads/{thread_id}/runs/{run['id']}/submit_tool_outputs"

    for bad in ([{"tool_call_id": calls[0]["id"], "output": "sunny"}],                       # one missing
                [{"tool_call_id": c["id"], "output": "x"} for c in calls] + [{"tool_call_id": "call_nope", "output": "x"}],
                [{"tool_call_id": calls[0]["id"], "output": "a"}, {"tool_call_id": calls[0]["id"], "output": "b"},
                 {"tool_call_id": calls[1]["id"], "output": "c"}]):
        status, body = await client.call("POST", path, {"tool_outputs": bad})
        assert status == 400 and body["error"]["param"] == "tool_outputs", body
        assert (await client.ok("GET", f"/threads/{thread_id}/runs/{run['id']}"))["status"] == "requires_action"

    after = await client.ok("POST", path, {"tool_outputs": [{"tool_call_id": calls[0]["id"], "output": "sunny"},
                                                              {"tool_call_id": calls[1]["id"], "output": "12:00"}]})
    assert after["status"] in ("queued", "in_progress", "completed") and after["required_action"] is None
    done = await wait_run(client, thread_id, run["id"])
    assert done["status"] == "completed"
    steps = (await client.ok("GET", f"/threads/{thread_id}/runs/{run['id']}/steps", params={"order": "asc"}))["data"]
    assert [s["type"] for s in steps] == ["tool_calls", "message_creation"]
    outputs = [c["function"]["output"] for c in steps[0]["step_details"]["tool_calls"]]
    assert outputs == ["sunny", "12:00"] and steps[0]["status"] == "completed" and steps[0]["usage"]
    reply = (await client.ok("GET", f"/threads/{thread_id}/messages"))["data"][0]
    assert reply["content"][0]["text"]["value"] == "Sunny, and it is noon."
    status, body = await client.call("POST", path, {"tool_outputs": [{"tool_call_id": calls[0]["id"], "output": "x"}]})
    assert status == 400 and body["error"]["message"] == 'Runs in status "completed" do not accept tool outputs.'


async def test_a_model_error_fails_the_run_with_last_error_and_unlocks(client, tmp_path):
    model = script(tmp_path, {"error": {"code": "rate_limit_exceeded", "message": "slow down"}})
    thread_id, run = await start(client, model)
    done = await wait_run(client, thread_id, run["id"])
    assert done["status"] == "failed" and done["failed_at"]
    assert done["last_error"] == {"code": "rate_limit_exceeded", "message": "slow down"}
    await client.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": "unlocked"})


async def test_run_settings_merge_assistant_defaults_with_overrides(client):
    assistant = await client.ok("POST", "/assistants", {"model": "builtin/echo", "instructions": "Base.",
                                                        "temperature": 0.5, "tools": WEATHER_TOOLS})
    thread = await client.ok("POST", "/threads")
    run = await client.ok("POST", f"/threads/{thread['id']}/runs", {
        "assistant_id": assistant["id"], "additional_instructions": "Extra.", "tools": [], "metadata": {"k": "v"},
        "truncation_strategy": {"type": "last_messages", "last_messages": 3}, "max_completion_tokens": 500,
        "additional_messages": [{"role": "user", "content": "from additional"}]})
    assert run["instructions"] == "Base.\n\nExtra." and run["tools"] == [] and run["temperature"] == 0.5
    assert run["truncation_strategy"] == {"type": "last_messages", "last_messages": 3}
    assert run["metadata"] == {"k": "v"} and run["max_completion_tokens"] == 500
    done = await wait_run(client, thread["id"], run["id"])
    reply = (await client.ok("GET", f"/threads/{thread['id']}/messages"))["data"][0]
    assert done["status"] == "completed" and reply["content"][0]["text"]["value"] == "from additional"
    updated = await client.ok("POST", f"/threads/{thread['id']}/runs/{run['id']}", {"metadata": {"k": "w"}})
    assert updated["metadata"] == {"k": "w"}


async def test_a_run_takes_the_assistant_as_it_is_after_an_update_or_a_delete(client):
    """Run creation reads assistants through this process's cache: a change is seen at once."""
    assistant = await client.ok("POST", "/assistants", {"model": "builtin/echo", "instructions": "First."})
    thread = await client.ok("POST", "/threads")
    first = await client.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"]})
    assert first["instructions"] == "First."
    await wait_run(client, thread["id"], first["id"])
    await client.ok("POST", f"/assistants/{assistant['id']}", {"instructions": "Second.", "temperature": 0.3})
    second = await client.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"]})
    assert second["instructions"] == "Second." and second["temperature"] == 0.3
    await wait_run(client, thread["id"], second["id"])
    await client.ok("DELETE", f"/assistants/{assistant['id']}")
    status, body = await client.call("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"]})
    assert status == 404 and body["error"]["param"] == "assistant_id"


async def test_an_assistant_changed_through_another_process_is_seen_here(client, app_client, service, project):
    """Another process's change reaches this process's cache with its append's NOTIFY (the
    entries' expiry is pushed out of reach, so nothing else can make the cache forget)."""
    cache = app_client.server.app[SERVICES].agents
    ttl, cache.ttl = cache.ttl, 3600.0
    try:
        assistant = await client.ok("POST", "/assistants", {"model": "builtin/echo", "instructions": "Here."})
        thread = await client.ok("POST", "/threads")
        run = await client.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"]})
        assert run["instructions"] == "Here."
        await wait_run(client, thread["id"], run["id"])
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {project[1]}"}) as remote:
            async with remote.post(f"{service.url}/v1/assistants/{assistant['id']}",
                                   json={"instructions": "There."}) as r:
                assert r.status == 200

        async def seen_here() -> bool:
            run = await client.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"]})
            await wait_run(client, thread["id"], run["id"])
            return run["instructions"] == "There."
        await until(seen_here, timeout=5.0, what="a run created here to take the other process's change")
    finally:
        cache.ttl = ttl


async def test_create_thread_and_run(client):
    assistant = await client.ok("POST", "/assistants", {"model": "builtin/echo"})
    run = await client.ok("POST", "/threads/runs", {"assistant_id": assistant["id"], "thread": {
        "messages": [{"role": "user", "content": "made together"}], "metadata": {"a": "b"}}})
    done = await wait_run(client, run["thread_id"], run["id"])
    assert done["status"] == "completed"
    thread = await client.ok("GET", f"/threads/{run['thread_id']}")
    assert thread["metadata"] == {"a": "b"}
    reply = (await client.ok("GET", f"/threads/{run['thread_id']}/messages"))["data"][0]
    assert reply["content"][0]["text"]["value"] == "made together"


@pytest.mark.parametrize("body, param", [
    ({"assistant_id": "asst_missing"}, "assistant_id"),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"truncation_strategy": {"type": "last_messages"}}, "truncation_strategy.last_messages"),
    ({"max_completion_tokens": 10}, "max_completion_tokens"),
    ({"temperature": 3}, "temperature"),
])
async def test_bad_run_requests_are_refused_and_create_nothing(client, body, param):
    assistant = await client.ok("POST", "/assistants", {"model": "builtin/echo", "tools": WEATHER_TOOLS})
    thread = await client.ok("POST", "/threads")
    status, err = await client.call("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"], **body})
    assert status in (400, 404) and err["error"]["param"] == param, err
    assert (await client.ok("GET", f"/threads/{thread['id']}/runs"))["data"] == []


async def test_unknown_runs_and_steps_are_404(client):
    thread = await client.ok("POST", "/threads")
    for method, path in [("GET", "/runs/run_x"), ("POST", "/runs/run_x/cancel"), ("GET", "/runs/run_x/steps"),
                         ("GET", "/runs/run_x/steps/step_x")]:
        status, body = await client.call(method, f"/threads/{thread['id']}{path}")
        assert status == 404 and "run_x" in body["error"]["message"], (path, body)
    status, _ = await client.call("POST", f"/threads/{thread['id']}/runs/run_x/submit_tool_outputs",
                                  {"tool_outputs": [{"tool_call_id": "c", "output": "o"}]})
    assert status == 404


@pytest.fixture
async def fast_expiry_client(database_url, project):
    app = create_app(make_config(run_expiry_seconds=2, run_sweep_seconds=0.2), database_url)
    http = TestClient(TestServer(app))
    await http.start_server()
    yield Client(http, project[1])
    await http.close()


async def test_a_run_left_in_requires_action_expires_on_its_own(fast_expiry_client, tmp_path):
    client = fast_expiry_client
    thread_id, run = await start(client, script(tmp_path, {"tool_calls": [{"name": "get_time", "arguments": {}}]}))
    assert run["expires_at"] == run["created_at"] + 2
    assert (await wait_run(client, thread_id, run["id"]))["status"] == "requires_action"
    done = await wait_run(client, thread_id, run["id"], until=TERMINAL, timeout=10)
    assert done["status"] == "expired" and done["expires_at"] is None and done["required_action"] is None
    step = (await client.ok("GET", f"/threads/{thread_id}/runs/{run['id']}/steps"))["data"][0]
    assert step["status"] == "expired" and step["expired_at"]
    await client.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": "unlocked"})
