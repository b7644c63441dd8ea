"""Two real `threadline serve` processes on one database under a mixed load sent to both at random:
message appends, runs polled and streamed, tool outputs submitted through either process, racing
run creations and appends to threads whose run is active. Afterwards nothing is lost or recorded
twice, no thread ever had two active runs, and every thread's versions are contiguous.
(tests/test_actors.py has the plain case: appends to one thread through two processes.)"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

import aiohttp

from conftest import ServiceProcess, new_key
from faults import Api, SseReader, check_no_leases, check_threads, delta_text, script_model

THREADS, ROUNDS, HOT_APPENDS = 6, 3, 120
ANSWER = "high tide at six, low tide at noon"


async def test_two_processes_under_a_mixed_load(own_database, tmp_path):
    url, pool = own_database
    key = await new_key(pool, "two-mixed")
    model = script_model(tmp_path, {"tool_calls": [{"name": "lookup", "arguments": {"q": "tides"}}]},
                         {"text": ANSWER, "chunk_delay": 0.02})
    services = await asyncio.gather(*(asyncio.to_thread(ServiceProcess, url) for _ in range(2)))
    bases = [s.url for s in services]
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, key, bases[0])
            assistant_id = (await api.ok("POST", "/assistants", {"model": model, "tools": [
                {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]}))["id"]
            threads = [(await api.ok("POST", "/threads", {}, base=bases[i % 2]))["id"] for i in range(THREADS)]
            hot = (await api.ok("POST", "/threads", {}))["id"]
            acked: dict[str, str] = {}                     # message id -> thread
            runs: dict[str, str] = {}                      # run id -> thread

            async def append(base: str, thread_id: str, text: str, while_running: bool = False) -> None:
                status, body = await api.call("POST", f"/threads/{thread_id}/messages",
                                              {"role": "user", "content": text}, base=base)
                if status == 200:
                    acked[body["id"]] = thread_id
                else:
                    assert while_running and status == 400 and "while a run" in body["error"]["message"], body

            async def create_run(base: str, thread_id: str, stream: bool):
                """(run id, SSE frames up to requires_action) or None when the other creation won."""
                async with http.post(f"{base}/v1/threads/{thread_id}/runs", headers=api.headers(),
                                     json={"assistant_id": assistant_id, "stream": stream}) as r:
                    if r.status != 200:
                        body = await r.json()
                        assert r.status == 400 and "already has an active run" in body["error"]["message"], body
                        return None
                    if not stream:
                        return (await r.json())["id"], None
                    reader = SseReader()
                    await reader.read(r)
                    assert reader.done, "the stream broke"
                    return reader.frames[0].json["id"], reader

            async def user(t: int) -> None:
                rng = random.Random(t)
                thread_id = threads[t]
                for n in range(ROUNDS):
                    here, there = rng.sample(bases, 2)
                    await append(here, thread_id, f"question {n}")
                    stream = (t + n) % 2 == 0
                    # Two clients start a run on the thread at once, through different processes.
                    outcomes = await asyncio.gather(create_run(here, thread_id, stream),
                                                    create_run(there, thread_id, not stream))
                    won = [o for o in outcomes if o is not None]
                    assert len(won) == 1, f"{thread_id}: {len(won)} runs created at once"
                    run_id, reader = won[0]
                    runs[run_id] = thread_id
                    pokes = asyncio.gather(*(append(rng.choice(bases), thread_id, f"interrupting {n}.{i}", True)
                                             for i in range(3)))
                    if reader is None:
                        waiting = await api.until(f"/threads/{thread_id}/runs/{run_id}",
                                                  lambda r: r["status"] == "requires_action")
                    else:
                        assert reader.frames[-1].event == "thread.run.requires_action"
                        waiting = reader.frames[-1].json
                    calls = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
                    outputs = {"tool_outputs": [{"tool_call_id": c["id"], "output": "06:00"} for c in calls]}
                    submit_to = rng.choice(bases)
                    if reader is None:
                        await api.ok("POST", f"/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", outputs,
                                     base=submit_to)
                        done = await api.run_ended(thread_id, run_id)
                    else:
                        finished = SseReader()
                        async with http.post(f"{submit_to}/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
                                             headers=api.headers(), json={**outputs, "stream": True}) as r:
                            await finished.read(r)
                        assert finished.done and delta_text(finished.frames) == ANSWER
                        done = finished.frames[-1].json
                    assert done["status"] == "completed", done
                    await pokes

            async def hot_appends() -> None:
                await asyncio.gather(*(append(bases[i % 2], hot, f"hot {i}") for i in range(HOT_APPENDS)))

            await asyncio.gather(*(user(t) for t in range(THREADS)), hot_appends())

            # Every run's answer is there once; every acknowledged message is readable.
            for run_id, thread_id in runs.items():
                replies = [m for m in await api.all_messages(thread_id) if m.get("run_id") == run_id]
                assert [m["content"][0]["text"]["value"] for m in replies] == [ANSWER], run_id
            for thread_id in {*threads, hot}:
                readable = {m["id"] for m in await api.all_messages(thread_id)}
                assert {m for m, t in acked.items() if t == thread_id} <= readable
    finally:
        for s in services:
            s.stop()
    assert [s.proc.returncode for s in services] == [0, 0]

    logs = await check_threads(pool, [*threads, hot])
    assert len(logs) == THREADS + 1 and len(runs) == THREADS * ROUNDS
    created = Counter(json.loads(r["data"])["message_id"] for rows in logs.values() for r in rows
                      if r["type"] == "MessageCreated")
    assert set(acked) <= set(created)
    # No run was executed twice or handed over (no process died): one of each step per run.
    per_run = Counter((json.loads(r["data"]).get("run_id"), r["type"]) for rows in logs.values() for r in rows)
    for run_id in runs:
        for kind in ("RunCreated", "RunStarted", "RunRequiredAction", "ToolOutputsSubmitted", "RunCompleted"):
            want = 2 if kind == "RunStarted" else 1         # started again after the tool outputs
            assert per_run[(run_id, kind)] == want, (run_id, kind, per_run[(run_id, kind)])
        assert per_run[(run_id, "RunRequeued")] == 0
    await check_no_leases(pool, [*threads, hot])
