"""Server-sent events from the log: the SDK sequences of §4.3, resumable run and thread streams,
cut-and-resume without losing or repeating a token, and a stream served by another process."""

from __future__ import annotations

import asyncio
import json
import random
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from conftest import Client, new_key
from conftest import test_config as make_config
from faults import FrameId
from service.app import create_app
from test_runs_api import script, wait_run

ANSWER = " ".join(f"w{i}" for i in range(40))


def parse(raw: bytes) -> list[tuple[str | None, str, str]]:
    """(id, event, data) per frame, checking the framing both SDK parsers need."""
    assert b"\r" not in raw
    frames = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = block.split("\n")
        assert not any(line.startswith(":") for line in lines), block
        fields = dict(line.split(": ", 1) for line in lines)
        assert set(fields) <= {"id", "event", "data"} and "event" in fields and "data" in fields, block
        frames.append((fields.get("id"), fields["event"], fields["data"]))
    return frames


async def sse(client: Client, method: str, path: str, body=None, headers=None) -> list[tuple]:
    status, raw, resp_headers = await client.raw(method, path, json=body, headers=headers)
    assert status == 200 and resp_headers["Content-Type"].startswith("text/event-stream"), raw[:300]
    return parse(raw)


async def assistant(client: Client, model: str) -> str:
    return (await client.ok("POST", "/assistants", {"model": model, "tools": [
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]}))["id"]


def names(frames) -> list[str]:
    return [e for _, e, _ in frames]


def text_of(frames) -> str:
    return "".join(json.loads(d)["delta"]["content"][0]["text"]["value"]
                   for _, e, d in frames if e == "thread.message.delta")


async def test_a_streamed_text_run_follows_the_canonical_sequence(client):
    asst = await assistant(client, "builtin/echo")
    thread = await client.ok("POST", "/threads", {"messages": [{"role": "user", "content": "stream me please"}]})
    frames = await sse(client, "POST", f"/threads/{thread['id']}/runs", {"assistant_id": asst, "stream": True})
    assert names(frames)[:8] == [
        "thread.run.created", "thread.run.queued", "thread.run.in_progress", "thread.run.step.created",
        "thread.run.step.in_progress", "thread.message.created", "thread.message.in_progress",
        "thread.message.delta"]
    tail = [n for n in names(frames) if n != "thread.message.delta"]
    assert tail[-4:] == ["thread.message.completed", "thread.run.step.completed", "thread.run.completed", "done"]
    assert frames[-1] == (None, "done", "[DONE]")
    assert text_of(frames) == "stream me please"
    created = json.loads(frames[5][2])
    assert created["content"] == [] and created["status"] == "in_progress"
    completed = json.loads(next(d for _, e, d in frames if e == "thread.message.completed"))
    assert completed["content"][0]["text"]["value"] == "stream me please"
    run = json.loads(next(d for _, e, d in frames if e == "thread.run.completed"))
    assert run["usage"]["total_tokens"] > 0
    ids = [FrameId(i) for i, _, _ in frames if i is not None]
    assert ids == sorted(set(ids))


async def test_tool_calls_stream_to_requires_action_then_done_and_outputs_stream_the_rest(client, tmp_path):
    model = script(tmp_path, {"tool_calls": [{"name": "get_time", "arguments": {"tz": "UTC"}}]}, {"text": "It is noon."})
    asst = await assistant(client, model)
    frames = await sse(client, "POST", "/threads/runs", {"assistant_id": asst, "stream": True,
                                                        "thread": {"messages": [{"role": "user", "content": "time?"}]}})
    assert names(frames)[:6] == ["thread.created", "thread.run.created", "thread.run.queued", "thread.run.in_progress",
                                 "thread.run.step.created", "thread.run.step.in_progress"]
    assert set(names(frames)[6:-2]) == {"thread.run.step.delta"}
    assert names(frames)[-2:] == ["thread.run.requires_action", "done"]
    assert json.loads(frames[4][2])["step_details"] == {"type": "tool_calls", "tool_calls": []}
    deltas = [json.loads(d)["delta"]["step_details"]["tool_calls"][0] for _, e, d in frames if e == "thread.run.step.delta"]
    call = deltas[0]    # announced first, with no arguments yet; then only argument fragments
    assert call["index"] == 0 and call["function"] == {"name": "get_time", "arguments": "", "output": None}
    assert all(set(d) == {"index", "type", "function"} and set(d["function"]) == {"arguments"} for d in deltas[1:])
    assert "".join(d["function"]["arguments"] for d in deltas) == '{"tz": "UTC"}'
    run = json.loads(frames[-2][2])
    rest = await sse(client, "POST", f"/threads/{run['thread_id']}/runs/{run['id']}/submit_tool_outputs",
                     {"stream": True, "tool_outputs": [{"tool_call_id": call["id"], "output": "12:00"}]})
    assert names(rest)[:3] == ["thread.run.step.completed", "thread.run.queued", "thread.run.in_progress"]
    step = json.loads(rest[0][2])
    assert step["step_details"]["tool_calls"][0]["function"]["output"] == "12:00"
    assert text_of(rest) == "It is noon." and names(rest)[-2:] == ["thread.run.completed", "done"]


