"""Tenancy over real HTTP: a key of project B never sees, changes or uses anything of project A,
on every endpoint and under every mount prefix, and A's objects are unchanged afterwards."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from aiohttp import FormData

from conftest import Client, new_key

PREFIXES = ["", "/v1", "/openai", "/api/projects/{project}"]




def assert_error(status, body, expected_status, message):
    assert status == expected_status, (status, body)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"] == message, body


@dataclass
class World:
    a: Client
    b: Client
    a_name: str
    b_name: str
    ids: dict
    snapshot: dict


async def snapshot(a: Client, ids: dict) -> dict:
    """Everything project A can read about its objects."""
    t = ids["thread"]
    return {
        "assistant": await a.ok("GET", f"/assistants/{ids['asst']}"),
        "thread": await a.ok("GET", f"/threads/{t}"),
        "messages": await a.ok("GET", f"/threads/{t}/messages", params={"order": "asc", "limit": "100"}),
        "message": await a.ok("GET", f"/threads/{t}/messages/{ids['msg']}"),
        "file": await a.ok("GET", f"/files/{ids['file']}"),
        "content": (await a.raw("GET", f"/files/{ids['file']}/content"))[1],
        "assistants": await a.ok("GET", "/assistants"),
        "threads": await a.ok("GET", "/threads"),
        "files": await a.ok("GET", "/files"),
    }


async def make_world(app_client, db, b_prefix: str = "/v1") -> World:
    a_name, b_name = f"a-{uuid.uuid4().hex[:10]}", f"b-{uuid.uuid4().hex[:10]}"
    a = Client(app_client, await new_key(db, a_name))
    b = Client(app_client, await new_key(db, b_name), b_prefix.format(project=b_name))
    file = (await a.upload(b"A's secret bytes", "secret.txt"))["id"]
    asst = (await a.ok("POST", "/assistants", {"model": "m", "name": "A's", "metadata": {"owner": "a"}}))["id"]
    thread = (await a.ok("POST", "/threads", {"metadata": {"owner": "a"}, "messages": [
        {"role": "user", "content": "first secret", "attachments": [{"file_id": file}]}]}))["id"]
    msg = (await a.ok("POST", f"/threads/{thread}/messages", {"role": "user", "content": "second secret",
                                                               "metadata": {"owner": "a"}}))["id"]
    ids = {"asst": asst, "thread": thread, "msg": msg, "file": file}
    return World(a, b, a_name, b_name, ids, await snapshot(a, ids))


# Every endpoint that names an object of A: (method, path, body, which object the 404 names)
ENDPOINTS = [
    ("GET", "/assistants/{asst}", None, "assistant", "asst"),
    ("POST", "/assistants/{asst}", {"name": "stolen", "metadata": {"owner": "b"}}, "assistant", "asst"),
    ("POST", "/assistants/{asst}", {}, "assistant", "asst"),
    ("DELETE", "/assistants/{asst}", None, "assistant", "asst"),
    ("GET", "/threads/{thread}", None, "thread", "thread"),
    ("POST", "/threads/{thread}", {"metadata": {"owner": "b"}}, "thread", "thread"),
    ("POST", "/threads/{thread}", {}, "thread", "thread"),
    ("DELETE", "/threads/{thread}", None, "thread", "thread"),
    ("GET", "/threads/{thread}/messages", None, "thread", "thread"),
    ("GET", "/threads/{thread}/messages?order=asc&limit=100", None, "thread", "thread"),
    ("GET", "/threads/{thread}/messages?run_id=run_x", None, "thread", "thread"),
    ("POST", "/threads/{thread}/messages", {"role": "user", "content": "injected"}, "thread", "thread"),
    ("GET", "/threads/{thread}/messages/{msg}", None, "thread", "thread"),
    ("POST", "/threads/{thread}/messages/{msg}", {"metadata": {"owner": "b"}}, "thread", "thread"),
    ("POST", "/threads/{thread}/messages/{msg}", {}, "thread", "thread"),
    ("DELETE", "/threads/{thread}/messages/{msg}", None, "thread", "thread"),
    ("GET", "/files/{file}", None, "file", "file"),
    ("GET", "/files/{file}/content", None, "file", "file"),
    ("DELETE", "/files/{file}", None, "file", "file"),
]
ENDPOINT_IDS = [f"{m} {p}" + (" {}" if b == {} else "") for m, p, b, _, _ in ENDPOINTS]


@pytest.mark.parametrize("prefix", PREFIXES, ids=[p or "/" for p in PREFIXES])
@pytest.mark.parametrize("method,path,body,kind,named", ENDPOINTS, ids=ENDPOINT_IDS)
async def test_another_projects_ids_are_404_and_change_nothing(app_client, db, prefix, method, path, body, kind,
                                                               named):
    w = await make_world(app_client, db, prefix)
    status, err = await w.b.call(method, path.format(**w.ids), body)
    assert_error(status, err, 404, f"No {kind} found with id '{w.ids[named]}'.")
    assert await snapshot(w.a, w.ids) == w.snapshot


async def test_lists_show_nothing_of_another_project(app_client, db):
    w = await make_world(app_client, db)
    b_asst = (await w.b.ok("POST", "/assistants", {"model": "m"}))["id"]
    b_thread = (await w.b.ok("POST", "/threads"))["id"]
    b_file = (await w.b.upload(b"B's", "b.txt"))["id"]
    for path, mine in (("/assistants", b_asst), ("/threads", b_thread), ("/files", b_file)):
        for params in ({}, {"order": "asc"}, {"limit": "100"}, {"after": "zzzz"}, {"order": "asc", "after": "a"},
                       {"before": "a"}, {"order": "asc", "before": "zzzz"}):
            page = await w.b.ok("GET", path, params=params)
            assert [o["id"] for o in page["data"]] == [mine], (path, params, page)
        # A's ids as cursors only position the page
        for cursor in w.ids.values():
            for params in ({"after": cursor}, {"before": cursor}, {"after": cursor, "order": "asc"}):
                page = await w.b.ok("GET", path, params=params)
                assert set(o["id"] for o in page["data"]) <= {mine}
    for purpose in ("assistants", "vision"):
        page = await w.b.ok("GET", "/files", params={"purpose": purpose})
        assert [o["id"] for o in page["data"]] == ([b_file] if purpose == "assistants" else [])
    assert_error(*await w.b.call("GET", f"/threads/{w.ids['thread']}/messages"), 404,
                 f"No thread found with id '{w.ids['thread']}'.")
    # and A does not see B's objects either
    assert await snapshot(w.a, w.ids) == w.snapshot
    for path, theirs in (("/assistants", b_asst), ("/threads", b_thread), ("/files", b_file)):
        assert theirs not in {o["id"] for o in (await w.a.ok("GET", path, params={"limit": "100"}))["data"]}
        status, err = await w.a.call("GET", f"{path}/{theirs}")
        assert status == 404, err


async def test_files_of_another_project_cannot_be_referenced(app_client, db):
    w = await make_world(app_client, db)
    f = w.ids["file"]
    b_thread = (await w.b.ok("POST", "/threads"))["id"]
    for message in ({"role": "user", "content": "x", "attachments": [{"file_id": f, "tools": []}]},
                    {"role": "user", "content": [{"type": "image_file", "image_file": {"file_id": f}}]}):
        assert_error(*await w.b.call("POST", f"/threads/{b_thread}/messages", message), 400,
                     f"No file found with id '{f}'.")
        assert_error(*await w.b.call("POST", "/threads", {"messages": [message]}), 400,
                     f"No file found with id '{f}'.")
    assert (await w.b.ok("GET", f"/threads/{b_thread}/messages"))["data"] == []
    assert [t["id"] for t in (await w.b.ok("GET", "/threads"))["data"]] == [b_thread]
    assert await snapshot(w.a, w.ids) == w.snapshot


async def test_another_projects_message_under_ones_own_thread_is_404(app_client, db):
    w = await make_world(app_client, db)
    b_thread = (await w.b.ok("POST", "/threads", {"messages": [{"role": "user", "content": "B's"}]}))["id"]
    m = w.ids["msg"]
    for method, body in (("GET", None), ("POST", {"metadata": {"owner": "b"}}), ("POST", {}), ("DELETE", None)):
        assert_error(*await w.b.call(method, f"/threads/{b_thread}/messages/{m}", body), 404,
                     f"No message found with id '{m}'.")
    assert len((await w.b.ok("GET", f"/threads/{b_thread}/messages"))["data"]) == 1
    assert await snapshot(w.a, w.ids) == w.snapshot


async def test_the_url_cannot_switch_project(app_client, db):
    """B's key under /api/projects/<A> is refused before anything is read or written."""
    w = await make_world(app_client, db)
    b_in_a = Client(app_client, w.b.key, f"/api/projects/{w.a_name}")
    for method, path, body, _, _ in ENDPOINTS + [("GET", "/assistants", None, 0, 0), ("GET", "/threads", None, 0, 0),
                                                 ("GET", "/files", None, 0, 0),
                                                 ("POST", "/assistants", {"model": "m"}, 0, 0),
                                                 ("POST", "/threads", {}, 0, 0)]:
        assert_error(*await b_in_a.call(method, path.format(**w.ids), body), 404,
                     f"No project found with name '{w.a_name}'.")
    status, err = await b_in_a.call("POST", "/files", data=FormData({"purpose": "assistants"}))
    assert_error(status, err, 404, f"No project found with name '{w.a_name}'.")
    assert await snapshot(w.a, w.ids) == w.snapshot
    assert (await w.b.ok("GET", "/assistants"))["data"] == [] and (await w.b.ok("GET", "/threads"))["data"] == []


