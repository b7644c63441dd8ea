"""The run engine against a real local OpenAI-compatible server: what the model is sent, and how
its answers and failures become run state. The service runs in-process on real Postgres."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from conftest import Client
from conftest import test_config as make_config
from events.store import EventStore
from events.types import TextPart, TextValue
from fake_openai import FakeOpenAI, FakeToolCall, error_reply, text_reply, tool_calls_reply
from projections import queries
from projections.projector import SERVICE_PROJECTIONS
from service.actors import ActorRegistry
from service.api.http import SERVICES
from service.app import create_app
from service.domain import thread as thread_domain
from service.domain.messages import NewMessage
from service.ids import new_id, now
from service.runs.tail import TailCache
from test_runs_api import wait_run

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look it up.",
                                           "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]


@pytest.fixture
async def fake():
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def api(fake, database_url, project, tmp_path, monkeypatch):
    """The service with models `fake-a` (128k context) and `fake-small` (a 300-token context) served by `fake`."""
    table = fake.models_file_content("fake-a", api_key_env="FAKE_KEY", max_attempts=2, retry_base_delay=0.01,
                                     read_timeout=2)
    table["models"]["fake-small"] = {**table["models"]["fake-a"], "context_window": 300}
    (tmp_path / "models.json").write_text(json.dumps(table))
    monkeypatch.setenv("FAKE_KEY", "sk-fake-provider-key")
    app = create_app(make_config(max_tool_rounds=2, models_file=str(tmp_path / "models.json")), database_url)
    http = TestClient(TestServer(app))
    await http.start_server()
    yield Client(http, project[1])
    await http.close()


async def run_on_thread(api: Client, messages: list, model: str = "fake-a", **run) -> tuple[str, dict]:
    assistant = await api.ok("POST", "/assistants", {"model": model, "instructions": "You are terse.", "tools": TOOLS})
    thread = await api.ok("POST", "/threads", {"messages": messages})
    created = await api.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"], **run})
    return thread["id"], await wait_run(api, thread["id"], created["id"])


async def test_the_model_is_sent_instructions_history_tools_and_settings(api, fake):
    fake.script(text_reply("Hi ", "there."))
    thread_id, run = await run_on_thread(
        api, [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
              {"role": "user", "content": [{"type": "text", "text": "look"},
                                           {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]}],
        temperature=0.3, top_p=0.9, max_completion_tokens=300, tool_choice="required", parallel_tool_calls=False,
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}})
    assert run["status"] == "completed"
    body = fake.requests[0].body
    assert fake.requests[0].headers["Authorization"] == "Bearer sk-fake-provider-key"
    assert body["model"] == "fake-a" and body["stream"] is True
    assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert body["messages"][1:3] == [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"}]
    assert body["messages"][3]["content"][1] == {"type": "image_url", "image_url": {"url": "https://x/y.png",
                                                                                    "detail": "low"}}
    assert body["tools"] == TOOLS and body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9 and body["max_tokens"] == 300
    assert body["response_format"]["type"] == "json_schema"
    assert run["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}   # the provider's
    reply = (await api.ok("GET", f"/threads/{thread_id}/messages"))["data"][0]
    assert reply["content"][0]["text"]["value"] == "Hi there."


async def test_an_image_file_is_sent_as_a_data_url(api, fake):
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 40
    uploaded = await api.upload(png, "pixel.png", purpose="vision")
    fake.script(text_reply("A pixel."))
    _, run = await run_on_thread(api, [{"role": "user", "content": [
        {"type": "image_file", "image_file": {"file_id": uploaded["id"]}}]}])
    assert run["status"] == "completed"
    part = fake.requests[0].body["messages"][1]["content"][0]
    assert part["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(png).decode()


async def test_tool_rounds_are_replayed_to_the_model_with_their_outputs(api, fake):
    fake.script(tool_calls_reply(FakeToolCall("call_1", "lookup", ['{"q":', '"tides"}'])),
                text_reply("High tide at 6."))
    assistant = await api.ok("POST", "/assistants", {"model": "fake-a", "tools": TOOLS})
    thread = await api.ok("POST", "/threads", {"messages": [{"role": "user", "content": "tides?"}]})
    run = await api.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"]})
    waiting = await wait_run(api, thread["id"], run["id"])
    assert waiting["status"] == "requires_action"
    (call,) = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert call == {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"tides"}'}}
    await api.ok("POST", f"/threads/{thread['id']}/runs/{run['id']}/submit_tool_outputs",
                 {"tool_outputs": [{"tool_call_id": "call_1", "output": "06:00"}]})
    done = await wait_run(api, thread["id"], run["id"])
    assert done["status"] == "completed"
    assert done["usage"] == {"prompt_tokens": 31, "completion_tokens": 16, "total_tokens": 47}   # both calls
    second = fake.requests[1].body["messages"]
    assert second[-2] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"tides"}'}}]}
    assert second[-1] == {"role": "tool", "tool_call_id": "call_1", "content": "06:00"}


async def test_tool_outputs_sent_while_the_last_execution_is_still_ending_are_not_left_queued(
        api, fake, monkeypatch):
    """A client may answer requires_action before the execution that reached it has released its
    lease (a slow database makes that window wide; here the release is held): the run goes on."""
    from service.runs import leases

    held, real_release = asyncio.Event(), leases.release

    async def slow_release(db, run_id, owner):
        await held.wait()
        await real_release(db, run_id, owner)
    monkeypatch.setattr(leases, "release", slow_release)
    fake.script(tool_calls_reply(FakeToolCall("call_1", "lookup", ['{"q":"x"}'])), text_reply("Done."))
    assistant = await api.ok("POST", "/assistants", {"model": "fake-a", "tools": TOOLS})
    thread = await api.ok("POST", "/threads", {"messages": [{"role": "user", "content": "go"}]})
    run = await api.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"]})
    assert (await wait_run(api, thread["id"], run["id"]))["status"] == "requires_action"
    await api.ok("POST", f"/threads/{thread['id']}/runs/{run['id']}/submit_tool_outputs",
                 {"tool_outputs": [{"tool_call_id": "call_1", "output": "y"}]})
    held.set()
    done = await wait_run(api, thread["id"], run["id"], timeout=5.0)   # adopting it as an orphan takes 15 s
    assert done["status"] == "completed"


async def test_a_model_that_never_stops_calling_tools_is_stopped(api, fake):
    fake.script(tool_calls_reply(FakeToolCall(None, "lookup", ["{}"])))
    assistant = await api.ok("POST", "/assistants", {"model": "fake-a", "tools": TOOLS})
    thread = await api.ok("POST", "/threads", {"messages": [{"role": "user", "content": "loop"}]})
    run = await api.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"]})
    for _ in range(3):
        waiting = await wait_run(api, thread["id"], run["id"])
        if waiting["status"] != "requires_action":
            break
        calls = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
        await api.ok("POST", f"/threads/{thread['id']}/runs/{run['id']}/submit_tool_outputs",
                     {"tool_outputs": [{"tool_call_id": c["id"], "output": "again"} for c in calls]})
    assert waiting["status"] == "failed" and "2 rounds of tool calls" in waiting["last_error"]["message"]


@pytest.mark.parametrize("reply, code", [(error_reply(500), "server_error"), (error_reply(429), "rate_limit_exceeded"),
                                         (error_reply(400, "context too long"), "invalid_prompt")])
async def test_provider_failures_end_the_run_failed_with_last_error(api, fake, reply, code):
    fake.script(reply)
    thread_id, run = await run_on_thread(api, [{"role": "user", "content": "hi"}])
    assert run["status"] == "failed" and run["last_error"]["code"] == code
    await api.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": "unlocked"})


@pytest.mark.parametrize("status", [401, 400])
async def test_a_provider_quoting_its_key_does_not_show_it_in_last_error(api, fake, status):
    """The run's last_error is read by every user of the project and stays in the log: the
    operator's provider key must not reach it, even when the provider echoes it back."""
    fake.script(error_reply(status, "Incorrect API key provided: sk-fake-provider-key (Bearer sk-fake-provider-key)"))
    thread_id, run = await run_on_thread(api, [{"role": "user", "content": "hi"}])
    assert run["status"] == "failed" and "Incorrect API key provided" in run["last_error"]["message"]
    assert "sk-fake-provider-key" not in json.dumps(run)
    events = (await api.ok("GET", f"/threads/{thread_id}/events"))["data"]
    assert "sk-fake-provider-key" not in json.dumps(events)