async def test_a_failed_run_streams_failed_then_done(client, tmp_path):
    asst = await assistant(client, script(tmp_path, {"error": {"code": "server_error", "message": "down"}}))
    thread = await client.ok("POST", "/threads")
    frames = await sse(client, "POST", f"/threads/{thread['id']}/runs", {"assistant_id": asst, "stream": True})
    assert names(frames)[-2:] == ["thread.run.failed", "done"]
    assert json.loads(frames[-2][2])["last_error"] == {"code": "server_error", "message": "down"}


async def test_a_finished_run_replays_from_the_log_and_resumes_after_any_id(client):
    asst = await assistant(client, "builtin/echo")
    thread = await client.ok("POST", "/threads", {"messages": [{"role": "user", "content": ANSWER}]})
    run = await client.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": asst})
    await wait_run(client, thread["id"], run["id"])
    path = f"/threads/{thread['id']}/runs/{run['id']}/stream"
    full = await sse(client, "GET", path)
    assert names(full)[0] == "thread.run.created" and names(full)[-2:] == ["thread.run.completed", "done"]
    assert text_of(full) == ANSWER
    for cut in {i for i, _, _ in full if i is not None}:
        rest = await sse(client, "GET", path, headers={"Last-Event-ID": cut})
        before = [f for f in full if f[0] is not None and FrameId(f[0]) <= FrameId(cut)]
        assert text_of(before) + text_of(rest) == ANSWER
        assert all(FrameId(i) > FrameId(cut) for i, _, _ in rest if i is not None)
        assert await sse(client, "GET", f"{path}?after={cut}") == rest      # the same resume for a URL alone
    status, body = await client.call("GET", path, params={"after": "abc"})
    assert status == 400


@pytest.fixture
async def slow_client(database_url, project):
    app = create_app(make_config(stream_keepalive_seconds=0.2), database_url)
    http = TestClient(TestServer(app))
    await http.start_server()
    yield Client(http, project[1]), http
    await http.close()