async def test_project_names_are_case_sensitive_tenants(app_client, db):
    base = f"acme{uuid.uuid4().hex[:6]}"
    lower = Client(app_client, await new_key(db, base))
    upper = Client(app_client, await new_key(db, base.upper()))
    t = (await lower.ok("POST", "/threads"))["id"]
    assert_error(*await upper.call("GET", f"/threads/{t}"), 404, f"No thread found with id '{t}'.")
    assert (await upper.ok("GET", "/threads"))["data"] == []
    assert_error(*await Client(app_client, upper.key, f"/api/projects/{base}").call("GET", "/threads"), 404,
                 f"No project found with name '{base}'.")


async def test_two_keys_of_one_project_share_it(app_client, db):
    name = f"shared-{uuid.uuid4().hex[:6]}"
    k1 = Client(app_client, await new_key(db, name))
    k2 = Client(app_client, await new_key(db, name), f"/api/projects/{name}")
    t = await k1.ok("POST", "/threads", {"metadata": {"by": "k1"}})
    assert await k2.ok("GET", f"/threads/{t['id']}") == t
    await k2.ok("POST", f"/threads/{t['id']}/messages", {"role": "user", "content": "from k2"})
    assert len((await k1.ok("GET", f"/threads/{t['id']}/messages"))["data"]) == 1
