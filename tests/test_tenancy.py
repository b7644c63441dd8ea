"""Tenancy over real HTTP: a key of project B never sees, changes or uses anything of project A,
on every endpoint and under every mount prefix, and A's objects are unchanged afterwards."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer

from conftest import Client, new_key, test_config as make_config, until
from footprint import footprint
from service.api.requests import (
    CompleteUploadRequest, CreateUploadRequest, CreateAssistantRequest, CreateMessageRequest, CreateRunRequest, CreateThreadAndRunRequest,
    CreateThreadRequest, CreateWebhookRequest, SubmitToolOutputsRequest, UpdateAssistantRequest,
    UpdateMessageRequest, UpdateRunRequest, UpdateThreadRequest, UpdateWebhookRequest,
)
from service.api.routes import ROUTES
from service.app import create_app

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


# --- the whole route table ------------------------------------------------------------------------
# Every route of service.api.routes.ROUTES, so a new route is covered (or fails here until it is):
# B's key with A's ids gets exactly the 404 it gets for ids that never existed, and nothing changes.

# A valid body per request type, so the request gets past validation to the lookup. "{name}" is an id
# of the project whose ids are being tried; "{own:name}" one of the caller's own.
BODIES = {
    CreateAssistantRequest: {"model": "builtin/echo"},
    UpdateAssistantRequest: {"name": "B was here", "metadata": {"by": "b"}},
    CreateThreadAndRunRequest: {"assistant_id": "{assistant_id}"},
    CreateThreadRequest: {"messages": [{"role": "user", "content": "b"}]},
    UpdateThreadRequest: {"metadata": {"by": "b"}},
    CreateMessageRequest: {"role": "user", "content": "injected by b"},
    UpdateMessageRequest: {"metadata": {"by": "b"}},
    CreateRunRequest: {"assistant_id": "{own:assistant_id}"},
    UpdateRunRequest: {"metadata": {"by": "b"}},
    SubmitToolOutputsRequest: {"tool_outputs": [{"tool_call_id": "call_b", "output": "b"}]},
    CreateWebhookRequest: {"url": "http://127.0.0.1:9/b", "events": ["*"]},
    UpdateWebhookRequest: {"description": "B was here", "rotate_secret": True},
    CreateUploadRequest: {"bytes": 3, "filename": "b.txt", "mime_type": "text/plain", "purpose": "assistants"},
    CompleteUploadRequest: {"part_ids": []},
}
# Ids of each kind that exist nowhere, shaped like real ones.
NOBODY = {"assistant_id": "asst_nobody0000000000000000", "thread_id": "thread_nobody000000000000000",
          "message_id": "msg_nobody00000000000000000", "run_id": "run_nobody00000000000000000",
          "step_id": "step_nobody0000000000000000", "file_id": "file-nobody00000000000000000",
          "webhook_id": "wh_nobody000000000000000000", "delivery_id": "whd_nobody00000000000000000",
          "upload_id": "upload_nobody000000000000000"}
MATRIX_PREFIXES = ["/v1", "/api/projects/{project}"]


def _route_id(route) -> str:
    return f"{route.method} {route.path}"


def _path_params(route) -> list[str]:
    return re.findall(r"{(\w+)}", route.path)


def _body(route, ids: dict, own: dict):
    if route.body is None:
        return None
    assert route.body in BODIES, f"add a valid {route.body.__name__} to BODIES for {_route_id(route)}"
    text = json.dumps(BODIES[route.body])
    for name in NOBODY:
        text = text.replace("{own:" + name + "}", own[name]).replace("{" + name + "}", ids[name])
    return json.loads(text)


def _names_an_id(route) -> bool:
    return bool(_path_params(route)) or "{assistant_id}" in json.dumps(BODIES.get(route.body, {}))


class Receiver:
    def __init__(self):
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)


async def _objects(c: Client, receiver: Receiver, secret: str) -> dict:
    """One object of every kind, a finished run with its steps, and a webhook delivery."""
    hook = await c.ok("POST", "/webhooks", {"url": f"http://127.0.0.1:{receiver.server.port}/{secret}",
                                            "events": ["thread.run.completed"], "description": secret})
    file = (await c.upload(secret.encode(), f"{secret}.txt"))["id"]
    asst = (await c.ok("POST", "/assistants", {"model": "builtin/echo", "name": secret,
                                               "instructions": secret, "metadata": {"secret": secret}}))["id"]
    thread = (await c.ok("POST", "/threads", {"metadata": {"secret": secret}, "messages": [
        {"role": "user", "content": secret, "attachments": [{"file_id": file}]}]}))["id"]
    msg = (await c.ok("POST", f"/threads/{thread}/messages", {"role": "user", "content": f"more {secret}"}))["id"]
    run = (await c.ok("POST", f"/threads/{thread}/runs", {"assistant_id": asst, "metadata": {"secret": secret}}))["id"]

    async def finished():
        r = await c.ok("GET", f"/threads/{thread}/runs/{run}")
        return r["status"] in ("completed", "failed", "cancelled", "expired", "incomplete") and r
    assert (await until(finished, "the run to end", timeout=20))["status"] == "completed"
    step = (await c.ok("GET", f"/threads/{thread}/runs/{run}/steps"))["data"][0]["id"]

    async def delivered():
        page = await c.ok("GET", f"/webhooks/{hook['id']}/deliveries")
        return page["data"] and page["data"][0]["status"] == "delivered" and page["data"][0]
    delivery = (await until(delivered, "the webhook delivery", timeout=20))["id"]
    upload = (await c.ok("POST", "/uploads", {"bytes": 3, "filename": f"{secret}.bin", "mime_type": "text/plain",
                                              "purpose": "assistants"}))["id"]
    return {"assistant_id": asst, "thread_id": thread, "message_id": msg, "run_id": run, "step_id": step,
            "file_id": file, "webhook_id": hook["id"], "delivery_id": delivery, "upload_id": upload}


@dataclass
class Matrix:
    http: object
    db: object
    a_name: str
    b_name: str
    a_key: str
    b_key: str
    a_ids: dict
    b_ids: dict
    secret: str


@pytest.fixture(scope="module")
async def matrix(own_database):
    url, pool = own_database
    config = make_config(webhook_allow_http=True, webhook_allow_networks="127.0.0.0/8",
                         webhook_first_retry_seconds=0.05, run_sweep_seconds=0.2)
    http = TestClient(TestServer(create_app(config, url)))
    await http.start_server()
    receiver = Receiver()
    await receiver.server.start_server()
    try:
        a_name, b_name = f"a-{uuid.uuid4().hex[:10]}", f"b-{uuid.uuid4().hex[:10]}"
        a_key, b_key = await new_key(pool, a_name), await new_key(pool, b_name)
        secret = f"secret{uuid.uuid4().hex[:12]}"
        a_ids = await _objects(Client(http, a_key), receiver, secret)
        b_ids = await _objects(Client(http, b_key), receiver, f"bee{uuid.uuid4().hex[:12]}")
        yield Matrix(http, pool, a_name, b_name, a_key, b_key, a_ids, b_ids, secret)
    finally:
        await receiver.server.close()
        await http.close()


async def _call(m: Matrix, key: str | None, prefix: str, route, ids: dict, own: dict, **kw):
    """(status, body, the ids the request named) for one route, every path parameter taken from ids."""
    params = _path_params(route)
    for name in params:
        assert name in ids, f"add ids of kind '{name}' to the tenancy matrix for {_route_id(route)}"
    path = route.path.format(**{n: ids[n] for n in params})
    c = Client(m.http, key, prefix.format(project=m.b_name))
    status, raw, headers = await c.raw(route.method, path, json=_body(route, ids, own), **kw)
    assert headers["Content-Type"].startswith("application/json"), (status, headers)
    named = [ids[n] for n in params] + ([ids["assistant_id"]] if "{assistant_id}" in
                                         json.dumps(BODIES.get(route.body, {})) else [])
    return status, json.loads(raw), named


def _anonymised(body: dict, named: list[str]) -> str:
    text = json.dumps(body, sort_keys=True)
    for i, value in enumerate(named):
        text = text.replace(value, f"<id {i}>")
    return text


@pytest.mark.parametrize("prefix", MATRIX_PREFIXES)
@pytest.mark.parametrize("route", [r for r in ROUTES if _names_an_id(r)], ids=_route_id)
async def test_every_route_answers_another_projects_ids_as_unknown(matrix, route, prefix):
    m = matrix
    before = (await footprint(m.db, m.a_name), await footprint(m.db, m.b_name))
    status, body, named = await _call(m, m.b_key, prefix, route, m.a_ids, m.b_ids)
    assert_error(status, body, 404, body.get("error", {}).get("message"))
    text = json.dumps(body)
    assert m.secret not in text and m.a_name not in text, body
    # Exactly what ids that never existed get: the answer tells nothing about A's objects.
    n_status, n_body, n_named = await _call(m, m.b_key, prefix, route, NOBODY, m.b_ids)
    assert (status, _anonymised(body, named)) == (n_status, _anonymised(n_body, n_named))
    assert (await footprint(m.db, m.a_name), await footprint(m.db, m.b_name)) == before


@pytest.mark.parametrize("route", [r for r in ROUTES if len(_path_params(r)) > 1], ids=_route_id)
async def test_another_projects_child_under_ones_own_parent_is_unknown(matrix, route):
    """B's own thread (run, webhook) with A's message (run, step, delivery) below it."""
    m = matrix
    params = _path_params(route)
    ids = {**m.b_ids, params[-1]: m.a_ids[params[-1]]}
    nobody = {**m.b_ids, params[-1]: NOBODY[params[-1]]}
    before = (await footprint(m.db, m.a_name), await footprint(m.db, m.b_name))
    status, body, named = await _call(m, m.b_key, "/v1", route, ids, m.b_ids)
    assert status == 404, (status, body)
    assert m.secret not in json.dumps(body), body
    n_status, n_body, n_named = await _call(m, m.b_key, "/v1", route, nobody, m.b_ids)
    assert (status, _anonymised(body, named)) == (n_status, _anonymised(n_body, n_named))
    assert (await footprint(m.db, m.a_name), await footprint(m.db, m.b_name)) == before


WRONG_CREDENTIALS = {
    "none": {},
    "wrong bearer": {"Authorization": "Bearer tl-not-a-key-of-anyone-at-all-000000000000"},
    "wrong api-key": {"api-key": "tl-not-a-key-of-anyone-at-all-000000000000"},
    "not bearer": {"Authorization": "Token {key}"},
}


@pytest.mark.parametrize("credentials", list(WRONG_CREDENTIALS))
@pytest.mark.parametrize("route", ROUTES, ids=_route_id)
async def test_every_route_needs_a_valid_key(matrix, route, credentials):
    """401 before anything else is looked at: with the owner's real ids, and with a valid body."""
    m = matrix
    headers = {k: v.format(key=m.a_key) for k, v in WRONG_CREDENTIALS[credentials].items()}
    before = await footprint(m.db, m.a_name)
    kw = {"data": FormData({"purpose": "assistants"})} if route.multipart else {}
    for prefix in ("", "/v1", "/openai", f"/api/projects/{m.a_name}"):
        status, body, _ = await _call(m, None, prefix, route, m.a_ids, m.a_ids, headers=headers, **kw)
        assert status == 401, (prefix, status, body)
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
        assert body["error"]["code"] == "invalid_api_key" and m.secret not in json.dumps(body)
    if route.sse:      # EventSource's ?api_key= is checked like a header
        status, body, _ = await _call(m, None, "/v1", route, m.a_ids, m.a_ids,
                                      params={"api_key": "tl-not-a-key-of-anyone-at-all-000000000000"})
        assert status == 401 and body["error"]["code"] == "invalid_api_key", body
    assert await footprint(m.db, m.a_name) == before


