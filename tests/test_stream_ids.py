"""Every SSE frame has its own id: a stream cut after ANY frame — between two frames of one event
too (a run's `created` and `queued`, a step's `created`, `in_progress` and calls) — resumes with
exactly the frames after it, on the run stream, the thread stream and an SDK POST stream."""

from __future__ import annotations

import asyncio
import json
import random

from test_runs_api import script, wait_run
from test_streams import parse, slow_client, sse  # noqa: F401  (slow_client: a fixture)

TOOLS = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]


def seen(frames) -> list[tuple]:
    """What a resuming client must get the same: each frame's id and name, and a delta's content
    (other objects are seeded from the read model's current state on a resume)."""
    return [(i, e, d if e.endswith(".delta") else None) for i, e, d in frames if e not in ("ping", "done")]


async def a_run_with_many_multi_frame_events(client, tmp_path) -> tuple[str, str, list[tuple]]:
    """A run that says something, calls a tool, then answers; (thread id, run id, its POST stream)."""
    model = script(tmp_path, {"text": "Let me check the time.", "tool_calls": [{"name": "get_time", "arguments": {}}]},
                   {"text": "It is noon, time for lunch."})
    asst = (await client.ok("POST", "/assistants", {"model": model, "tools": TOOLS}))["id"]
    thread = await client.ok("POST", "/threads", {"messages": [{"role": "user", "content": "what time is it?"}]})
    posted = await sse(client, "POST", f"/threads/{thread['id']}/runs", {"assistant_id": asst, "stream": True})
    run = json.loads(posted[0][2])
    waiting = await wait_run(client, thread["id"], run["id"])
    (call,) = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    await client.ok("POST", f"/threads/{thread['id']}/runs/{run['id']}/submit_tool_outputs",
                    {"tool_outputs": [{"tool_call_id": call["id"], "output": "12:00"}]})
    assert (await wait_run(client, thread["id"], run["id"]))["status"] == "completed"
    return thread["id"], run["id"], posted


async def thread_stream(http, key: str, thread_id: str, query: str = "", headers=None) -> list[tuple]:
    """The thread stream's frames up to its first keep-alive: the run has ended, so by then it has
    sent everything the log holds."""
    frames: list[tuple] = []
    async with http.get(f"/v1/threads/{thread_id}/stream?api_key={key}{query}", headers=headers) as resp:
        assert resp.status == 200
        buffer = b""

        async def read():
            nonlocal buffer
            async for piece in resp.content.iter_any():
                buffer += piece
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    frames.extend(parse(block + b"\n\n"))
                    if frames[-1][1] == "ping":
                        return
        await asyncio.wait_for(read(), 10)
    return frames


def cuts(full: list[tuple]) -> list[int]:
    """Every cut point, or 30 random ones with a fixed seed; always every cut inside an event."""
    points = [i for i in range(len(full)) if full[i][0] is not None]
    inside = [i for i in points if "." in full[i][0]]
    return sorted(set(inside) | set(random.Random(14).sample(points, min(30, len(points)))))


async def test_every_frame_has_its_own_id_and_the_last_of_an_event_is_its_version(slow_client, tmp_path):
    client, _ = slow_client
    thread_id, run_id, posted = await a_run_with_many_multi_frame_events(client, tmp_path)
    full = seen(await sse(client, "GET", f"/threads/{thread_id}/runs/{run_id}/stream"))
    ids = [i for i, _, _ in full]
    assert None not in ids and len(set(ids)) == len(ids)
    created = [i for i, e, _ in full if e in ("thread.run.created", "thread.run.queued")]
    v = created[1]
    assert v.isdigit() and created[:2] == [f"{v}.1", v]
    d = next(n for n, (_, e, _) in enumerate(full) if e == "thread.run.step.delta")    # a tool step's calls
    x, y = full[d - 1][0], full[d + 1][0]
    assert [(i, e) for i, e, _ in full[d - 2:d + 2]] == [       # the step opens; the call is announced, then its arguments
        (f"{x}.1", "thread.run.step.created"), (x, "thread.run.step.in_progress"),
        (f"{y}.1", "thread.run.step.delta"), (y, "thread.run.step.delta")]
    assert seen(posted) == full[:len(seen(posted))]         # the SDK stream's frames carry the same ids
    for bad in ("5.0", "0.1", "1.2.3", "1.", ".1", "x.1"):
        status, _ = await client.call("GET", f"/threads/{thread_id}/runs/{run_id}/stream", params={"after": bad})
        assert status == 400, bad


async def test_the_run_stream_resumes_after_any_frame_losing_and_repeating_nothing(slow_client, tmp_path):
    client, _ = slow_client
    thread_id, run_id, _ = await a_run_with_many_multi_frame_events(client, tmp_path)
    path = f"/threads/{thread_id}/runs/{run_id}/stream"
    full = seen(await sse(client, "GET", path))
    for cut in cuts(full):
        last = full[cut][0]
        by_header = seen(await sse(client, "GET", path, headers={"Last-Event-ID": last}))
        assert full[:cut + 1] + by_header == full, f"cut after frame {cut} ({last} {full[cut][1]})"
        assert seen(await sse(client, "GET", f"{path}?after={last}")) == by_header


async def test_the_thread_stream_resumes_after_any_frame_losing_and_repeating_nothing(slow_client, tmp_path):
    client, http = slow_client
    thread_id, _, _ = await a_run_with_many_multi_frame_events(client, tmp_path)
    full = seen(await thread_stream(http, client.key, thread_id))
    assert full[0][1] == "thread.created" and full[-1][1] == "thread.run.completed"
    for cut in cuts(full):
        last = full[cut][0]
        by_header = seen(await thread_stream(http, client.key, thread_id, headers={"Last-Event-ID": last}))
        assert full[:cut + 1] + by_header == full, f"cut after frame {cut} ({last} {full[cut][1]})"
        assert seen(await thread_stream(http, client.key, thread_id, f"&after={last}")) == by_header


async def test_a_plain_version_still_means_after_that_whole_event(slow_client, tmp_path):
    client, http = slow_client
    thread_id, run_id, _ = await a_run_with_many_multi_frame_events(client, tmp_path)
    full = seen(await thread_stream(http, client.key, thread_id))
    created = next(i for i, (_, e, _) in enumerate(full) if e == "thread.run.created")
    version = full[created + 1][0]                          # thread.run.queued: the event's last frame
    rest = seen(await thread_stream(http, client.key, thread_id, f"&after={version}"))
    assert rest == full[created + 2:]
    whole = seen(await sse(client, "GET", f"/threads/{thread_id}/runs/{run_id}/stream"))
    assert seen(await sse(client, "GET", f"/threads/{thread_id}/runs/{run_id}/stream",
                          headers={"Last-Event-ID": version})) == whole[2:]


async def test_an_sdk_post_stream_cut_anywhere_resumes_on_the_run_stream(slow_client, tmp_path):
    client, _ = slow_client
    thread_id, run_id, posted = await a_run_with_many_multi_frame_events(client, tmp_path)
    path = f"/threads/{thread_id}/runs/{run_id}/stream"
    full = seen(await sse(client, "GET", path))
    posted = seen(posted)
    assert posted[-1][1] == "thread.run.requires_action" and len(posted) < len(full)
    for cut in range(len(posted)):
        resumed = seen(await sse(client, "GET", path, headers={"Last-Event-ID": posted[cut][0]}))
        assert posted[:cut + 1] + resumed == full, f"cut after frame {cut} ({posted[cut][0]} {posted[cut][1]})"
