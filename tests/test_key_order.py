"""JSON key order: a function tool's `parameters` and a response_format's json_schema come back, and
reach the model, in the order the user wrote them (strict structured outputs generate keys in schema
order: "reasoning" before "answer" must stay so)."""

from __future__ import annotations

import json

from fake_openai import text_reply
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
