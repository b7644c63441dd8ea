"""The event store on real Postgres: conflicts, atomicity with read models, the gap-safe reader."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from events.store import Append, Checkpoint, EventMetadata, EventStore, VersionConflict, write_appends
from events.types import MessageCreated, TextPart, TextValue, ThreadCreated
from projections.projector import SERVICE_PROJECTIONS
from service.ids import new_id


def thread_created(thread_id: str, project_name: str = "store-tests") -> ThreadCreated:
    return ThreadCreated(thread_id=thread_id, project=project_name, created_at=1)


def message(thread_id: str, text: str = "hi") -> MessageCreated:
    return MessageCreated(message_id=new_id("msg_"), thread_id=thread_id, created_at=1, role="user",
                          content=[TextPart(TextValue(text))])


META = EventMetadata(project="store-tests", request_id="req-1", api_key_id="key_1", causation="test")


@pytest.fixture
async def store(db):
    s = EventStore(db, SERVICE_PROJECTIONS)
    yield s
    await s.close()


async def test_append_then_read_stream_in_order(store):
    tid = new_id("thread_")
    recorded = await store.append(f"thread-{tid}", 0, [thread_created(tid), message(tid, "a"), message(tid, "b")], META)
    assert [r.version for r in recorded] == [1, 2, 3]
    back = await store.read_stream(f"thread-{tid}")
    assert [r.type for r in back] == ["ThreadCreated", "MessageCreated", "MessageCreated"]
    assert [r.event for r in back] == [r.event for r in recorded]
    assert back[0].metadata == META
    assert back[1].position < back[2].position


async def test_stale_expected_version_is_a_typed_conflict_and_writes_nothing(store, db):
    tid = new_id("thread_")
    stream = f"thread-{tid}"
    await store.append(stream, 0, [thread_created(tid)], META)
    await store.append(stream, 1, [message(tid, "first")], META)
    loser = message(tid, "stale")
    with pytest.raises(VersionConflict):
        await store.append(stream, 1, [loser], META)
    assert [r.version for r in await store.read_stream(stream)] == [1, 2]
    assert await db.fetchval("SELECT count(*) FROM messages WHERE id = $1", loser.message_id) == 0


async def test_expected_version_beyond_the_head_is_refused(store):
    tid = new_id("thread_")
    await store.append(f"thread-{tid}", 0, [thread_created(tid)], META)
    with pytest.raises(VersionConflict):
        await store.append(f"thread-{tid}", 5, [message(tid)], META)


async def test_concurrent_writers_to_one_stream_exactly_one_wins(store):
    tid = new_id("thread_")
    stream = f"thread-{tid}"
    await store.append(stream, 0, [thread_created(tid)], META)
    results = await asyncio.gather(*(store.append(stream, 1, [message(tid, str(i))], META) for i in range(10)),
                                   return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, VersionConflict) for r in results if isinstance(r, Exception))
    assert [r.version for r in await store.read_stream(stream)] == [1, 2]


async def test_a_conflict_in_a_group_commit_fails_only_the_loser(store):
    ids = [new_id("thread_") for _ in range(20)]
    await asyncio.gather(*(store.append(f"thread-{t}", 0, [thread_created(t)], META) for t in ids))
    # Same batch: every stream appends at version 1, and one stream twice (only one of those can win).
    results = await asyncio.gather(
        *(store.append(f"thread-{t}", 1, [message(t)], META) for t in ids),
        store.append(f"thread-{ids[0]}", 1, [message(ids[0], "dup")], META),
        return_exceptions=True)
    failures = [r for r in results if isinstance(r, Exception)]
    assert len(failures) == 1 and isinstance(failures[0], VersionConflict)
    for t in ids:
        assert [r.version for r in await store.read_stream(f"thread-{t}")] == [1, 2]


async def test_events_and_read_models_commit_or_roll_back_together(db):
    tid = new_id("thread_")
    with pytest.raises(RuntimeError):
        async with db.acquire() as conn, conn.transaction():
            await write_appends(conn, [Append(f"thread-{tid}", 0, [thread_created(tid)], META)], SERVICE_PROJECTIONS)
            assert await conn.fetchval("SELECT count(*) FROM threads WHERE id = $1", tid) == 1
            raise RuntimeError("crash between projection and commit")
    assert await db.fetchval("SELECT count(*) FROM events WHERE stream = $1", f"thread-{tid}") == 0
    assert await db.fetchval("SELECT count(*) FROM threads WHERE id = $1", tid) == 0


async def test_a_failing_projection_rolls_back_the_events(store, db):
    tid = new_id("thread_")
    await store.append(f"thread-{tid}", 0, [thread_created(tid)], META)
    other = new_id("thread_")
    # A read-model row already holding this id makes the projection fail inside the append.
    await db.execute("INSERT INTO threads (id, project, data) VALUES ($1, 'x', '{}')", other)
    with pytest.raises(asyncpg.UniqueViolationError):
        async with db.acquire() as conn, conn.transaction():
            await write_appends(conn, [Append(f"thread-{other}", 0, [thread_created(other)], META)], SERVICE_PROJECTIONS)
    assert await store.read_stream(f"thread-{other}") == []


async def test_events_cannot_be_updated(db, store):
    tid = new_id("thread_")
    await store.append(f"thread-{tid}", 0, [thread_created(tid)], META)
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await db.execute("UPDATE events SET type = 'Forged' WHERE stream = $1", f"thread-{tid}")


async def _head(store: EventStore) -> Checkpoint:
    checkpoint = Checkpoint()
    while True:
        batch, checkpoint = await store.read_all(checkpoint, 5000)
        if not batch:
            return checkpoint


async def test_gap_safe_reader_sees_every_event_exactly_once_under_concurrent_writers(db, database_url):
    """Many writers in slow, overlapping transactions (so positions commit out of order) while a
    reader polls: it must end with every event exactly once, and each stream in version order."""
    reader_store = EventStore(db)
    start = await _head(reader_store)
    writers_pool = await asyncpg.create_pool(database_url, min_size=8, max_size=8)
    written: dict[str, list[int]] = {}
    seen: list = []
    done = asyncio.Event()

    async def writer(w: int):
        rnd = random.Random(w)
        for i in range(25):
            tid = f"gap-{w}-{i}"
            stream = f"thread-{tid}"
            async with writers_pool.acquire() as conn, conn.transaction():
                events = [thread_created(tid, "gap"), *[message(tid) for _ in range(rnd.randint(0, 3))]]
                await write_appends(conn, [Append(stream, 0, events, META)], ())
                # Hold the transaction open after taking positions: later positions commit first.
                await asyncio.sleep(rnd.random() * 0.01)
            written[stream] = list(range(1, len(events) + 1))

    async def reader():
        checkpoint = start
        while True:
            finished = done.is_set()
            batch, checkpoint = await reader_store.read_all(checkpoint, 50)
            seen.extend(batch)
            if not batch:
                if finished:
                    return
                await asyncio.sleep(0.002)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(w) for w in range(8)))
    done.set()
    await reading
    await writers_pool.close()

    mine = [e for e in seen if e.stream.startswith("thread-gap-")]
    assert len({e.position for e in mine}) == len(mine), "an event was delivered twice"
    assert sum(len(v) for v in written.values()) == len(mine), "an event was skipped"
    by_stream: dict[str, list[int]] = {}
    for e in mine:
        by_stream.setdefault(e.stream, []).append(e.version)
    assert by_stream == written


async def test_snapshot_roundtrip_keeps_the_newest(store):
    await store.save_snapshot("thread-snap", 500, 1, b'{"v": 500}')
    await store.save_snapshot("thread-snap", 400, 1, b'{"v": 400}')
    assert await store.load_snapshot("thread-snap", 1) == (500, b'{"v": 500}')
    assert await store.load_snapshot("thread-snap", 2) is None


async def test_migrations_are_safe_twice_and_from_two_processes_at_once(server_url):
    from conftest import fresh_database
    from events.migrate import migrate
    from service.database import SQUASHED, threadline_functions, threadline_migrations

    url = await fresh_database(server_url)
    files, functions = threadline_migrations(), threadline_functions()
    conns = [await asyncpg.connect(url) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(c, files, functions, SQUASHED) for c in conns[:2]))
        # One starter applied everything, the other found it done; nothing ran twice.
        assert sorted(map(len, applied)) == [0, len(files)]
        assert await migrate(conns[2], files, functions, SQUASHED) == []
        names = [r[0] for r in await conns[2].fetch("SELECT name FROM schema_migrations ORDER BY name")]
        assert names == sorted(name for name, _ in files)
        assert await conns[2].fetchval("SELECT count(*) FROM events") == 0
        # Each function was applied once, and an unchanged one is not applied again (no lock taken).
        stamps = await conns[2].fetch("SELECT name, applied_at FROM schema_functions ORDER BY name")
        assert [r[0] for r in stamps] == sorted(name for name, _ in functions)
        await migrate(conns[2], files, functions, SQUASHED)
        assert await conns[2].fetch("SELECT name, applied_at FROM schema_functions ORDER BY name") == stamps
    finally:
        for c in conns:
            await c.close()


async def test_a_changed_function_file_replaces_the_function_on_the_next_migrate(server_url):
    from conftest import fresh_database
    from events.migrate import migrate
    from service.database import SQUASHED, threadline_functions, threadline_migrations

    conn = await asyncpg.connect(await fresh_database(server_url))
    try:
        functions = threadline_functions()
        await migrate(conn, threadline_migrations(), functions, SQUASHED)
        (name, sql), = [f for f in functions if f[0].endswith("/read_stream.sql")]
        changed = sql.replace("LIMIT _limit", "LIMIT least(_limit, 1)")
        await migrate(conn, threadline_migrations(), [(name, changed)], SQUASHED)
        source = await conn.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'read_stream'")
        assert "least(_limit, 1)" in source
    finally:
        await conn.close()


async def test_a_database_made_before_the_squash_is_adopted_or_refused(server_url):
    """A database that had every migration a baseline replaced is adopted (the baseline is not run:
    it would fail, its tables exist); one that had only some is refused, naming what it lacks."""
    from conftest import fresh_database
    from events.migrate import MigrationRefused, migrate
    from service.database import SQUASHED, threadline_functions, threadline_migrations

    files, functions = threadline_migrations(), threadline_functions()
    baselines = [s.baseline for s in SQUASHED]
    for complete in (True, False):
        conn = await asyncpg.connect(await fresh_database(server_url))
        try:
            await migrate(conn, files, functions, SQUASHED)
            # What a database made by the release before the squash records.
            await conn.execute("DELETE FROM schema_migrations WHERE name = ANY($1::text[])", baselines)
            for squash in SQUASHED:
                had = squash.replaced if complete else squash.replaced[:-1]
                await conn.executemany("INSERT INTO schema_migrations (name) VALUES ($1)", [(n,) for n in had])
            if complete:
                assert await migrate(conn, files, functions, SQUASHED) == []
                recorded = {r[0] for r in await conn.fetch("SELECT name FROM schema_migrations")}
                assert set(baselines) <= recorded
            else:
                with pytest.raises(MigrationRefused, match="has events/0013_events_json.sql but not "
                                                           "events/0014_uploads.sql"):
                    await migrate(conn, files, functions, SQUASHED)
        finally:
            await conn.close()