async def test_completion_budget_reached_ends_incomplete_with_the_partial_reply(api, fake):
    fake.script(text_reply("cut", " short", finish_reason="length"))
    thread_id, run = await run_on_thread(api, [{"role": "user", "content": "long story"}], max_completion_tokens=256)
    assert run["status"] == "incomplete" and run["incomplete_details"] == {"reason": "max_completion_tokens"}
    reply = (await api.ok("GET", f"/threads/{thread_id}/messages"))["data"][0]
    assert reply["status"] == "incomplete" and reply["incomplete_details"] == {"reason": "max_tokens"}
    assert reply["content"][0]["text"]["value"] == "cut short"


async def test_a_prompt_over_max_prompt_tokens_ends_incomplete_without_calling_the_model(api, fake):
    fake.script(text_reply("never"))
    _, run = await run_on_thread(api, [{"role": "user", "content": "word " * 600}], max_prompt_tokens=256)
    assert run["status"] == "incomplete" and run["incomplete_details"] == {"reason": "max_prompt_tokens"}
    assert fake.requests == []


async def test_truncation_keeps_the_last_messages_and_fits_the_context_window(api, fake):
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " + "pad " * 20}
               for i in range(9)]
    fake.script(text_reply("ok"))
    await run_on_thread(api, history, truncation_strategy={"type": "last_messages", "last_messages": 2})
    sent = fake.requests[0].body["messages"]
    assert [m["role"] for m in sent] == ["system", "assistant", "user"]
    assert sent[-1]["content"].startswith("message 8")
    # auto on a model with a 300-token window: the oldest messages go, the newest stay, in order.
    await run_on_thread(api, history, model="fake-small")
    sent = fake.requests[1].body["messages"]
    kept = [int(m["content"].split()[1]) for m in sent[1:]]
    assert 0 < len(kept) < 9 and kept == list(range(9 - len(kept), 9))


