"""Erasure and retention: after erasing a thread no stored byte holds its words, and the log's
hash chain still verifies."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
import uuid

from aiohttp.test_utils import TestClient, TestServer

from conftest import Client, new_key, until
from conftest import test_config as make_config
from events import audit
from service.app import create_app
from test_audit import cli
from test_runs_api import script, wait_run


async def every_stored_text(pool) -> str:
    """Every row of every table in the database, as text (bytea decoded leniently)."""
    tables = await pool.fetch("SELECT schemaname, tablename FROM pg_tables WHERE schemaname = 'public'")
    out = []
    for schema, table in tables:
        rows = await pool.fetch(f'SELECT t::text FROM "{schema}"."{table}" t')
        out += [r[0] for r in rows]
        for (col,) in await pool.fetch("SELECT column_name FROM information_schema.columns WHERE table_schema = $1 "
                                       "AND table_name = $2 AND data_type = 'bytea'", schema, table):
            out += [bytes(r[0]).decode("utf-8", "replace") for r in
                    await pool.fetch(f'SELECT "{col}" FROM "{schema}"."{table}" WHERE "{col}" IS NOT NULL')]
    return "\n".join(out)


@asynccontextmanager
async def serving(url: str, **settings):
    """The service in-process on its own database, stopped after use."""
    http = TestClient(TestServer(create_app(make_config(**settings), url)))
    await http.start_server()
    try:
        yield http
    finally:
        await http.close()


async def test_erasure_leaves_no_byte_of_the_thread_and_the_chain_verifies(own_database, tmp_path):
    url, pool = own_database
    secret = f"secret-{uuid.uuid4().hex}"
    async with serving(url) as http:
        api = Client(http, await new_key(pool, "erasure"))
        model = script(tmp_path, {"tool_calls": [{"name": "lookup", "arguments": {"q": secret + "-arg"}}]},
                       {"text": secret + "-reply"})
        asst = await api.ok("POST", "/assistants", {"model": model, "tools": [
            {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]})
        upload = await api.upload((secret + "-file").encode(), "notes.txt")
        thread = await api.ok("POST", "/threads", {"messages": [
            {"role": "user", "content": secret + "-question", "attachments": [{"file_id": upload["id"]}]}]})
        tid = thread["id"]
        run = await api.ok("POST", f"/threads/{tid}/runs", {"assistant_id": asst["id"],
                                                           "additional_instructions": secret + "-instructions"},
                           headers={"Idempotency-Key": f"k-{secret}"})
        waiting = await wait_run(api, tid, run["id"])
        call = waiting["required_action"]["submit_tool_outputs"]["tool_calls"][0]
        await api.ok("POST", f"/threads/{tid}/runs/{run['id']}/submit_tool_outputs",
                     {"tool_outputs": [{"tool_call_id": call["id"], "output": secret + "-output"}]})
        assert (await wait_run(api, tid, run["id"]))["status"] == "completed"
        # A second thread stays readable: erasure is per thread.
        keep = await api.ok("POST", "/threads", {"messages": [{"role": "user", "content": "keep " + secret[:10]}]})

        # Before: the log holds only ciphertext; the read models (what the API serves) hold the text.
        raw_log = "\n".join(r[0] for r in await pool.fetch("SELECT data::text FROM events WHERE stream = $1",
                                                           f"thread-{tid}"))
        assert secret not in raw_log and "enc:v1:" in raw_log
        assert secret in await every_stored_text(pool)

        erased = await api.ok("POST", f"/threads/{tid}/erase")
        assert erased["erased"] and erased["files_deleted"] == [upload["id"]]
        assert secret not in await every_stored_text(pool)
        assert (await api.call("GET", f"/threads/{tid}"))[0] == 404
        assert (await api.call("GET", f"/files/{upload['id']}"))[0] == 404
        kept = await api.ok("GET", f"/threads/{keep['id']}/messages")
        assert kept["data"][0]["content"][0]["text"]["value"] == "keep " + secret[:10]

        # The log still tells what happened, without the words; its chain is intact.
        events = (await api.ok("GET", f"/threads/{tid}/events", params={"limit": "1000"}))["data"]
        assert events[-1]["type"] == "ThreadErased"
        first_message = next(e for e in events if e["type"] == "MessageCreated")
        assert first_message["data"]["content"][0]["text"]["value"] == "[erased]"
        assert (await audit.verify(pool)).ok
        again = await api.ok("POST", f"/threads/{tid}/erase")          # idempotent
        assert again["erased"]


async def test_retention_erases_threads_idle_for_too_long(own_database):
    url, pool = own_database
    async with serving(url, retention_days=1e-6, retention_sweep_seconds=0.2) as http:   # ~0.1 s
        api = Client(http, await new_key(pool, "retention"))
        upload = await api.upload(b"old file", "old.txt")
        thread = await api.ok("POST", "/threads", {"messages": [{"role": "user", "content": "old news",
                                                                 "attachments": [{"file_id": upload["id"]}]}]})
        async def gone(path: str) -> bool:
            return (await api.call("GET", path))[0] == 404

        await until(lambda: gone(f"/threads/{thread['id']}"), "retention to erase the idle thread", timeout=10)
        events = await pool.fetch("SELECT type, metadata->>'causation' FROM events WHERE stream = $1 ORDER BY version",
                                  f"thread-{thread['id']}")
        assert (events[-1][0], events[-1][1]) == ("ThreadErased", "retention")
        # Its files go with it: the retention sweep deletes them just after the thread is erased.
        await until(lambda: gone(f"/files/{upload['id']}"), "retention to delete the thread's file", timeout=10)


async def test_threadline_erase_from_the_command_line(own_database):
    url, pool = own_database
    secret = f"cli-secret-{uuid.uuid4().hex}"
    async with serving(url) as http:
        api = Client(http, await new_key(pool, "erasure-cli"))
        thread = await api.ok("POST", "/threads", {"messages": [{"role": "user", "content": secret}]})
        assert secret in await every_stored_text(pool)
        done = await asyncio.to_thread(cli, url, "erase", thread["id"])
        assert done.returncode == 0 and f"erased thread {thread['id']}" in done.stdout, done.stderr
        assert secret not in await every_stored_text(pool)
        assert (await api.call("GET", f"/threads/{thread['id']}"))[0] == 404
        assert (await audit.verify(pool, f"thread-{thread['id']}")).ok
        missing = await asyncio.to_thread(cli, url, "erase", "thread_nope")
        assert missing.returncode != 0 and "no thread thread_nope" in missing.stderr
