"""`threadline projections rebuild`: every read model rebuilt from the log equals the live tables,
and the switch to the new tables loses nothing while the service keeps answering and writing.

Each test gets a database of its own (the rebuild is database-wide) and the app on it."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import ROOT, Client, fresh_database, new_key
from conftest import test_config as make_config
from test_runs_api import WEATHER_TOOLS, script, wait_run

from events.store import Append, EventMetadata, write_appends
from events.types import FileUploaded, MessageTextAppended, ToolCallArgumentsAppended
from projections import rebuild as rebuilding
from projections.projector import SERVICE_PROJECTIONS, read_model_changes
from projections.rebuild import (
    NO_CHANGE_TYPES,
    READ_MODEL_TABLES,
    RebuildError,
    rebuild,
)
from service import database
from service.app import create_app


class Service:
    def __init__(self, url: str, pool: asyncpg.Pool, http: TestClient, client: Client, project: str):
        self.url, self.pool, self.http, self.client, self.project = url, pool, http, client, project


@pytest.fixture
async def svc(server_url):
    url = await fresh_database(server_url)
    pool = await database.connect(url, 4)
    await database.prepare(pool)
    http = TestClient(TestServer(create_app(make_config(), url)))
    await http.start_server()
    project = f"rb-{uuid.uuid4().hex[:10]}"
    yield Service(url, pool, http, Client(http, await new_key(pool, project)), project)
    await http.close()
    await pool.close()


async def snapshot(pool) -> dict[str, list[str]]:
    """Every read-model row as text, by id; and the tables' indexes and constraints."""
    out = {t: [r[0] for r in await pool.fetch(f"SELECT x::text FROM public.{t} AS x ORDER BY x.id")]
           for t in READ_MODEL_TABLES}
    out["indexes"] = [f"{r[0]}: {r[1]}" for r in await pool.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = ANY($1) "
        "ORDER BY indexname", list(READ_MODEL_TABLES))]
    out["constraints"] = [f"{r[0]}: {r[1]}" for r in await pool.fetch(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = ANY(SELECT ('public.' || t)::regclass FROM unnest($1::text[]) AS t) ORDER BY conname",
        list(READ_MODEL_TABLES))]
    out["columns"] = [f"{r[0]}.{r[1]} {r[2]} {r[3]} {r[4]}" for r in await pool.fetch(
        "SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '') "
        "FROM information_schema.columns WHERE table_schema = 'public' AND table_name = ANY($1) "
        "ORDER BY table_name, ordinal_position", list(READ_MODEL_TABLES))]
    out["tables"] = [f"{r[0]}: {r[1]} {r[2]} {r[3]}" for r in await pool.fetch(
        "SELECT relname, pg_get_userbyid(relowner), coalesce(reloptions, '{}'), relacl FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace AND relname = ANY($1) ORDER BY relname", list(READ_MODEL_TABLES))]
    return out


async def table_oids(pool) -> dict[str, int]:
    return {t: await pool.fetchval(f"SELECT 'public.{t}'::regclass::oid") for t in READ_MODEL_TABLES}


async def leftovers(pool) -> list[str]:
    return [r[0] for r in await pool.fetch(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'threadline\\_rebuild\\_%' "
        "OR nspname LIKE 'threadline\\_retired\\_%'")]


