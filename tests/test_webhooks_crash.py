"""Webhooks lose nothing when the delivering process is killed: `kill -9` in the middle of
deliveries, another process takes the subscription over, and the receiver ends up with every
event — a repeat only ever with the same `webhook-id` and body. Real `threadline serve` processes."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook as StandardWebhook

from conftest import ServiceProcess, new_key, until

ENV = {"THREADLINE_WEBHOOK_ALLOW_HTTP": "1", "THREADLINE_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
       "THREADLINE_RUN_LEASE_SECONDS": "2", "THREADLINE_RUN_SWEEP_SECONDS": "0.2"}
THREADS, FIRST_WAVE, SECOND_WAVE = 10, 30, 5      # messages per thread before and after the crash


@pytest.fixture
async def slow_receiver():
    """Answers each delivery after 40 ms, so the kill lands while many are in flight."""
    got: list[tuple[dict, bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        got.append((dict(request.headers), body))
        await asyncio.sleep(0.04)         # a receiver's own work: behaviour under test, not a wait
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, got
    await server.close()


async def _post(http, base: str, key: str, path: str, body: dict) -> dict:
    async with http.post(f"{base}/v1{path}", json=body, headers={"Authorization": f"Bearer {key}"}) as r:
        answer = await r.json()
        assert r.status == 200, answer
        return answer


async def test_kill_9_during_deliveries_loses_nothing(own_database, slow_receiver):
    url, pool = own_database
    server, got = slow_receiver
    key = await new_key(pool, "crash-hooks")
    first = await asyncio.to_thread(ServiceProcess, url, ENV)
    second = None
    try:
        async with aiohttp.ClientSession() as http:
            hook = await _post(http, first.url, key, "/webhooks", {
                "url": f"http://127.0.0.1:{server.port}/hook", "events": ["thread.message.created"]})
            threads = [(await _post(http, first.url, key, "/threads", {}))["id"] for _ in range(THREADS)]

            async def append(base: str, thread_id: str, n: int) -> list[str]:
                return [(await _post(http, base, key, f"/threads/{thread_id}/messages",
                                     {"role": "user", "content": f"message {i}"}))["id"] for i in range(n)]

            acked = {t: ids for t, ids in zip(threads, await asyncio.gather(
                *(append(first.url, t, FIRST_WAVE) for t in threads)))}
            total = THREADS * FIRST_WAVE
            await until(lambda: len(got) >= total // 4, what="deliveries under way")
            first.proc.kill()                                 # SIGKILL: no shutdown, nothing flushed
            first.proc.wait()
            assert len({h["webhook-id"] for h, _ in got}) < total, "the kill came after every delivery"

            second = await asyncio.to_thread(ServiceProcess, url, ENV)
            for t in threads:
                acked[t] += await append(second.url, t, SECOND_WAVE)
            every = {m for ids in acked.values() for m in ids}
            await until(lambda: {json.loads(b)["data"]["id"] for _, b in got} >= every, timeout=60,
                        what="every acknowledged message at the receiver")
    finally:
        for p in (first, second):
            if p is not None:
                p.stop()

    verifier = StandardWebhook(hook["secret"])
    bodies: dict[str, bytes] = {}
    for headers, body in got:
        payload = verifier.verify(body, headers)
        assert payload["type"] == "thread.message.created"
        earlier = bodies.setdefault(headers["webhook-id"], body)
        assert earlier == body, "a repeated delivery carries the same id and the same body"
    received = [json.loads(b)["data"] for b in bodies.values()]
    assert sorted(m["id"] for m in received) == sorted(m for ids in acked.values() for m in ids)
    for t, ids in acked.items():
        firsts = []
        for headers, body in got:
            data = json.loads(body)["data"]
            if data["thread_id"] == t and data["id"] not in firsts:
                firsts.append(data["id"])
        assert firsts == ids, f"thread {t}: first deliveries out of order"
    rows = await pool.fetch("SELECT status, count(*) FROM webhook_deliveries WHERE webhook_id = $1 GROUP BY 1",
                            hook["id"])
    assert dict(rows).get("pending", 0) + dict(rows).get("delivered", 0) == THREADS * (FIRST_WAVE + SECOND_WAVE)