async def test_another_projects_key_in_the_stream_url_is_404(matrix):
    m = matrix
    for path in (f"/v1/threads/{m.a_ids['thread_id']}/stream",
                 f"/v1/threads/{m.a_ids['thread_id']}/runs/{m.a_ids['run_id']}/stream"):
        resp = await m.http.get(path, params={"api_key": m.b_key})
        body = await resp.json()
        assert resp.status == 404 and m.secret not in json.dumps(body), body


async def test_the_matrix_world_is_intact(matrix):
    """After everything above, A still reads all of its objects as they were made."""
    a = Client(matrix.http, matrix.a_key)
    ids = matrix.a_ids
    assert (await a.ok("GET", f"/assistants/{ids['assistant_id']}"))["name"] == matrix.secret
    assert (await a.ok("GET", f"/threads/{ids['thread_id']}"))["metadata"] == {"secret": matrix.secret}
    hook = await a.ok("GET", f"/webhooks/{ids['webhook_id']}")
    assert hook["description"] == matrix.secret and "secret" not in hook
    assert len((await a.ok("GET", f"/threads/{ids['thread_id']}/messages"))["data"]) >= 3
    assert (await a.ok("GET", f"/threads/{ids['thread_id']}/runs/{ids['run_id']}"))["metadata"] == {
        "secret": matrix.secret}