async def test_cutting_a_live_stream_anywhere_and_resuming_loses_and_repeats_nothing(slow_client, tmp_path):
    client, http = slow_client
    rng = random.Random(7)
    asst = await assistant(client, script(tmp_path, {"text": ANSWER, "chunk_delay": 0.01}))
    for _ in range(6):
        thread = await client.ok("POST", "/threads", {"messages": [{"role": "user", "content": "go"}]})
        run = await client.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": asst})
        url = f"/v1/threads/{thread['id']}/runs/{run['id']}/stream"
        text, last_id, finished = "", None, False
        while not finished:
            headers = {"Authorization": f"Bearer {client.key}"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            budget = rng.randint(1, 12)       # frames to read before we drop the connection
            async with http.get(url, headers=headers) as resp:
                buffer = b""
                async for piece in resp.content.iter_any():
                    buffer += piece
                    while b"\n\n" in buffer:
                        block, buffer = buffer.split(b"\n\n", 1)
                        (frame,) = parse(block + b"\n\n")
                        if frame[1] == "done":
                            finished = True
                            break
                        if frame[1] == "thread.message.delta":
                            text += json.loads(frame[2])["delta"]["content"][0]["text"]["value"]
                        if frame[0] is not None:
                            last_id = frame[0]
                        budget -= 1
                        if budget == 0:
                            break
                    if finished or budget == 0:
                        break
        assert text == ANSWER


async def test_the_thread_stream_stays_open_between_runs_and_sends_keepalives(slow_client):
    client, http = slow_client
    asst = await assistant(client, "builtin/echo")
    thread = await client.ok("POST", "/threads")
    url = f"/v1/threads/{thread['id']}/stream?api_key={client.key}"      # as EventSource sends it
    seen: list[tuple] = []
    async with http.get(url) as resp:
        assert resp.status == 200

        async def read_until(predicate):
            buffer = b""
            async for piece in resp.content.iter_any():
                buffer += piece
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    seen.extend(parse(block + b"\n\n"))
                    if predicate():
                        return

        for word in ("first", "second"):
            await client.ok("POST", f"/threads/{thread['id']}/messages", {"role": "user", "content": word})
            await client.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": asst})
            await asyncio.wait_for(read_until(lambda: names(seen).count("thread.run.completed") == (
                1 if word == "first" else 2)), 10)
        await asyncio.wait_for(read_until(lambda: names(seen)[-1] == "ping"), 5)
    assert names(seen).count("thread.message.created") == 4      # two from users, two replies
    assert "done" not in names(seen)


async def test_a_stream_from_another_process_receives_every_event(database_url, db, service, tmp_path):
    """The run executes in the `service` process; this process's app streams it through the log."""
    key = await new_key(db)
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"turns": [{"text": ANSWER, "chunk_delay": 0.02}]}))
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as remote:
        async with remote.post(f"{service.url}/v1/assistants", json={"model": f"builtin/script:{path}"}) as r:
            asst = (await r.json())["id"]
        async with remote.post(f"{service.url}/v1/threads/runs", json={
                "assistant_id": asst, "thread": {"messages": [{"role": "user", "content": "go"}]}}) as r:
            run = await r.json()
    app = create_app(make_config(), database_url)
    http = TestClient(TestServer(app))
    await http.start_server()
    try:
        here = Client(http, key)
        started = time.monotonic()
        frames = await sse(here, "GET", f"/threads/{run['thread_id']}/runs/{run['id']}/stream")
        assert text_of(frames) == ANSWER and names(frames)[-2:] == ["thread.run.completed", "done"]
        assert time.monotonic() - started < 10
    finally:
        await http.close()


def test_a_slow_subscriber_is_cut_loose_without_touching_the_others():
    from datetime import datetime, timezone

    from events.store import EventMetadata, RecordedEvent
    from events.types import ThreadDeleted
    from service.streams.hub import MAX_QUEUED, StreamHub

    hub = StreamHub()
    slow, quick = hub.subscribe("thread-t"), hub.subscribe("thread-t")
    def event(v):
        return RecordedEvent(v, "thread-t", v, "ThreadDeleted", ThreadDeleted(thread_id="t"), EventMetadata(),
                             datetime.now(timezone.utc))
    for start in range(0, MAX_QUEUED + 1, 100):
        hub.publish([event(v) for v in range(start + 1, start + 101)])
        quick.take()                          # keeps up
    assert slow.overflowed and not slow.queue  # nothing more is held for it; it resumes from the log
    assert not quick.overflowed
    hub.publish([event(MAX_QUEUED + 200)])
    assert [r.version for r in quick.take()[0]] == [MAX_QUEUED + 200]


async def test_a_client_that_goes_away_releases_its_subscription(slow_client):
    from service.api.http import SERVICES

    client, http = slow_client
    hub = http.app[SERVICES].hub
    thread = await client.ok("POST", "/threads")
    before = len(hub)
    async with http.get(f"/v1/threads/{thread['id']}/stream?api_key={client.key}") as resp:
        assert resp.status == 200
        await resp.content.readline()
        assert len(hub) == before + 1
    deadline = time.monotonic() + 5
    while len(hub) != before:
        assert time.monotonic() < deadline, "the subscription outlived its client"
        await asyncio.sleep(0.02)
