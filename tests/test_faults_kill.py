"""`kill -9` of a real `threadline serve` process, then a restart on the same database: during
message appends from many concurrent clients, during a streaming run (an SDK stream, and the
resumable thread stream, both followed live), and with runs waiting in requires_action.

Every acknowledged write must be in the log and the read models; a write whose answer was lost
must be there whole or not at all; no run may stay active; streams resume from their last event
id without a repeat or a gap. (tests/test_run_recovery.py covers a polled run killed mid-reply.)"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from conftest import ServiceProcess, new_key, until
from faults import (
    NOT_FOR_SDKS, Api, SseReader, check_no_leases, check_threads, delta_text, script_model,
    start_assistant_and_thread,
)

ENV = {"THREADLINE_RUN_LEASE_SECONDS": "1.5", "THREADLINE_RUN_SWEEP_SECONDS": "0.2",
       "THREADLINE_SHUTDOWN_GRACE_SECONDS": "0.3"}
ANSWER = "one two three four five six seven eight"
THREADS, CLIENTS, ACKED_BEFORE_KILL = 8, 48, 400


@pytest.fixture
async def processes(own_database):
    """Start service processes with `start()`; each is stopped (or, when killed, tidied) at the end."""
    started: list[ServiceProcess] = []

    async def start() -> ServiceProcess:
        started.append(await asyncio.to_thread(ServiceProcess, own_database[0], ENV))
        return started[-1]

    yield start
    for p in started:
        p.stop()        # a killed one too: stop() removes its log


def kill_9(process: ServiceProcess) -> None:
    process.proc.kill()              # SIGKILL: no shutdown, nothing flushed, connections just drop
    process.proc.wait(10)


async def test_kill_9_during_appends_under_load(own_database, processes):
    _, pool = own_database
    key = await new_key(pool, "kill-appends")
    first = await processes()
    async with aiohttp.ClientSession() as http:
        api = Api(http, key, first.url)
        threads = [(await api.ok("POST", "/threads", {}))["id"] for _ in range(THREADS)]
        attempted: dict[str, tuple[str, str]] = {}        # request id -> (thread, text)
        acked: dict[str, tuple[str, str]] = {}            # request id -> (thread, message id)

        async def client(c: int) -> None:
            for n in range(10_000):
                thread_id, rid, text = threads[(c + n) % THREADS], f"kill-{c}-{n}", f"client {c} message {n}"
                attempted[rid] = (thread_id, text)
                try:
                    status, body = await api.call("POST", f"/threads/{thread_id}/messages",
                                                  {"role": "user", "content": text}, headers={"x-request-id": rid})
                except (aiohttp.ClientError, ConnectionError):
                    return                       # the service is gone: this write's fate is unknown
                assert status == 200, body
                acked[rid] = (thread_id, body["id"])

        clients = [asyncio.create_task(client(c)) for c in range(CLIENTS)]
        await until(lambda: len(acked) >= ACKED_BEFORE_KILL or any(t.done() for t in clients),
                         what="appends under way", timeout=30, interval=0.005)
        kill_9(first)
        await asyncio.gather(*clients)
        unknown = set(attempted) - set(acked)
        assert unknown, "every write was answered before the kill: it hit nothing in flight"

        second = await processes()
        api.base = second.url
        logs = await check_threads(pool, threads)
        created = {r["request_id"]: json.loads(r["data"])["message_id"]
                   for rows in logs.values() for r in rows if r["type"] == "MessageCreated"}
        texts = {m["id"]: (t, m["content"][0]["text"]["value"]) for t in threads for m in await api.all_messages(t)}
        for rid, (thread_id, message_id) in acked.items():
            assert created.get(rid) == message_id, f"acknowledged message {message_id} is not in the log"
            assert texts.get(message_id) == attempted[rid], f"acknowledged message {message_id} is not readable"
        for rid in unknown:
            if rid in created:       # committed before the kill, answer lost: it must be there whole
                assert texts.get(created[rid]) == attempted[rid]
            else:
                assert attempted[rid] not in texts.values(), f"{rid}: a message without its event"
        assert len(texts) == len(created)

        # The threads go on where the log says they are, from the new process.
        for thread_id in threads:
            await api.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": "after the kill"})
        await check_threads(pool, threads)


async def test_kill_9_during_a_streaming_run(own_database, processes, tmp_path):
    _, pool = own_database
    key = await new_key(pool, "kill-stream")
    first = await processes()
    async with aiohttp.ClientSession() as http:
        api = Api(http, key, first.url)
        assistant_id, thread_id = await start_assistant_and_thread(
            api, script_model(tmp_path, {"text": ANSWER, "chunk_delay": 0.3}))
        follower, sdk = SseReader(), SseReader()
        thread_stream = await http.get(f"{first.url}/v1/threads/{thread_id}/stream", headers=api.headers())
        following = asyncio.create_task(follower.read(thread_stream))
        sdk_stream = await http.post(f"{first.url}/v1/threads/{thread_id}/runs", headers=api.headers(),
                                     json={"assistant_id": assistant_id, "stream": True})
        streaming = asyncio.create_task(sdk.read(sdk_stream))
        await until(lambda: sum(f.event == "thread.message.delta" for f in sdk.frames) >= 2,
                         what="the reply streaming", timeout=30, interval=0.005)
        kill_9(first)
        await asyncio.gather(following, streaming)
        assert sdk.cut and follower.cut and not sdk.done
        run_id = sdk.frames[0].json["id"]
        assert sdk.frames[0].event == "thread.run.created"

        second = await processes()
        api.base = second.url
        resumed = SseReader()
        async with asyncio.timeout(30):
            async with http.get(f"{second.url}/v1/threads/{thread_id}/runs/{run_id}/stream",
                                headers=api.headers({"Last-Event-ID": str(sdk.last_id)})) as r:
                await resumed.read(r)
            async with http.get(f"{second.url}/v1/threads/{thread_id}/stream",
                                headers=api.headers({"Last-Event-ID": str(follower.last_id)})) as r:
                thread_resumed = SseReader()
                await thread_resumed.read(r, stop=lambda f: f.event == "thread.run.completed")
        assert resumed.done and resumed.frames[-1].event == "thread.run.completed"

        # The whole run replayed from the log: the two halves of each stream are exactly it.
        replay = SseReader()
        async with http.get(f"{second.url}/v1/threads/{thread_id}/runs/{run_id}/stream", headers=api.headers()) as r:
            await replay.read(r)
        assert replay.done
        cut_at = sdk.last_id
        before = [(f.id, f.event) for f in replay.frames if f.id <= cut_at and f.event not in NOT_FOR_SDKS]
        assert [(f.id, f.event) for f in sdk.frames] == before[:len(sdk.frames)]
        after = [f for f in replay.frames if f.id > cut_at]
        assert [(f.id, f.event) for f in resumed.frames] == [(f.id, f.event) for f in after], "lost or repeated"
        assert delta_text(resumed.frames) == delta_text(after)

        whole_thread = SseReader()
        async with http.get(f"{second.url}/v1/threads/{thread_id}/stream", headers=api.headers()) as r:
            await whole_thread.read(r, stop=lambda f: f.event == "thread.run.completed")
        seen = [(f.id, f.event) for f in follower.frames + thread_resumed.frames]
        assert seen == [(f.id, f.event) for f in whole_thread.frames if f.id <= follower.last_id
                        ][:len(follower.frames)] + [(f.id, f.event) for f in whole_thread.frames
                                                    if f.id > follower.last_id]

        # One answer, whole, streamed after the restart; the interrupted reply is gone.
        (completed,) = [f.json for f in resumed.frames if f.event == "thread.message.completed"]
        assert completed["content"][0]["text"]["value"] == ANSWER
        assert delta_text(resumed.frames, completed["id"]) == ANSWER
        replies = [m for m in await api.all_messages(thread_id) if m["role"] == "assistant"]
        assert [m["content"][0]["text"]["value"] for m in replies] == [ANSWER]
        await check_threads(pool, [thread_id])
        await check_no_leases(pool, [thread_id])


async def test_kill_9_with_runs_waiting_for_tool_outputs(own_database, processes, tmp_path):
    """One run waits in requires_action across the kill; another had its outputs acknowledged
    just before it, so its next turn was queued or starting when the process died."""
    _, pool = own_database
    key = await new_key(pool, "kill-tools")
    model = script_model(tmp_path, {"tool_calls": [{"name": "lookup", "arguments": {"q": "tides"}}]},
                         {"text": ANSWER, "chunk_delay": 0.05})
    first = await processes()
    async with aiohttp.ClientSession() as http:
        api = Api(http, key, first.url)
        assistant_id, waiting_thread = await start_assistant_and_thread(api, model)
        sdk = SseReader()
        async with http.post(f"{first.url}/v1/threads/{waiting_thread}/runs", headers=api.headers(),
                             json={"assistant_id": assistant_id, "stream": True}) as r:
            await sdk.read(r)
        assert sdk.done and sdk.frames[-1].event == "thread.run.requires_action"
        waiting = sdk.frames[-1].json

        submitted_thread = (await api.ok("POST", "/threads", {"messages": [{"role": "user", "content": "go"}]}))["id"]
        run = await api.ok("POST", f"/threads/{submitted_thread}/runs", {"assistant_id": assistant_id})
        run = await api.until(f"/threads/{submitted_thread}/runs/{run['id']}",
                              lambda r: r["status"] == "requires_action")
        (call,) = run["required_action"]["submit_tool_outputs"]["tool_calls"]
        await api.ok("POST", f"/threads/{submitted_thread}/runs/{run['id']}/submit_tool_outputs",
                     {"tool_outputs": [{"tool_call_id": call["id"], "output": "06:00"}]})
        kill_9(first)

        second = await processes()
        api.base = second.url
        # The acknowledged outputs survived: the run is taken over and answers once, from them.
        done = await api.run_ended(submitted_thread, run["id"])
        assert done["status"] == "completed", done
        steps = (await api.ok("GET", f"/threads/{submitted_thread}/runs/{run['id']}/steps?order=asc"))["data"]
        tool_step = next(s for s in steps if s["type"] == "tool_calls")
        assert tool_step["status"] == "completed"
        assert tool_step["step_details"]["tool_calls"][0]["function"]["output"] == "06:00"
        replies = [m for m in await api.all_messages(submitted_thread) if m["role"] == "assistant"]
        assert [m["content"][0]["text"]["value"] for m in replies] == [ANSWER]

        # The waiting run needed no process: after the sweeps that took the other one over it is
        # still waiting for the same calls, and answering them finishes it.
        now = await api.ok("GET", f"/threads/{waiting_thread}/runs/{waiting['id']}")
        assert now["status"] == "requires_action" and now["required_action"] == waiting["required_action"]
        calls = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
        finished = SseReader()
        async with asyncio.timeout(30):
            async with http.post(f"{second.url}/v1/threads/{waiting_thread}/runs/{waiting['id']}/submit_tool_outputs",
                                 headers=api.headers(), json={"stream": True, "tool_outputs": [
                                     {"tool_call_id": c["id"], "output": "low tide"} for c in calls]}) as r:
                await finished.read(r)
        assert finished.done and finished.frames[-1].event == "thread.run.completed"
        assert delta_text(finished.frames) == ANSWER
        await check_threads(pool, [waiting_thread, submitted_thread])
        await check_no_leases(pool, [waiting_thread, submitted_thread])
