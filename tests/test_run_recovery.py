"""Runs survive the process executing them: kill -9 mid-reply, and a SIGTERM hand-over to another
process. Real `threadline serve` processes on one database."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import aiohttp
import pytest

from conftest import ServiceProcess, new_key

FAST_LEASES = {"THREADLINE_RUN_LEASE_SECONDS": "1.5", "THREADLINE_SHUTDOWN_GRACE_SECONDS": "0.3"}
ANSWER = "one two three four five six seven eight"


@pytest.fixture
def slow_script(tmp_path):
    path = tmp_path / "slow.json"
    path.write_text(json.dumps({"turns": [{"text": ANSWER, "chunk_delay": 0.4}]}))
    return f"builtin/script:{path}"


class Api:
    def __init__(self, http: aiohttp.ClientSession, key: str):
        self.http, self.key = http, key

    async def ok(self, method: str, url: str, json_body=None) -> dict:
        async with self.http.request(method, url, json=json_body,
                                     headers={"Authorization": f"Bearer {self.key}"}) as r:
            body = await r.json()
            assert r.status == 200, body
            return body

    async def until(self, url: str, check, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                body = await self.ok("GET", url)
                if check(body):
                    return body
            except aiohttp.ClientError:
                pass      # the process we asked is gone; the caller switches
            assert time.monotonic() < deadline, f"condition not reached on {url}"
            await asyncio.sleep(0.05)


async def _start_slow_run(api: Api, base: str, model: str) -> tuple[str, str]:
    assistant = await api.ok("POST", f"{base}/v1/assistants", {"model": model})
    thread = await api.ok("POST", f"{base}/v1/threads", {"messages": [{"role": "user", "content": "count"}]})
    run = await api.ok("POST", f"{base}/v1/threads/{thread['id']}/runs", {"assistant_id": assistant["id"]})
    # Wait until the reply is being written: the crash must hit a run in the middle of its turn.
    await api.until(f"{base}/v1/threads/{thread['id']}/messages",
                    lambda b: any(m["role"] == "assistant" for m in b["data"]))
    return thread["id"], run["id"]


async def _assert_one_full_answer(api: Api, base: str, thread_id: str, run_id: str) -> None:
    run = await api.until(f"{base}/v1/threads/{thread_id}/runs/{run_id}",
                          lambda r: r["status"] not in ("queued", "in_progress", "cancelling"))
    assert run["status"] == "completed", run
    messages = (await api.ok("GET", f"{base}/v1/threads/{thread_id}/messages"))["data"]
    replies = [m for m in messages if m["role"] == "assistant"]
    assert len(replies) == 1 and replies[0]["content"][0]["text"]["value"] == ANSWER
    await api.ok("POST", f"{base}/v1/threads/{thread_id}/messages", {"role": "user", "content": "unlocked"})


async def test_kill_9_mid_reply_then_restart_finishes_the_run_once(database_url, db, slow_script):
    key = await new_key(db)
    first = await asyncio.to_thread(ServiceProcess, database_url, FAST_LEASES)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, key)
            thread_id, run_id = await _start_slow_run(api, first.url, slow_script)
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(10)
            # Two processes are left, as in a cluster: both find the orphan, one redoes its turn.
            survivors = await asyncio.gather(asyncio.to_thread(ServiceProcess, database_url, FAST_LEASES),
                                             asyncio.to_thread(ServiceProcess, database_url, FAST_LEASES))
            try:
                base = survivors[0].url
                await _assert_one_full_answer(api, base, thread_id, run_id)
                steps = (await api.ok("GET", f"{base}/v1/threads/{thread_id}/runs/{run_id}/steps"))["data"]
                # The interrupted turn's step is kept (cancelled) for the record; the redone one completed.
                assert sorted(s["status"] for s in steps) == ["cancelled", "completed"]
            finally:
                for p in survivors:
                    p.stop()
    finally:
        first.stop()        # also when killed: it removes the log


async def test_sigterm_hands_a_running_run_to_another_process(database_url, db, slow_script):
    key = await new_key(db)
    leaving, staying = await asyncio.gather(asyncio.to_thread(ServiceProcess, database_url, FAST_LEASES),
                                            asyncio.to_thread(ServiceProcess, database_url, FAST_LEASES))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, key)
            thread_id, run_id = await _start_slow_run(api, leaving.url, slow_script)
            leaving.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(leaving.proc.wait, 20) == 0
            await _assert_one_full_answer(api, staying.url, thread_id, run_id)
    finally:
        for p in (leaving, staying):
            p.stop()