# --- the cached tail: a run sends the thread as it is now ----------------------------------------

def tails(api: Client) -> TailCache:
    return api.http.server.app[SERVICES].engine.deps.tails


async def sent_after_run(api: Client, fake: FakeOpenAI, thread_id: str, assistant_id: str, **run) -> list[dict]:
    """The messages the model was sent by a new run on the thread (which completes)."""
    before = len(fake.requests)
    created = await api.ok("POST", f"/threads/{thread_id}/runs", {"assistant_id": assistant_id, **run})
    assert (await wait_run(api, thread_id, created["id"]))["status"] == "completed"
    assert len(fake.requests) == before + 1
    return fake.requests[-1].body["messages"]


async def thread_as_chat(api: Client, thread_id: str) -> list[dict]:
    """The thread's messages as the API lists them, in the shape a model is sent them."""
    data = (await api.ok("GET", f"/threads/{thread_id}/messages?order=asc&limit=100"))["data"]
    return [{"role": m["role"], "content": "\n\n".join(p["text"]["value"] for p in m["content"])} for m in data]


@pytest.fixture
def count_reads(monkeypatch):
    """How often runs read messages from Postgres page by page (not from their cached tail)."""
    reads = []
    real = queries.recent_messages

    async def counted(*args):
        reads.append(args[1:])
        return await real(*args)

    monkeypatch.setattr(queries, "recent_messages", counted)
    return reads


async def test_consecutive_runs_send_the_thread_as_it_is_now(api, fake, count_reads):
    fake.script(text_reply("one"), text_reply("two"), text_reply("three"))
    assistant = await api.ok("POST", "/assistants", {"model": "fake-a", "instructions": "Be brief."})
    thread = await api.ok("POST", "/threads", {"messages": [
        {"role": "user", "content": f"message {i}"} for i in range(4)]})
    tid, system = thread["id"], [{"role": "system", "content": "Be brief."}]
    expected = system + await thread_as_chat(api, tid)
    assert await sent_after_run(api, fake, tid, assistant["id"]) == expected
    assert tid in tails(api) and len(count_reads) == 1

    # The first run's reply (completed after it was created), a new message, a deleted one and an
    # updated one: the second run sees each change, from the cached tail, without reading the thread.
    listed = (await api.ok("GET", f"/threads/{tid}/messages?order=asc"))["data"]
    await api.ok("DELETE", f"/threads/{tid}/messages/{listed[1]['id']}")
    await api.ok("POST", f"/threads/{tid}/messages/{listed[2]['id']}", {"metadata": {"seen": "yes"}})
    await api.ok("POST", f"/threads/{tid}/messages", {"role": "user", "content": "and now?"})
    expected = system + await thread_as_chat(api, tid)
    sent = await sent_after_run(api, fake, tid, assistant["id"])
    assert sent == expected
    assert [m["content"] for m in sent[1:]] == ["message 0", "message 2", "message 3", "one", "and now?"]
    assert len(count_reads) == 1
    # Two in a row: the second run's reply is there for the third.
    assert (await sent_after_run(api, fake, tid, assistant["id"]))[-1] == {"role": "assistant", "content": "two"}
    assert len(count_reads) == 1


