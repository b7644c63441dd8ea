"""Idempotency-Key over real HTTP and real Postgres: a retry returns the original response and
creates nothing; a different request with the same key is a 400; a running one is a 409."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer

from conftest import Client, new_key
from conftest import test_config as make_config
from service.api import idempotency
from service.api.http import json_ok
from service.app import create_app

REUSED = ("Keys for idempotent requests can only be used with the same parameters they were first used with. "
          "Try using a key other than '{key}' if you meant to execute a different request.")
IN_USE = "A request with this Idempotency-Key is still being processed; retry later."


def new_idempotency_key() -> str:
    return f"idem-{uuid.uuid4().hex}"


def keyed(key: str) -> dict:
    return {"Idempotency-Key": key}


def assert_envelope(status, body: bytes, expected_status: int, message: str, code: str):
    assert status == expected_status, (status, body)
    assert json.loads(body) == {"error": {"message": message, "type": "invalid_request_error", "param": None,
                                          "code": code}}


async def eventually(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (result := await predicate()):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
    return result


async def thread_ids(client: Client) -> list[str]:
    return [t["id"] for t in (await client.ok("GET", "/threads", params={"limit": "100"}))["data"]]


# --- retries -------------------------------------------------------------------------------------


async def test_retried_thread_creation_returns_the_same_thread_and_creates_one(client):
    key = new_idempotency_key()
    body = {"metadata": {"attempt": "first"}}
    status, first, headers = await client.raw("POST", "/threads", json=body, headers=keyed(key))
    assert status == 200 and "Idempotent-Replayed" not in headers
    status, again, headers = await client.raw("POST", "/threads", json=body, headers=keyed(key))
    assert status == 200 and again == first
    assert headers["Idempotent-Replayed"] == "true"
    assert headers["Content-Type"].startswith("application/json")
    assert await thread_ids(client) == [json.loads(first)["id"]]


async def test_a_retry_through_another_mount_prefix_or_api_version_is_the_same_request(client, project):
    name, key = project
    idem = new_idempotency_key()
    first = await client.ok("POST", "/threads", {}, headers=keyed(idem))
    for prefix, version in (("", None), ("/openai", "2025-05-15-preview"), (f"/api/projects/{name}", None)):
        other = Client(client.http, key, prefix, version)
        status, body, headers = await other.raw("POST", "/threads", json={}, headers=keyed(idem))
        assert status == 200 and json.loads(body) == first and headers["Idempotent-Replayed"] == "true"
    assert await thread_ids(client) == [first["id"]]


async def test_retried_message_creation_adds_one_message(client):
    thread = await client.ok("POST", "/threads", {})
    key, body = new_idempotency_key(), {"role": "user", "content": "only once"}
    first = await client.ok("POST", f"/threads/{thread['id']}/messages", body, headers=keyed(key))
    again = await client.ok("POST", f"/threads/{thread['id']}/messages", body, headers=keyed(key))
    assert again == first
    messages = await client.ok("GET", f"/threads/{thread['id']}/messages")
    assert [m["id"] for m in messages["data"]] == [first["id"]]


async def test_requests_without_the_header_are_unaffected(client):
    body = {"metadata": {"same": "body"}}
    one = await client.raw("POST", "/threads", json=body)
    two = await client.raw("POST", "/threads", json=body)
    assert one[0] == two[0] == 200 and json.loads(one[1])["id"] != json.loads(two[1])["id"]
    assert "Idempotent-Replayed" not in one[2] and "Idempotent-Replayed" not in two[2]
    assert len(await thread_ids(client)) == 2


async def test_a_client_error_is_replayed_as_the_same_client_error(client):
    key = new_idempotency_key()
    first = await client.raw("POST", "/threads", json={"metadata": "not an object"}, headers=keyed(key))
    assert first[0] == 400
    again = await client.raw("POST", "/threads", json={"metadata": "not an object"}, headers=keyed(key))
    assert (again[0], again[1]) == (first[0], first[1]) and again[2]["Idempotent-Replayed"] == "true"
    assert await thread_ids(client) == []


async def test_a_404_is_replayed_too(client):
    key = new_idempotency_key()
    first = await client.raw("POST", "/threads/thread_missing/messages", json={"role": "user", "content": "x"},
                             headers=keyed(key))
    again = await client.raw("POST", "/threads/thread_missing/messages", json={"role": "user", "content": "x"},
                             headers=keyed(key))
    assert first[0] == again[0] == 404 and again[1] == first[1] and again[2]["Idempotent-Replayed"] == "true"


async def test_retried_file_upload_stores_one_file(client):
    """Each attempt's multipart body has its own boundary: the bytes differ, the upload is the same."""
    key = new_idempotency_key()

    async def upload():
        form = FormData()
        form.add_field("purpose", "assistants")
        form.add_field("file", b"idempotent bytes", filename="once.txt")
        return await client.raw("POST", "/files", data=form, headers=keyed(key))

    first, again = await upload(), await upload()
    assert first[0] == again[0] == 200 and again[1] == first[1] and again[2]["Idempotent-Replayed"] == "true"
    files = await client.ok("GET", "/files")
    assert [f["id"] for f in files["data"]] == [json.loads(first[1])["id"]]