async def mixed_workload(c: Client, tmp_path) -> dict:
    """Everything that writes a read model, through the API."""
    kept = await c.ok("POST", "/assistants", {"model": "builtin/echo", "name": "kept", "tools": WEATHER_TOOLS,
                                              "metadata": {"k": "v"}})
    await c.ok("POST", f"/assistants/{kept['id']}", {"name": "renamed", "instructions": "Be brief.",
                                                     "response_format": None})
    gone = await c.ok("POST", "/assistants", {"model": "builtin/echo", "name": "gone"})
    await c.ok("DELETE", f"/assistants/{gone['id']}")

    threads = []
    for i in range(4):
        hello = [{"role": "user", "content": f"hello {i}.{j}"} for j in range(3)]
        t = await c.ok("POST", "/threads", {"messages": hello, "metadata": {"i": str(i)}})
        threads.append(t["id"])
    await c.ok("POST", f"/threads/{threads[0]}", {"metadata": {"i": "0", "updated": "yes"}})
    first = (await c.ok("GET", f"/threads/{threads[0]}/messages", params={"order": "asc"}))["data"]
    await c.ok("POST", f"/threads/{threads[0]}/messages/{first[0]['id']}", {"metadata": {"seen": "1"}})
    await c.ok("DELETE", f"/threads/{threads[0]}/messages/{first[1]['id']}")

    # Runs: completed (echo), through a tool-call round, cancelled, failed.
    run = await c.ok("POST", f"/threads/{threads[0]}/runs", {"assistant_id": kept["id"]})
    assert (await wait_run(c, threads[0], run["id"]))["status"] == "completed"
    await c.ok("POST", f"/threads/{threads[0]}/runs/{run['id']}", {"metadata": {"run": "tagged"}})

    tools = script(tmp_path, {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
                   {"text": "Sunny."})
    run = await c.ok("POST", f"/threads/{threads[1]}/runs", {"assistant_id": kept["id"], "model": tools})
    waiting = await wait_run(c, threads[1], run["id"])
    assert waiting["status"] == "requires_action"
    calls = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    await c.ok("POST", f"/threads/{threads[1]}/runs/{run['id']}/submit_tool_outputs",
               {"tool_outputs": [{"tool_call_id": calls[0]["id"], "output": "sunny"}]})
    assert (await wait_run(c, threads[1], run["id"]))["status"] == "completed"

    slow = script(tmp_path, {"text": "a slow answer that is cut short", "delay": 30})
    run = await c.ok("POST", f"/threads/{threads[2]}/runs", {"assistant_id": kept["id"], "model": slow})
    await c.ok("POST", f"/threads/{threads[2]}/runs/{run['id']}/cancel")
    assert (await wait_run(c, threads[2], run["id"]))["status"] == "cancelled"

    failing = script(tmp_path, {"error": {"code": "rate_limit_exceeded", "message": "slow down"}})
    run = await c.ok("POST", f"/threads/{threads[3]}/runs", {"assistant_id": kept["id"], "model": failing})
    assert (await wait_run(c, threads[3], run["id"]))["status"] == "failed"

    # A thread with a run, then deleted (its messages, runs and steps go with it).
    doomed = await c.ok("POST", "/threads/runs", {"assistant_id": kept["id"],
                                                  "thread": {"messages": [{"role": "user", "content": "bye"}]}})
    assert (await wait_run(c, doomed["thread_id"], doomed["id"]))["status"] == "completed"
    await c.ok("DELETE", f"/threads/{doomed['thread_id']}")

    kept_file = await c.upload(b"kept bytes", "kept.txt")
    gone_file = await c.upload(b"gone bytes", "gone.txt")
    await c.ok("DELETE", f"/files/{gone_file['id']}")
    return {"threads": threads, "assistant": kept["id"], "file": kept_file["id"], "deleted_file": gone_file["id"]}


def test_the_skipped_event_types_change_no_read_model():
    samples = {"MessageTextAppended": MessageTextAppended(message_id="msg_x", run_id="run_x", index=0, text="hi"),
               "ToolCallArgumentsAppended": ToolCallArgumentsAppended(run_id="run_x", step_id="step_x", index=0,
                                                                      arguments='{"a"', call_id="call_x", name="f")}
    assert set(NO_CHANGE_TYPES) <= set(samples)
    for name in NO_CHANGE_TYPES:
        assert read_model_changes([samples[name]], [1]) == []


async def test_a_rebuild_after_a_mixed_workload_equals_the_live_tables(svc, tmp_path):
    made = await mixed_workload(svc.client, tmp_path)
    # A rebuild replays FileDeleted, which deletes the file's bytes: it must not touch the live
    # blob_chunks (a row planted under the deleted file's id stays).
    await svc.pool.execute("INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, 0, 'x')", made["deleted_file"])
    # Storage options and grants on the live tables come along too.
    role = f"rb_reader_{uuid.uuid4().hex[:8]}"
    await svc.pool.execute(f"CREATE ROLE {role} NOLOGIN; GRANT SELECT ON messages, runs TO {role}; "
                           "ALTER TABLE messages SET (fillfactor = 90)")
    bytes_before = await svc.pool.fetchval("SELECT count(*) FROM blob_chunks")
    before, oids = await snapshot(svc.pool), await table_oids(svc.pool)
    assert all(before[t] for t in READ_MODEL_TABLES), {t: len(before[t]) for t in READ_MODEL_TABLES}

    seen = []
    result = await rebuild(svc.url, batch_size=7, progress=seen.append)   # small batches: many of them

    after = await snapshot(svc.pool)
    for key in before:
        assert after[key] == before[key], key
    assert set((await table_oids(svc.pool)).values()).isdisjoint(oids.values()), "the tables were not switched"
    assert await leftovers(svc.pool) == []
    assert await svc.pool.fetchval("SELECT count(*) FROM blob_chunks") == bytes_before   # file bytes untouched
    assert await svc.pool.fetchval("SELECT count(*) FROM blob_chunks WHERE blob_id = $1", made["deleted_file"]) == 1
    assert result.events == await svc.pool.fetchval("SELECT count(*) FROM events")
    assert result.rows == {t: len(before[t]) for t in READ_MODEL_TABLES}
    assert [p.phase for p in seen][-1] == "done" and seen[-1].events == result.events

    # The service reads and writes the new tables.
    c = svc.client
    thread_id = (await c.ok("GET", "/threads", params={"limit": 100}))["data"][0]["id"]
    added = await c.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": "after the rebuild"})
    listed = (await c.ok("GET", f"/threads/{thread_id}/messages"))["data"]
    assert listed[0]["id"] == added["id"]
    assert await svc.pool.fetchval("SELECT count(*) FROM messages WHERE id = $1", added["id"]) == 1
    assert await svc.pool.fetchval(f"SELECT has_table_privilege('{role}', 'public.messages', 'SELECT')")
    # And a second rebuild agrees with everything the first one and the service wrote.
    again = await snapshot(svc.pool)
    await rebuild(svc.url)
    assert await snapshot(svc.pool) == again
    await svc.pool.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


async def test_appends_and_reads_waiting_on_the_switch_land_in_the_new_tables(svc, monkeypatch):
    """An append and a read issued while the switch holds the locks wait, then use the new tables
    (their sessions' cached plans are re-planned)."""
    c = svc.client
    thread = await c.ok("POST", "/threads", {"messages": [{"role": "user", "content": "first"}]})
    path = f"/threads/{thread['id']}/messages"
    for i in range(8):   # warm every pooled connection's cached plans on the live tables
        await asyncio.gather(c.ok("POST", path, {"role": "user", "content": f"warm {i}"}), c.ok("GET", path))
    oids = await table_oids(svc.pool)
    blocked: list[asyncio.Task] = []
    real_read = rebuilding._read

    async def read_while_locked(conn, keys_db, after, limit, *, gap_safe):
        if not gap_safe and not blocked:   # inside the switch: the live tables are locked
            blocked.append(asyncio.create_task(c.ok("POST", path, {"role": "user", "content": "during the switch"})))
            blocked.append(asyncio.create_task(c.ok("GET", path, params={"limit": 100})))
            await asyncio.sleep(0.3)
            assert not any(t.done() for t in blocked), "a request went through while the tables were locked"
        return await real_read(conn, keys_db, after, limit, gap_safe=gap_safe)

    monkeypatch.setattr(rebuilding, "_read", read_while_locked)
    await rebuild(svc.url)
    added, listing = await asyncio.gather(*blocked)
    assert set((await table_oids(svc.pool)).values()).isdisjoint(oids.values())
    assert await svc.pool.fetchval("SELECT count(*) FROM messages WHERE id = $1", added["id"]) == 1
    after = await c.ok("GET", path, params={"limit": 100})
    assert after["data"][0]["id"] == added["id"]
    assert len(after["data"]) == 10 and len(listing["data"]) in (9, 10)

    monkeypatch.undo()
    live = await snapshot(svc.pool)
    await rebuild(svc.url)
    assert await snapshot(svc.pool) == live


async def test_the_cli_rebuilds_while_clients_keep_writing_and_reading(svc):
    """`threadline projections rebuild` in a subprocess while 8 clients append, 2 list and 2 create
    threads with runs, without pause: every answer is a 200, every run completes, every
    acknowledged message is in the new table, and the tables then equal yet another rebuild."""
    c = svc.client
    threads = [(await c.ok("POST", "/threads", {"messages": [{"role": "user", "content": f"m{j}"}
                                                             for j in range(1000)]}))["id"] for _ in range(40)]
    oids = await table_oids(svc.pool)
    acknowledged: list[str] = []
    errors: list = []
    stop = asyncio.Event()

    async def writer(i: int):
        n = 0
        while not stop.is_set():
            n += 1
            status, body = await c.call("POST", f"/threads/{threads[i]}/messages",
                                        {"role": "user", "content": f"w{i}.{n}"})
            if status == 200:
                acknowledged.append(body["id"])
            else:
                errors.append(body)

    async def reader(i: int):
        while not stop.is_set():
            status, body = await c.call("GET", f"/threads/{threads[i]}/messages", params={"limit": 5})
            if status != 200:
                errors.append(body)

    assistant = await c.ok("POST", "/assistants", {"model": "builtin/echo"})
    runs_done: list[str] = []

    async def runner():   # threads created with a run: thread, message, run, step and merges in one go
        while not stop.is_set():
            status, run = await c.call("POST", "/threads/runs", {
                "assistant_id": assistant["id"], "thread": {"messages": [{"role": "user", "content": "hi"}]}})
            if status != 200:
                errors.append(run)
                continue
            done = await wait_run(c, run["thread_id"], run["id"])
            if done["status"] != "completed":
                errors.append(done)
            runs_done.append(run["id"])

    load = [asyncio.create_task(writer(i)) for i in range(8)] + [asyncio.create_task(reader(i)) for i in range(2)]
    load += [asyncio.create_task(runner()) for _ in range(2)]
    await asyncio.sleep(0.3)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "projections", "rebuild", "--batch-size", "2000", cwd=ROOT,
        env={**os.environ, "DATABASE_URL": svc.url}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    during = len(acknowledged)
    await asyncio.sleep(0.3)      # and some more after the switch
    stop.set()
    await asyncio.gather(*load)

    assert proc.returncode == 0, err.decode()
    assert "rebuild: load" in err.decode() and "rebuild: done" in err.decode(), err.decode()   # progress
    assert out.decode().startswith("rebuilt "), out.decode()
    print(out.decode())
    assert not errors, errors[:3]
    assert during > 0 and len(acknowledged) > during and runs_done
    assert set((await table_oids(svc.pool)).values()).isdisjoint(oids.values())
    stored = await svc.pool.fetchval("SELECT count(*) FROM messages WHERE id = ANY($1)", acknowledged)
    assert stored == len(acknowledged), "an acknowledged message is missing from the rebuilt table"
    live = await snapshot(svc.pool)
    await rebuild(svc.url)
    assert await snapshot(svc.pool) == live


async def test_a_transaction_open_across_the_switch_commits_into_the_new_tables(svc):
    """An upload is one long transaction: it holds an xid from its first chunk, which holds the
    gap-safe reader back, and writes its read model only at the end. The switch must neither
    wait for it nor miss what committed after it started; its FileUploaded lands in the new table."""
    c = svc.client
    thread = await c.ok("POST", "/threads", {"messages": [{"role": "user", "content": "before"}]})
    path = f"/threads/{thread['id']}/messages"
    file_id = f"file-{uuid.uuid4().hex[:24]}"
    upload = await asyncpg.connect(svc.url)
    try:
        async with upload.transaction():
            await upload.execute("INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, 0, $2)", file_id, b"abc")
            later = [await c.ok("POST", path, {"role": "user", "content": f"after the upload began {i}"})
                     for i in range(3)]
            result = await asyncio.wait_for(rebuild(svc.url), 30)
            assert result.switch_events >= 3, "the switch had to apply what the gap-safe reader could not reach"
            uploaded = FileUploaded(file_id=file_id, project=svc.project, created_at=1, filename="late.txt",
                                    purpose="assistants", bytes=3, sha256="0" * 64)
            await write_appends(upload, [Append(f"file-{file_id}", 0, [uploaded], EventMetadata(project=svc.project))],
                                SERVICE_PROJECTIONS)
    finally:
        await upload.close()
    listed = (await c.ok("GET", path, params={"limit": 10}))["data"]
    assert [m["id"] for m in listed[:3]] == [m["id"] for m in reversed(later)]
    assert (await c.ok("GET", f"/files/{file_id}"))["filename"] == "late.txt"
    live = await snapshot(svc.pool)
    await rebuild(svc.url)
    assert await snapshot(svc.pool) == live


async def test_one_rebuild_at_a_time(svc):
    holder = await asyncpg.connect(svc.url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", rebuilding._REBUILD_LOCK)
        with pytest.raises(RebuildError, match="another rebuild"):
            await rebuild(svc.url)
    finally:
        await holder.close()
    assert await leftovers(svc.pool) == []


async def test_a_rebuild_that_cannot_switch_leaves_the_live_tables_alone(svc):
    await svc.client.ok("POST", "/threads", {"messages": [{"role": "user", "content": "hello"}]})
    before, oids = await snapshot(svc.pool), await table_oids(svc.pool)
    holder = await asyncpg.connect(svc.url)
    try:
        async with holder.transaction():   # a long reader the switch cannot outwait
            await holder.execute("LOCK TABLE messages IN ACCESS SHARE MODE")
            with pytest.raises(RebuildError, match="could not lock"):
                await rebuild(svc.url, lock_wait_ms=10, switch_seconds=0.5)
    finally:
        await holder.close()
    assert await table_oids(svc.pool) == oids
    assert await snapshot(svc.pool) == before
    assert await leftovers(svc.pool) == []


async def test_a_rebuild_never_writes_a_table_it_did_not_copy(svc, monkeypatch):
    """The rebuild session sees only the new schema: a read-model table missing from the copy list
    fails the rebuild instead of writing the live table."""
    await svc.client.ok("POST", "/threads", {"messages": [{"role": "user", "content": "hello"}]})
    before, oids = await snapshot(svc.pool), await table_oids(svc.pool)
    monkeypatch.setattr(rebuilding, "READ_MODEL_TABLES", tuple(t for t in READ_MODEL_TABLES if t != "messages"))
    with pytest.raises(RebuildError, match="does not copy"):
        await rebuild(svc.url)
    assert await table_oids(svc.pool) == oids
    assert await snapshot(svc.pool) == before
    assert await leftovers(svc.pool) == []
