"""Durable catch-up subscriptions (events/subscriptions.py) on a real Postgres: one holder at a time,
a checkpoint that only its holder moves, and a reader that gets every event once in log order,
resumes from the checkpoint, and never skips an event an older transaction commits late."""

from __future__ import annotations

import asyncio
import time

import pytest

from events import subscriptions
from events.store import Append, Checkpoint, EventStore, write_appends
from events.subscriptions import CatchUp, LeaseLost, pages_of
from service.ids import new_id
from test_event_store import META, thread_created


@pytest.fixture
async def store(db):
    s = EventStore(db)
    yield s
    await s.close()


async def new_subscription(db, **options) -> str:
    name = new_id("sub_test_")
    async with db.acquire() as conn:
        await subscriptions.create(conn, name, **options)
    return name


async def test_one_holder_at_a_time_and_a_lapsed_lease_is_taken_over(db):
    name = await new_subscription(db)
    assert await subscriptions.claim(db, [name], "a", 0.3) == [name]
    assert await subscriptions.claim(db, [name], "b", 0.3) == []           # a holds it
    assert await subscriptions.claim(db, [name], "a", 0.3) == [name]       # renewed
    deadline = time.monotonic() + 5
    while not await subscriptions.claim(db, [name], "b", 30):              # a stopped renewing: it lapses
        assert time.monotonic() < deadline, "the lapsed lease was never taken over"
        await asyncio.sleep(0.05)
    assert await subscriptions.claim(db, [name], "a", 30) == []
    await subscriptions.release(db, [name], "b")
    assert await subscriptions.claim(db, [name], "a", 30) == [name]


async def test_only_the_holder_moves_the_checkpoint_and_only_from_where_it_stands(db):
    name = await new_subscription(db, from_start=True)
    await subscriptions.claim(db, [name], "a", 30)
    start = await subscriptions.checkpoint(db, name)
    assert start == Checkpoint(0, 0)
    await subscriptions.advance(db, name, "a", start, Checkpoint(5, 7))
    assert await subscriptions.checkpoint(db, name) == Checkpoint(5, 7)
    with pytest.raises(LeaseLost):
        await subscriptions.advance(db, name, "b", Checkpoint(5, 7), Checkpoint(6, 8))     # not the holder
    with pytest.raises(LeaseLost):
        await subscriptions.advance(db, name, "a", start, Checkpoint(6, 8))                # a stale view
    assert await subscriptions.checkpoint(db, name) == Checkpoint(5, 7)


class Consumer:
    """Records the streams it saw and moves its checkpoint after each page, as a real one would."""

    def __init__(self, db, store, name: str):
        self.db, self.name, self.seen = db, name, []
        self.reader = CatchUp(pages_of(store, 3), self.handle, page_size=3, idle=0.05, name=name)

    async def handle(self, page) -> None:
        self.seen += [r.stream for r in page.events]
        await subscriptions.advance(self.db, self.name, "me", self.reader.checkpoint, page.after)


async def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.01)


async def test_a_reader_gets_every_event_once_in_order_and_resumes_from_its_checkpoint(db, store):
    before = new_id("thread_")
    await store.append(f"thread-{before}", 0, [thread_created(before)], META)
    name = await new_subscription(db)          # from the log's present: nothing written before counts
    await subscriptions.claim(db, [name], "me", 30)
    streams = [new_id("thread_") for _ in range(7)]
    for tid in streams[:4]:
        await store.append(f"thread-{tid}", 0, [thread_created(tid)], META)
    consumer, wake = Consumer(db, store, name), asyncio.Event()
    following = asyncio.create_task(consumer.reader.follow(await subscriptions.checkpoint(db, name), wake))
    try:
        await wait_until(lambda: len(consumer.seen) >= 4)
        for tid in streams[4:]:
            await store.append(f"thread-{tid}", 0, [thread_created(tid)], META)
            wake.set()
        await wait_until(lambda: len(consumer.seen) >= 7)
    finally:
        following.cancel()
    mine = [s for s in consumer.seen if s.removeprefix("thread-") in streams]
    assert mine == [f"thread-{t}" for t in streams] and f"thread-{before}" not in consumer.seen
    # A new process resumes where the checkpoint says: only what came after.
    later = new_id("thread_")
    await store.append(f"thread-{later}", 0, [thread_created(later)], META)
    resumed = Consumer(db, store, name)
    resumed.reader.checkpoint = await subscriptions.checkpoint(db, name)
    await resumed.reader.catch_up()
    assert f"thread-{later}" in resumed.seen and not set(resumed.seen) & {f"thread-{t}" for t in streams}


async def test_an_event_an_older_transaction_commits_late_is_not_skipped(db, store):
    name = await new_subscription(db)
    await subscriptions.claim(db, [name], "me", 30)
    consumer = Consumer(db, store, name)
    consumer.reader.checkpoint = await subscriptions.checkpoint(db, name)
    early, late = new_id("thread_"), new_id("thread_")
    async with db.acquire() as conn:
        async with conn.transaction():
            # The older transaction writes first and stays open ...
            await write_appends(conn, [Append(f"thread-{early}", 0, [thread_created(early)], META)], ())
            await store.append(f"thread-{late}", 0, [thread_created(late)], META)    # ... a younger one commits
            await consumer.reader.catch_up()
            assert f"thread-{late}" not in consumer.seen      # not shown past the open transaction
    await consumer.reader.catch_up()
    assert consumer.seen.index(f"thread-{early}") < consumer.seen.index(f"thread-{late}")