# --- refusals ------------------------------------------------------------------------------------


async def test_the_same_key_with_a_different_body_is_a_400(client):
    key = new_idempotency_key()
    first = await client.ok("POST", "/threads", {"metadata": {"n": "1"}}, headers=keyed(key))
    status, body, headers = await client.raw("POST", "/threads", json={"metadata": {"n": "2"}}, headers=keyed(key))
    assert_envelope(status, body, 400, REUSED.format(key=key), "idempotency_key_reused")
    assert "Idempotent-Replayed" not in headers
    assert await thread_ids(client) == [first["id"]]


async def test_the_same_key_on_a_different_path_is_a_400(client):
    key = new_idempotency_key()
    await client.ok("POST", "/threads", {}, headers=keyed(key))
    status, body, _ = await client.raw("POST", "/assistants", json={}, headers=keyed(key))
    assert_envelope(status, body, 400, REUSED.format(key=key), "idempotency_key_reused")
    assert (await client.ok("GET", "/assistants"))["data"] == []


async def test_keys_are_scoped_to_the_project(app_client, db):
    a, b = Client(app_client, await new_key(db)), Client(app_client, await new_key(db))
    key = new_idempotency_key()
    in_a = await a.ok("POST", "/threads", {}, headers=keyed(key))
    in_b = await b.ok("POST", "/threads", {}, headers=keyed(key))
    assert in_a["id"] != in_b["id"]
    assert await thread_ids(a) == [in_a["id"]] and await thread_ids(b) == [in_b["id"]]


@pytest.mark.parametrize("key", ["k" * 256, " ", "caf\u00e9"], ids=["too-long", "blank", "non-ascii"])
async def test_invalid_keys_are_a_400_and_create_nothing(client, key):
    status, body, _ = await client.raw("POST", "/threads", json={},
                                       headers={"Idempotency-Key": key.encode().decode("latin-1")})
    assert_envelope(status, body, 400, "Invalid 'Idempotency-Key' header: a key is 1 to 255 printable ASCII "
                                       "characters.", "invalid_idempotency_key")
    assert await thread_ids(client) == []


async def test_a_key_of_255_characters_is_accepted(client):
    key = "k" * 255
    first = await client.ok("POST", "/threads", {}, headers=keyed(key))
    assert await client.ok("POST", "/threads", {}, headers=keyed(key)) == first


async def test_concurrent_requests_with_one_key_create_one_object(client):
    key = new_idempotency_key()
    results = await asyncio.gather(*(client.raw("POST", "/threads", json={}, headers=keyed(key)) for _ in range(8)))
    ok = [json.loads(body) for status, body, _ in results if status == 200]
    assert ok and all(thread == ok[0] for thread in ok)
    for status, body, _ in results:
        if status != 200:
            assert_envelope(status, body, 409, IN_USE, "idempotency_key_in_use")
    assert await thread_ids(client) == [ok[0]["id"]]


# --- a request still running, one that failed, one whose client left -----------------------------


class Gate:
    """A test route that waits until opened, and counts how often it ran."""

    def __init__(self):
        self.opened, self.entered, self.calls = asyncio.Event(), asyncio.Event(), 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.entered.set()
        await self.opened.wait()
        return json_ok({"calls": self.calls})


class Flaky:
    """A test route that fails with an unexpected error on its first call."""

    def __init__(self):
        self.calls = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("first call fails")
        return json_ok({"calls": self.calls})


@pytest.fixture
async def gated(database_url, db):
    """The app with two extra routes (/v1/test/gate, /v1/test/flaky), its client, and the routes."""
    gate, flaky = Gate(), Flaky()
    app = create_app(make_config(), database_url)
    app.router.add_post("/v1/test/gate", gate.handle)
    app.router.add_post("/v1/test/flaky", flaky.handle)
    http = TestClient(TestServer(app))   # handler_cancellation=True, as `threadline serve` runs
    await http.start_server()
    try:
        yield Client(http, await new_key(db)), gate, flaky
    finally:
        gate.opened.set()
        await http.close()


