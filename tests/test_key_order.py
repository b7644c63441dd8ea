"""JSON key order: a function tool's `parameters` and a response_format's json_schema come back, and
reach the model, in the order the user wrote them (strict structured outputs generate keys in schema
order: "reasoning" before "answer" must stay so), and the hash chain still verifies across the
migration that made the log keep it (events/sql/0013_events_json.sql)."""

from __future__ import annotations

import json

import asyncpg

from conftest import fresh_database
from events import audit
from events.migrate import migrate
from fake_openai import text_reply
from service import database
from test_run_engine import api, fake  # noqa: F401 - fixtures: the service with a fake model
from test_runs_api import wait_run
from test_streams import parse

# Keys deliberately out of alphabetical order at several depths.
PARAMETERS = {"type": "object",
              "properties": {"reasoning": {"type": "string", "description": "think first"},
                             "answer": {"type": "object",
                                        "properties": {"value": {"type": "number"}, "unit": {"type": "string"}},
                                        "required": ["value", "unit"], "additionalProperties": False}},
              "required": ["reasoning", "answer"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "solve", "parameters": PARAMETERS, "strict": True}}]
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {
    "schema": {"type": "object", "properties": {"steps": {"type": "array", "items": {"type": "string"}},
                                                "final": {"type": "string"}},
               "required": ["steps", "final"], "additionalProperties": False},
    "name": "worked", "strict": True}}


def order(value) -> str:
    """The JSON text of a value, keys as they come: equal only if every object's keys are in the same order."""
    return json.dumps(value)


def assert_ordered(obj: dict, tools=TOOLS, response_format=RESPONSE_FORMAT) -> None:
    assert order(obj["tools"]) == order(tools)
    assert order(obj["response_format"]) == order(response_format)


async def test_an_assistant_keeps_its_schemas_key_order(api):
    created = await api.ok("POST", "/assistants", {"model": "fake-a", "tools": TOOLS,
                                                   "response_format": RESPONSE_FORMAT})
    assert_ordered(created)
    assert_ordered(await api.ok("GET", f"/assistants/{created['id']}"))
    listed = await api.ok("GET", "/assistants")
    assert_ordered(next(a for a in listed["data"] if a["id"] == created["id"]))
    # An update that leaves the schemas alone keeps them, and one that sends new ones keeps theirs.
    assert_ordered(await api.ok("POST", f"/assistants/{created['id']}", {"name": "renamed"}))
    assert_ordered(await api.ok("GET", f"/assistants/{created['id']}"))
    other = [{"type": "function", "function": {"name": "z", "parameters": {
        "type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "string"}}}}}]
    updated = await api.ok("POST", f"/assistants/{created['id']}", {"tools": other})
    assert_ordered(updated, tools=other)
    assert_ordered(await api.ok("GET", f"/assistants/{created['id']}"), tools=other)
    assert (await api.ok("GET", f"/assistants/{created['id']}"))["name"] == "renamed"


async def test_a_run_and_the_model_request_keep_the_order(api, fake):
    fake.script(text_reply('{"steps": ["a"], "final": "b"}'), text_reply("again"))
    asst = await api.ok("POST", "/assistants", {"model": "fake-a", "tools": TOOLS, "response_format": RESPONSE_FORMAT})
    thread = await api.ok("POST", "/threads", {"messages": [{"role": "user", "content": "solve it"}]})
    tid = thread["id"]
    created = await api.ok("POST", f"/threads/{tid}/runs", {"assistant_id": asst["id"]})
    assert_ordered(created)
    finished = await wait_run(api, tid, created["id"])
    assert finished["status"] == "completed"
    assert_ordered(finished)
    assert_ordered((await api.ok("GET", f"/threads/{tid}/runs"))["data"][0])

    body = fake.requests[0].body
    assert order(body["tools"]) == order(TOOLS)
    assert order(body["response_format"]) == order(RESPONSE_FORMAT)

    # A finished run's stream, replayed from the start (the resumable GET).
    status, raw, _ = await api.raw("GET", f"/threads/{tid}/runs/{created['id']}/stream")
    assert status == 200
    frames = {e: json.loads(d) for _, e, d in parse(raw) if e.startswith("thread.run.")}
    assert_ordered(frames["thread.run.created"])
    assert_ordered(frames["thread.run.completed"])

    # The SDK's stream: thread.run.created as the first run frame.
    status, raw, _ = await api.raw("POST", f"/threads/{tid}/runs", json={"assistant_id": asst["id"], "stream": True})
    assert status == 200
    streamed = [json.loads(d) for _, e, d in parse(raw) if e == "thread.run.created"]
    assert len(streamed) == 1
    assert_ordered(streamed[0])
    assert order(fake.requests[1].body["tools"]) == order(TOOLS)

    # The audit events API shows the event as written.
    events = await api.ok("GET", f"/threads/{tid}/events", params={"type": "RunCreated", "limit": "1"})
    data = events["data"][0]["data"]
    assert order(data["tools"]) == order(TOOLS)


_NEW = ("events/0013_events_json.sql", "projections/0004_json_read_models.sql")
_OLD_APPEND = ("SELECT * FROM append_events($1::text[], $2::integer[], $3::text[], $4::jsonb[], $5::jsonb[])")
_NEW_APPEND = ("SELECT * FROM append_events($1::text[], $2::integer[], $3::text[], $4::json[], $5::jsonb[])")


async def test_the_chain_verifies_across_the_migration(server_url):
    url = await fresh_database(server_url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        files = database.threadline_migrations()
        assert all(name in [n for n, _ in files] for name in _NEW)
        async with pool.acquire() as conn:
            await migrate(conn, [f for f in files if f[0] not in _NEW])
        # Written the old way: jsonb sorts the keys, and the hash is over jsonb's text.
        doc = json.dumps({"tools": TOOLS, "b": 1, "a": {"y": 2, "x": 1}})
        await pool.fetch(_OLD_APPEND, ["s-1", "s-1"], [1, 2], ["T", "T"], [doc, doc], ["{}", "{}"])
        before = await pool.fetch("SELECT data::text, hash FROM events ORDER BY position")
        assert (await audit.verify(pool)).ok

        async with pool.acquire() as conn:
            assert await migrate(conn, files) == list(_NEW)
        assert await pool.fetch("SELECT data::text, hash FROM events ORDER BY position") == before
        assert (await audit.verify(pool)).ok

        # Written the new way, after the old events of the same stream: kept as sent, still chained.
        await pool.fetch(_NEW_APPEND, ["s-1", "s-2"], [3, 1], ["T", "T"], [doc, doc], ["{}", "{}"])
        after = await pool.fetch("SELECT data::text FROM events WHERE position > 2 ORDER BY position")
        assert [r[0] for r in after] == [doc, doc]
        result = await audit.verify(pool)
        assert result.ok and result.events == 4, result.breaks

        # An edit is still caught on a json row.
        await pool.execute("ALTER TABLE events DISABLE TRIGGER events_no_update")
        await pool.execute("""UPDATE events SET data = '{"forged": true}' WHERE stream = 's-2'""")
        assert [b.stream for b in (await audit.verify(pool)).breaks] == ["s-2"]
    finally:
        await pool.close()