async def test_a_run_sees_what_another_process_wrote_to_the_thread(api, fake, db):
    fake.script(text_reply("ok"))
    assistant = await api.ok("POST", "/assistants", {"model": "fake-a"})
    thread = await api.ok("POST", "/threads", {"messages": [{"role": "user", "content": "first"},
                                                            {"role": "user", "content": "second"}]})
    tid = thread["id"]
    await sent_after_run(api, fake, tid, assistant["id"])
    first = (await api.ok("GET", f"/threads/{tid}/messages?order=asc"))["data"][0]
    # Another process: its own actor and store over the same database.
    other_store = EventStore(db, SERVICE_PROJECTIONS)
    other = ActorRegistry(other_store, db)
    try:
        project = api.http.server.app[SERVICES].actors._actors[tid].state.project
        await other.ask(tid, thread_domain.DeleteMessage(project, first["id"]))
        await other.ask(tid, thread_domain.AddMessage(project, now(), NewMessage(
            message_id=new_id("msg_"), role="user", content=[TextPart(TextValue("from elsewhere"))])))
    finally:
        await other.close()
        await other_store.close()
    expected = await thread_as_chat(api, tid)
    sent = await sent_after_run(api, fake, tid, assistant["id"])
    assert sent == expected and [m["content"] for m in sent] == ["second", "ok", "from elsewhere"]


async def test_deleting_or_erasing_a_thread_drops_its_cached_tail(api, fake):
    fake.script(text_reply("ok"))
    assistant = await api.ok("POST", "/assistants", {"model": "fake-a"})
    for ending in ("DELETE", "erase"):
        thread = await api.ok("POST", "/threads", {"messages": [{"role": "user", "content": "words to forget"}]})
        await sent_after_run(api, fake, thread["id"], assistant["id"])
        assert thread["id"] in tails(api)
        if ending == "DELETE":
            await api.ok("DELETE", f"/threads/{thread['id']}")
        else:
            await api.ok("POST", f"/threads/{thread['id']}/erase")
        assert thread["id"] not in tails(api)


async def test_a_truncated_long_thread_gets_the_same_prompt_from_the_cache_as_from_postgres(api, fake, count_reads):
    """fake-small's 300-token window holds about 10 of these messages, so a run reads the newest
    page of 50; deleting messages of that page makes the next run read further back."""
    fake.script(text_reply("ok"))
    assistant = await api.ok("POST", "/assistants", {"model": "fake-small"})
    thread = await api.ok("POST", "/threads", {"messages": [
        {"role": "user", "content": f"message {i} " + "pad " * 20} for i in range(120)]})
    tid = thread["id"]
    await sent_after_run(api, fake, tid, assistant["id"])
    for strategy in ({"type": "auto"}, {"type": "last_messages", "last_messages": 3}):
        newest = (await api.ok("GET", f"/threads/{tid}/messages?order=desc&limit=40"))["data"]
        for m in newest[2:40:5]:        # 8 of the cached 50 go
            await api.ok("DELETE", f"/threads/{tid}/messages/{m['id']}")
        await api.ok("POST", f"/threads/{tid}/messages", {"role": "user", "content": "latest " + "pad " * 20})
        reads = len(count_reads)
        cached = await sent_after_run(api, fake, tid, assistant["id"], truncation_strategy=strategy)
        # Only the page before the cached ones: the tail is still read in whole pages of 50.
        assert len(count_reads) == reads + 1 and count_reads[-1][1] is not None
        # The same thread (its newest reply deleted) read afresh: the same prompt.
        reply = (await api.ok("GET", f"/threads/{tid}/messages?limit=1"))["data"][0]
        await api.ok("DELETE", f"/threads/{tid}/messages/{reply['id']}")
        tails(api).drop(tid)
        fresh = await sent_after_run(api, fake, tid, assistant["id"], truncation_strategy=strategy)
        assert cached == fresh and 1 < len(fresh) < 15 and fresh[-1]["content"] == "latest " + "pad " * 20
