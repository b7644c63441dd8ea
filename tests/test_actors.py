"""Thread actors on real Postgres: ordering, passivation, bounds, snapshots, two writers per thread."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
import time

import aiohttp
import pytest

from events.store import EventStore
from events.types import TextPart, TextValue
from projections.projector import SERVICE_PROJECTIONS
from service import database
from service.api.http import SERVICES
from service.actors import ActorRegistry, SNAPSHOT_EVERY, load_thread
from service.domain import thread
from service.domain.messages import NewMessage
from service.ids import new_id

from conftest import ServiceProcess, new_key

P = "actor-tests"


def message(thread_id: str, text: str) -> NewMessage:
    return NewMessage(message_id=new_id("msg_"), role="user", content=[TextPart(TextValue(text))])


def add(thread_id: str, text: str) -> thread.AddMessage:
    return thread.AddMessage(P, 1, message(thread_id, text))


def create(thread_id: str, messages=()) -> thread.CreateThread:
    return thread.CreateThread(project=P, at=1, messages=list(messages))


@asynccontextmanager
async def actors(db, **options):
    """A registry of thread actors over its own store, closed after use."""
    store = EventStore(db, SERVICE_PROJECTIONS)
    reg = ActorRegistry(store, db, **options)
    try:
        yield reg
    finally:
        await reg.close()
        await store.close()


@pytest.fixture
async def registry(db):
    async with actors(db) as reg:
        yield reg


async def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_commands_for_one_thread_run_one_at_a_time_in_arrival_order(registry):
    tid = new_id("thread_")
    await registry.ask(tid, create(tid))
    texts = [f"m{i}" for i in range(60)]
    results = await asyncio.gather(*(registry.ask(tid, add(tid, t)) for t in texts))
    assert [state.version for state, _ in results] == list(range(2, 62))
    log = await registry.store.read_stream(f"thread-{tid}")
    assert [e.event.content[0].text.value for e in log[1:]] == texts


async def test_idle_actors_are_passivated_and_come_back_with_their_state(db):
    async with actors(db, idle_timeout=0.05) as reg:
        tid = new_id("thread_")
        await reg.ask(tid, create(tid, [message(tid, "a")]))
        assert len(reg) == 1
        await wait_until(lambda: len(reg) == 0)
        state, _ = await reg.ask(tid, add(tid, "b"))
        assert (state.version, state.message_count) == (3, 2)


async def test_a_thread_is_forgotten_when_its_actor_goes_or_it_is_deleted(db):
    """What caches of a thread's content hear: they must not outlive the actor, nor a deletion."""
    async with actors(db, max_actors=1) as reg:
        forgotten: list[str] = []
        reg.on_forget(forgotten.append)
        first, second = new_id("thread_"), new_id("thread_")
        await reg.ask(first, create(first))
        await reg.ask(second, create(second))         # one actor at most: the first one's goes
        assert forgotten == [first]
        await reg.ask(second, thread.DeleteThread(P))
        assert forgotten == [first, second]


async def test_the_number_of_live_actors_is_bounded(db):
    async with actors(db, max_actors=3) as reg:
        for _ in range(10):
            tid = new_id("thread_")
            await reg.ask(tid, create(tid))
            assert len(reg) <= 3


async def test_two_registries_on_one_database_never_corrupt_a_thread(database_url, db):
    """Two 'processes' (separate pools, stores and actors) write the same thread at once: the
    version check refuses the loser each time, it catches up and decides again; nothing is lost."""
    pools = [await database.connect(database_url, 4) for _ in range(2)]
    stores = [EventStore(p, SERVICE_PROJECTIONS) for p in pools]
    regs = [ActorRegistry(s, p) for s, p in zip(stores, pools)]
    try:
        tid = new_id("thread_")
        await regs[0].ask(tid, create(tid))
        texts = [f"m{i}" for i in range(80)]
        await asyncio.gather(*(regs[i % 2].ask(tid, add(tid, t))
                               for i, t in enumerate(texts)))
        log = await stores[0].read_stream(f"thread-{tid}")
        assert [e.version for e in log] == list(range(1, 82))
        assert sorted(e.event.content[0].text.value for e in log[1:]) == sorted(texts)
        assert await db.fetchval("SELECT count(*) FROM messages WHERE thread_id = $1", tid) == 80
        for reg in regs:
            state, _ = await reg.ask(tid, thread.UpdateThread(P, metadata={"x": "y"}))
        assert state.message_count == 80 and state.version == 83
    finally:
        for reg, store, pool in zip(regs, stores, pools):
            await reg.close()
            await store.close()
            await pool.close()


async def test_two_service_processes_writing_one_thread(database_url, db):
    """The real thing: two `threadline serve` processes on one database, one thread, many writers."""
    key = await new_key(db, "two-processes")
    services = await asyncio.gather(*(asyncio.to_thread(ServiceProcess, database_url) for _ in range(2)))
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{services[0].url}/v1/threads", json={}) as r:
                tid = (await r.json())["id"]

            async def post(i: int):
                url = f"{services[i % 2].url}/v1/threads/{tid}/messages"
                async with http.post(url, json={"role": "user", "content": f"m{i}"}) as r:
                    return r.status

            statuses = await asyncio.gather(*(post(i) for i in range(120)))
            assert statuses == [200] * 120
            texts = []
            after = None
            while True:
                q = {"order": "asc", "limit": "100", **({"after": after} if after else {})}
                async with http.get(f"{services[1].url}/v1/threads/{tid}/messages", params=q) as r:
                    page = await r.json()
                texts += [m["content"][0]["text"]["value"] for m in page["data"]]
                if not page["has_more"]:
                    break
                after = page["last_id"]
        assert sorted(texts) == sorted(f"m{i}" for i in range(120))
        versions = [r[0] for r in await db.fetch(
            "SELECT version FROM events WHERE stream = $1 ORDER BY version", f"thread-{tid}")]
        assert versions == list(range(1, 122))
    finally:
        for s in services:
            s.stop()


async def test_a_full_thread_activates_from_its_snapshot_and_refuses_one_more(app_client, db):
    """100,000 messages: activation reads the snapshot plus a short tail, never the whole
    stream, and the 100,001st message gets a clear 400."""
    tl = app_client.app[SERVICES]
    key = await new_key(db, P)
    tid = new_id("thread_")
    messages = [message(tid, f"m{i}") for i in range(thread.MAX_MESSAGES)]
    state, _ = await tl.actors.ask(tid, create(tid, messages))
    assert state.message_count == thread.MAX_MESSAGES

    reads = []
    original = tl.store.read_stream

    async def counting_read_stream(stream, after_version=0, limit=1_000_000):
        events = await original(stream, after_version, limit)
        reads.append(len(events))
        return events

    tl.store.read_stream = counting_read_stream
    try:
        loaded = await load_thread(tl.store, tid)
    finally:
        tl.store.read_stream = original
    assert loaded.message_count == thread.MAX_MESSAGES and loaded.version == thread.MAX_MESSAGES + 1
    assert sum(reads) < SNAPSHOT_EVERY

    resp = await app_client.post(f"/v1/threads/{tid}/messages", json={"role": "user", "content": "one more"},
                                 headers={"Authorization": f"Bearer {key}"})
    body = await resp.json()
    assert resp.status == 400
    assert "at most 100000" in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"