async def test_a_request_still_running_makes_a_retry_a_409(gated):
    client, gate, _ = gated
    key = new_idempotency_key()
    first = asyncio.create_task(client.raw("POST", "/test/gate", json={}, headers=keyed(key)))
    await asyncio.wait_for(gate.entered.wait(), 10)
    status, body, _ = await client.raw("POST", "/test/gate", json={}, headers=keyed(key))
    assert_envelope(status, body, 409, IN_USE, "idempotency_key_in_use")
    gate.opened.set()
    status, body, _ = await first
    assert status == 200 and json.loads(body) == {"calls": 1}
    status, again, headers = await client.raw("POST", "/test/gate", json={}, headers=keyed(key))
    assert (status, again, headers["Idempotent-Replayed"]) == (200, body, "true")
    assert gate.calls == 1


async def test_a_request_whose_client_hung_up_still_finishes_and_is_replayed(gated, db):
    client, gate, _ = gated
    key = new_idempotency_key()
    first = asyncio.create_task(client.raw("POST", "/test/gate", json={}, headers=keyed(key)))
    await asyncio.wait_for(gate.entered.wait(), 10)
    first.cancel()   # the client gives up: the connection closes and the server cancels the handler
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.opened.set()

    async def stored():
        return await db.fetchval("SELECT status FROM idempotency_keys WHERE key = $1", key)
    assert await eventually(stored) == 200
    status, body, headers = await client.raw("POST", "/test/gate", json={}, headers=keyed(key))
    assert (status, json.loads(body), headers["Idempotent-Replayed"]) == (200, {"calls": 1}, "true")
    assert gate.calls == 1


async def test_a_server_error_releases_the_key_so_a_retry_runs_again(gated):
    client, _, flaky = gated
    key = new_idempotency_key()
    status, _, _ = await client.raw("POST", "/test/flaky", json={}, headers=keyed(key))
    assert status == 500
    status, body, headers = await client.raw("POST", "/test/flaky", json={}, headers=keyed(key))
    assert status == 200 and json.loads(body) == {"calls": 2} and "Idempotent-Replayed" not in headers
    status, again, headers = await client.raw("POST", "/test/flaky", json={}, headers=keyed(key))
    assert (status, again, headers["Idempotent-Replayed"]) == (200, body, "true")
    assert flaky.calls == 2


# --- expiry and abandoned claims -----------------------------------------------------------------


async def test_a_claim_left_by_a_crash_is_a_409_until_it_is_abandoned(client, project, db):
    name, _ = project
    key = new_idempotency_key()
    await db.execute("INSERT INTO idempotency_keys (project, key, request_hash) VALUES ($1, $2, $3)",
                     name, key, b"whatever the crashed request was")
    status, body, _ = await client.raw("POST", "/threads", json={}, headers=keyed(key))
    assert status == 400   # a different request than the claimed one
    await db.execute("UPDATE idempotency_keys SET created_at = now() - $3::interval WHERE project = $1 AND key = $2",
                     name, key, idempotency.ABANDONED_AFTER + idempotency.ABANDONED_AFTER / 10)
    thread = await client.ok("POST", "/threads", {}, headers=keyed(key))
    assert await thread_ids(client) == [thread["id"]]
    assert await client.ok("POST", "/threads", {}, headers=keyed(key)) == thread


async def test_a_crashed_claim_of_the_same_request_is_a_409(client, project, db):
    name, _ = project
    key = new_idempotency_key()
    await client.ok("POST", "/threads", {}, headers=keyed(key))
    # As if the process died after the handler committed: the response was never stored.
    await db.execute("UPDATE idempotency_keys SET status = NULL, body = NULL WHERE project = $1 AND key = $2",
                     name, key)
    status, body, _ = await client.raw("POST", "/threads", json={}, headers=keyed(key))
    assert_envelope(status, body, 409, IN_USE, "idempotency_key_in_use")


async def test_keys_expire_after_a_day(client, project, db):
    name, _ = project
    key = new_idempotency_key()
    old = await client.ok("POST", "/threads", {}, headers=keyed(key))
    await db.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' "
                     "WHERE project = $1 AND key = $2", name, key)
    new = await client.ok("POST", "/threads", {}, headers=keyed(key))
    assert new["id"] != old["id"]
    assert await client.ok("POST", "/threads", {}, headers=keyed(key)) == new


async def test_the_sweep_deletes_expired_keys(client, project, db, monkeypatch):
    name, _ = project
    expired = new_idempotency_key()
    await db.execute("INSERT INTO idempotency_keys (project, key, request_hash, created_at) "
                     "VALUES ($1, $2, '', now() - interval '25 hours')", name, expired)
    monkeypatch.setattr(idempotency, "_next_sweep", 0.0)
    await client.ok("POST", "/threads", {}, headers=keyed(new_idempotency_key()))
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = $1", expired) == 0


# --- documentation -------------------------------------------------------------------------------


async def test_openapi_names_the_header_on_every_post(app_client):
    spec = await (await app_client.get("/openapi.json")).json()
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            names = [p["name"] for p in op["parameters"] if p["in"] == "header"]
            assert names == (["Idempotency-Key"] if method == "post" else []), (method, path)
