"""Audit: the raw event list, point-in-time reads, replay and hash-chain verification (with tampering)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from aiohttp.test_utils import TestClient, TestServer

from conftest import ROOT, Client, new_key
from conftest import test_config as make_config
from events import audit
from service.app import create_app
from test_runs_api import script, wait_run


@pytest.fixture(scope="module")
async def api(own_database):
    url, pool = own_database
    app = create_app(make_config(), url)
    http = TestClient(TestServer(app))
    await http.start_server()
    yield Client(http, await new_key(pool, "audit"))
    await http.close()


async def conversation(api: Client, tmp_path) -> tuple[str, str]:
    """A thread with messages, an edit, a deletion and a run with a tool call."""
    model = script(tmp_path, {"tool_calls": [{"name": "get_time", "arguments": {"tz": "CET"}}]}, {"text": "Noon."})
    asst = await api.ok("POST", "/assistants", {"model": model, "tools": [
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]})
    thread = await api.ok("POST", "/threads", {"messages": [{"role": "user", "content": "hello"}]})
    tid = thread["id"]
    second = await api.ok("POST", f"/threads/{tid}/messages", {"role": "user", "content": "what time is it?"})
    await api.ok("POST", f"/threads/{tid}/messages/{second['id']}", {"metadata": {"edited": "yes"}})
    run = await api.ok("POST", f"/threads/{tid}/runs", {"assistant_id": asst["id"]})
    waiting = await wait_run(api, tid, run["id"])
    call = waiting["required_action"]["submit_tool_outputs"]["tool_calls"][0]
    await api.ok("POST", f"/threads/{tid}/runs/{run['id']}/submit_tool_outputs",
                 {"tool_outputs": [{"tool_call_id": call["id"], "output": "12:00"}]})
    assert (await wait_run(api, tid, run["id"]))["status"] == "completed"
    return tid, run["id"]


async def test_the_event_list_pages_and_filters(api, tmp_path):
    tid, run_id = await conversation(api, tmp_path)
    first = await api.ok("GET", f"/threads/{tid}/events", params={"limit": "3"})
    assert [e["version"] for e in first["data"]] == [1, 2, 3] and first["has_more"]
    assert first["data"][0]["type"] == "ThreadCreated" and first["data"][0]["api_key_id"].startswith("key_")
    assert first["data"][0]["request_id"] and len(first["data"][0]["hash"]) == 64
    rest = await api.ok("GET", f"/threads/{tid}/events", params={"after": first["last_id"], "limit": "1000"})
    assert rest["data"][0]["version"] == 4 and not rest["has_more"]
    types = await api.ok("GET", f"/threads/{tid}/events", params={"type": "MessageCreated,MessageUpdated"})
    assert [e["type"] for e in types["data"]] == ["MessageCreated", "MessageCreated", "MessageUpdated", "MessageCreated"]
    of_run = await api.ok("GET", f"/threads/{tid}/events", params={"run_id": run_id})
    kinds = [e["type"] for e in of_run["data"]]
    assert kinds[0] == "RunCreated" and kinds[-1] == "RunCompleted" and "ToolOutputsSubmitted" in kinds
    assert "MessageCompleted" in kinds and "ThreadCreated" not in kinds
    status, _ = await api.call("GET", f"/threads/{tid}/events", params={"after": "x"})
    assert status == 400


async def test_as_of_shows_the_thread_as_it_was(api, tmp_path):
    thread = await api.ok("POST", "/threads", {"metadata": {"v": "1"}, "messages": [{"role": "user", "content": "a"}]})
    tid = thread["id"]
    before = datetime.now(timezone.utc).isoformat()
    await asyncio.sleep(0.01)
    b = await api.ok("POST", f"/threads/{tid}/messages", {"role": "user", "content": "b"})
    await api.ok("POST", f"/threads/{tid}", {"metadata": {"v": "2"}})
    await api.ok("DELETE", f"/threads/{tid}/messages/{b['id']}")
    now = await api.ok("GET", f"/threads/{tid}/messages")
    assert [m["content"][0]["text"]["value"] for m in now["data"]] == ["a"]
    at_v3 = await api.ok("GET", f"/threads/{tid}/messages", params={"as_of": "3", "order": "asc"})
    assert [m["content"][0]["text"]["value"] for m in at_v3["data"]] == ["a", "b"]
    assert (await api.ok("GET", f"/threads/{tid}", params={"as_of": "3"}))["metadata"] == {"v": "1"}
    assert (await api.ok("GET", f"/threads/{tid}", params={"as_of": "4"}))["metadata"] == {"v": "2"}
    by_time = await api.ok("GET", f"/threads/{tid}/messages", params={"as_of": before})
    assert [m["content"][0]["text"]["value"] for m in by_time["data"]] == ["a"]
    # A run after the point is not there either.
    head = (await api.ok("GET", f"/threads/{tid}/events", params={"limit": "1000"}))["last_id"]
    asst = await api.ok("POST", "/assistants", {"model": "builtin/echo"})
    run = await api.ok("POST", f"/threads/{tid}/runs", {"assistant_id": asst["id"]})
    assert (await wait_run(api, tid, run["id"]))["status"] == "completed"
    assert len((await api.ok("GET", f"/threads/{tid}/messages"))["data"]) == 2
    before_run = await api.ok("GET", f"/threads/{tid}/messages", params={"as_of": head})
    assert [m["content"][0]["text"]["value"] for m in before_run["data"]] == ["a"]
    assert (await api.ok("GET", f"/threads/{tid}/messages", params={"as_of": head, "run_id": run["id"]}))["data"] == []
    await api.ok("DELETE", f"/threads/{tid}")
    assert (await api.call("GET", f"/threads/{tid}"))[0] == 404
    gone_but_audited = await api.ok("GET", f"/threads/{tid}/messages", params={"as_of": "3"})
    assert len(gone_but_audited["data"]) == 2
    assert (await api.call("GET", f"/threads/{tid}", params={"as_of": "yesterday"}))[0] == 400
    other = Client(api.http, await new_key_for(api))
    assert (await other.call("GET", f"/threads/{tid}/messages", params={"as_of": "3"}))[0] == 404


async def new_key_for(api: Client) -> str:
    status, body, _ = await api.raw("GET", "/threads")      # any call: the app's pool is what we need
    assert status == 200
    from service.api.http import SERVICES
    return await new_key(api.http.app[SERVICES].db, "audit-other")


def cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "DATABASE_URL": url, "THREADLINE_LOG_FORMAT": "json"}, timeout=60)


async def test_replay_prints_the_timeline(api, own_database, tmp_path):
    tid, run_id = await conversation(api, tmp_path)
    url, _ = own_database
    text = (await asyncio.to_thread(cli, url, "replay", tid)).stdout
    assert "user message" in text and "'what time is it?'" in text
    assert f"run {run_id} requires_action: get_time(" in text and "get_time → 12:00" in text
    assert f"run {run_id} completed (tokens:" in text and "metadata updated" in text
    lines = (await asyncio.to_thread(cli, url, "replay", tid, "--format", "jsonl")).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["version"] for r in records] == list(range(1, len(records) + 1))
    assert records[0]["type"] == "ThreadCreated" and records[0]["metadata"]["api_key_id"].startswith("key_")
    cut = (await asyncio.to_thread(cli, url, "replay", tid, "--format", "jsonl", "--as-of", "2")).stdout.splitlines()
    assert len(cut) == 2


async def test_verify_finds_an_edited_row_and_a_missing_row(api, own_database, tmp_path):
    url, pool = own_database
    tid, _ = await conversation(api, tmp_path)
    assert (await audit.verify(pool)).ok
    ok = await asyncio.to_thread(cli, url, "audit", "verify", tid)
    assert ok.returncode == 0 and "every hash chain verifies" in ok.stderr
    assert "verified" in ok.stderr and "events in 1 streams" in ok.stderr      # the progress line

    stream = f"thread-{tid}"
    # An attacker with database access: the append-only trigger is switched off first.
    await pool.execute("ALTER TABLE events DISABLE TRIGGER events_no_update")
    try:
        await pool.execute("""UPDATE events SET data = jsonb_set(data::jsonb, '{content,0,text,value}', '"forged"')::json
                              WHERE stream = $1 AND version = 3""", stream)
    finally:
        await pool.execute("ALTER TABLE events ENABLE TRIGGER events_no_update")
    edited = await asyncio.to_thread(cli, url, "audit", "verify", tid)
    assert edited.returncode == 1 and f"BROKEN: {stream} version 3" in edited.stderr

    other, _ = await conversation(api, tmp_path)
    with pytest.raises(Exception, match="append-only"):
        await pool.execute("DELETE FROM events WHERE stream = $1 AND version = 5", f"thread-{other}")
    await pool.execute("ALTER TABLE events DISABLE TRIGGER events_no_delete")
    try:
        await pool.execute("DELETE FROM events WHERE stream = $1 AND version = 5", f"thread-{other}")
    finally:
        await pool.execute("ALTER TABLE events ENABLE TRIGGER events_no_delete")
    result = await audit.verify(pool)
    broken = {(b.stream, b.version) for b in result.breaks}
    assert broken == {(stream, 3), (f"thread-{other}", 5)}
    assert "missing" in next(str(b) for b in result.breaks if b.stream == f"thread-{other}")
    everything = await asyncio.to_thread(cli, url, "audit", "verify", "--all")
    assert everything.returncode == 1 and everything.stderr.count("BROKEN:") == 2


async def test_the_log_records_the_servers_request_id_and_keeps_the_clients_apart(client):
    """A client can call its request anything and send any traceparent: the log keeps those as the
    client's words, beside the request id the server gave."""
    thread = await client.ok("POST", "/threads")
    forged = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    status, _, headers = await client.raw("POST", f"/threads/{thread['id']}/messages",
                                          json={"role": "user", "content": "hi"},
                                          headers={"x-request-id": "req_someone_elses", "traceparent": forged})
    assert status == 200 and headers["x-request-id"].startswith("req_") and headers["x-request-id"] != "req_someone_elses"
    events = (await client.ok("GET", f"/threads/{thread['id']}/events", params={"type": "MessageCreated"}))["data"]
    assert events[0]["request_id"] == headers["x-request-id"]
    assert events[0]["client_request_id"] == "req_someone_elses"
    meta = await client_db_metadata(client, thread["id"])
    assert meta["client_trace_id"] == "ab" * 16 and meta.get("trace_id") != "ab" * 16


async def client_db_metadata(client, thread_id: str) -> dict:
    from service.api.http import SERVICES
    pool = client.http.server.app[SERVICES].db
    raw = await pool.fetchval("SELECT metadata::text FROM events WHERE stream = $1 AND type = 'MessageCreated'",
                              f"thread-{thread_id}")
    return json.loads(raw)
