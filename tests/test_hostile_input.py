"""Hostile input on every route of the route table (so a new route is covered as it is added): each
gets a clear 4xx in the error envelope and stores nothing, checked in the tables themselves (events,
read models, webhooks, blob chunks). tests/test_api_errors.py holds the per-endpoint validation
messages; this file holds the breadth and the "nothing stored" half."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import msgspec
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from conftest import Client, new_key, test_config as make_config
from footprint import footprint
from service.api.routes import ROUTES
from service.app import create_app

KiB, MiB = 1 << 10, 1 << 20
MAX_BODY = 256 * KiB
MAX_FILE = 2 * MiB


def _route_id(route) -> str:
    return f"{route.method} {route.path}"


@pytest.fixture(scope="module")
async def world(own_database):
    url, pool = own_database
    config = make_config(max_body_bytes=MAX_BODY, max_file_bytes=MAX_FILE, webhook_allow_http=True,
                         webhook_allow_networks="127.0.0.0/8")
    http = TestClient(TestServer(create_app(config, url)))
    await http.start_server()
    project = f"hostile-{uuid.uuid4().hex[:8]}"
    c = Client(http, await new_key(pool, project))
    asst = (await c.ok("POST", "/assistants", {"model": "builtin/echo"}))["id"]
    thread = (await c.ok("POST", "/threads", {"messages": [{"role": "user", "content": "hi"}]}))["id"]
    msg = (await c.ok("POST", f"/threads/{thread}/messages", {"role": "user", "content": "more"}))["id"]
    run = (await c.ok("POST", f"/threads/{thread}/runs", {"assistant_id": asst}))["id"]
    deadline = time.monotonic() + 20
    while (r := await c.ok("GET", f"/threads/{thread}/runs/{run}"))["status"] != "completed":
        assert time.monotonic() < deadline and r["status"] in ("queued", "in_progress"), r
        await asyncio.sleep(0.05)
    step = (await c.ok("GET", f"/threads/{thread}/runs/{run}/steps"))["data"][0]["id"]
    file = (await c.upload(b"abc"))["id"]
    upload = (await c.ok("POST", "/uploads", {"filename": "u.bin", "purpose": "assistants", "bytes": 3,
                                               "mime_type": "application/octet-stream"}))["id"]
    # Subscribed to an event nothing here causes: deliveries made in the background would change the footprint.
    hook = (await c.ok("POST", "/webhooks", {"url": "http://127.0.0.1:9/h", "events": ["thread.run.expired"]}))["id"]
    ids = {"assistant_id": asst, "thread_id": thread, "message_id": msg, "run_id": run, "step_id": step,
           "file_id": file, "upload_id": upload, "webhook_id": hook, "delivery_id": "whd_none"}
    yield c, pool, project, ids
    await http.close()


def error_of(status: int, raw: bytes, headers, expected: int) -> dict:
    assert status == expected, (status, raw[:300])
    assert headers["Content-Type"].startswith("application/json"), headers
    body = json.loads(raw)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"], body
    return body["error"]


def path_of(route, ids) -> str:
    return route.path.format(**ids)


# --- bodies ---------------------------------------------------------------------------------------

def _deep(depth: int) -> bytes:
    return b'{"metadata":{"k":"v"},"zz":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"


HOSTILE_BODIES = {
    # name: (body bytes, content type, expected status)
    "deep arrays": (b'{"zz":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json", 400),
    "deep objects": (_deep(30_000), "application/json", 400),
    "invalid utf-8": (b'{"metadata":{"k":"\xff\xfe\xfd"}}', "application/json", 400),
    "overlong utf-8": (b'{"metadata":{"k":"\xc0\xaf"}}', "application/json", 400),
    "lone surrogate": (b'{"metadata":{"k":"\\udc00"}}', "application/json", 400),
    "utf-16": ('{"metadata":{"k":"v"}}'.encode("utf-16"), "application/json", 400),
    "huge metadata": (json.dumps({"metadata": {f"k{i}": "v" * 8 for i in range(10_000)}}).encode(),
                      "application/json", 400),
    "huge metadata value": (json.dumps({"metadata": {"k": "v" * 200_000}}).encode(), "application/json", 400),
    "unknown field": (b'{"__proto__":{"admin":true}}', "application/json", 400),
    "huge number": (b'{"metadata":{"k":"v"},"zz":1' + b"0" * 100_000 + b"}", "application/json", 400),
    "array": (b"[" + b"{}," * 1000 + b"{}]", "application/json", 400),
    "truncated": (b'{"metadata":{"k":"v"', "application/json", 400),
    "trailing garbage": (b'{"metadata":{"k":"v"}}\x00\x00', "application/json", 400),
    "xml": (b"<metadata><k>v</k></metadata>", "application/xml", 415),
    "form": (b"metadata[k]=v", "application/x-www-form-urlencoded", 415),
    "multipart": (b"--B\r\n\r\n--B--\r\n", "multipart/form-data; boundary=B", 415),
    "oversized": (b'{"metadata":{"k":"' + b"x" * (MAX_BODY + 1) + b'"}}', "application/json", 413),
}
BODY_ROUTES = [r for r in ROUTES if r.body is not None]


@pytest.mark.parametrize("case", list(HOSTILE_BODIES))
@pytest.mark.parametrize("route", BODY_ROUTES, ids=_route_id)
async def test_hostile_bodies_are_refused_and_store_nothing(world, route, case):
    c, db, project, ids = world
    data, ctype, expected = HOSTILE_BODIES[case]
    before = await footprint(db, project)
    status, raw, headers = await c.raw(route.method, path_of(route, ids), data=data,
                                       headers={"Content-Type": ctype})
    err = error_of(status, raw, headers, expected)
    assert len(raw) < 4096, "the error must not echo the body back"
    if expected == 413:
        assert err["code"] == "request_too_large", err
    assert await footprint(db, project) == before


async def test_the_same_bodies_made_valid_are_accepted(world):
    """The hostile cases are refused for what they are, not for where they are sent: a plain body
    with metadata goes through on each route that takes metadata."""
    c, db, project, ids = world
    for route in BODY_ROUTES:
        if "metadata" not in route.body.__struct_fields__ or any(f.required for f in msgspec.structs.fields(route.body)):
            continue
        status, raw, _ = await c.raw(route.method, path_of(route, ids), data=b'{"metadata":{"k":"v"}}',
                                     headers={"Content-Type": "application/json"})
        assert status == 200, (_route_id(route), raw)


# --- uploads --------------------------------------------------------------------------------------

def _part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--B\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


BIG = b"q" * (MiB + MiB // 2)     # past the first 1 MiB chunk, so rows were written before the refusal
HOSTILE_UPLOADS = {
    "a second file": (_part("purpose", b"assistants") + _part("file", BIG, "a.bin") + _part("file", b"x", "b.bin")
                      + b"--B--\r\n", 400),
    "no purpose after a big file": (_part("file", BIG, "a.bin") + b"--B--\r\n", 400),
    "bad purpose after a big file": (_part("file", BIG, "a.bin") + _part("purpose", b"assistants\xff")
                                     + b"--B--\r\n", 400),
    "cut off inside the file": (_part("purpose", b"assistants") + _part("file", BIG, "a.bin")[:-100], 400),
    "an unknown part after a big file": (_part("purpose", b"assistants") + _part("file", BIG, "a.bin")
                                         + _part("evil", b"1") + b"--B--\r\n", 400),
    "over the file limit": (_part("purpose", b"assistants") + _part("file", b"z" * (MAX_FILE + 1), "big.bin")
                            + b"--B--\r\n", 413),
}


@pytest.mark.parametrize("case", list(HOSTILE_UPLOADS))
async def test_hostile_uploads_are_refused_and_store_nothing(world, case):
    c, db, project, _ = world
    data, expected = HOSTILE_UPLOADS[case]
    before = await footprint(db, project)
    status, raw, headers = await c.raw("POST", "/files", data=data,
                                       headers={"Content-Type": "multipart/form-data; boundary=B"})
    error_of(status, raw, headers, expected)
    assert await footprint(db, project) == before
    assert before["orphan_blob_chunks"] == 0


async def test_an_upload_is_stored_whole_or_not_at_all(world):
    """The control for the cases above: the same big part, well formed, is stored with its chunks."""
    c, db, project, _ = world
    before = await footprint(db, project)
    form = FormData()
    form.add_field("purpose", "assistants")
    form.add_field("file", BIG, filename="a.bin")
    f = await c.ok("POST", "/files", data=form)
    after = await footprint(db, project)
    assert f["bytes"] == len(BIG) and after["blob_chunks"] == before["blob_chunks"] + 2
    await c.ok("DELETE", f"/files/{f['id']}")


# --- query parameters -----------------------------------------------------------------------------

BAD_LIMITS = ["-1", "0", "one past the most", "1e2", "0x10", "1_0", "٣", "²", " 5", "5 ", "5\n", "+5", "1.0",
              "18446744073709551617", "abc", ""]
BAD_CURSORS = ["a b", "x" * 129, "../../etc/passwd", "a\n", "'; DROP TABLE threads;--", "ä", "a%00b", "{}",
               "a,b", "\u202eabc"]
BAD_VERSIONS = ["-1", "1.0", "0.1", "1.2.3", "1.", ".1", "1.-1", "abc", "2147483648", "99999999999", "١٢", "²", "1 ", " 1", "0x1", "1e3", ""]


def _queries(route) -> list[tuple[str, str]]:
    """(name, forged value) pairs for each parameter the route reads."""
    cases = []
    if "limit" in route.query:
        # One past the most a page holds: 1000 events, 10,000 files (as OpenAI's files.list), else 100.
        most = "1001" if route.versioned else "10001" if route.path == "/files" else "101"
        cases += [("limit", most if v == "one past the most" else v) for v in BAD_LIMITS]
    for name in ("after", "before"):
        if name in route.query:
            cases += [(name, v) for v in (BAD_VERSIONS if route.versioned and name == "after" else BAD_CURSORS)]
    if "as_of" in route.query:
        cases += [("as_of", v) for v in ("-1", "٣", "2024-13-45", "9" * 50, "yesterday", "")]
    if "include[]" in route.query:
        cases += [("include[]", v) for v in ("everything", "step_details.tool_calls[*].secret")]
    if "order" in route.query:
        cases += [("order", v) for v in ("DESC", "random()", "")]
    if "status" in route.query:
        cases += [("status", v) for v in ("failed", "pending;")]
    return cases


QUERY_ROUTES = [r for r in ROUTES if _queries(r)]


@pytest.mark.parametrize("route", QUERY_ROUTES, ids=_route_id)
async def test_forged_query_parameters_are_400(world, route):
    c, db, project, ids = world
    before = await footprint(db, project)
    for name, value in _queries(route):
        if value == "" and name in ("after", "before", "order", "status") and not route.versioned:
            continue        # an empty value is the parameter left out
        body = {"assistant_id": ids["assistant_id"]} if route.body is not None else None
        status, raw, headers = await c.raw(route.method, path_of(route, ids), params={name: value}, json=body)
        err = error_of(status, raw, headers, 400)
        assert err["param"] == name, (name, value, err)
    assert await footprint(db, project) == before


@pytest.mark.parametrize("route", [r for r in ROUTES if r.sse], ids=_route_id)
async def test_forged_last_event_ids_are_400(world, route):
    c, _, _, ids = world
    for value in BAD_VERSIONS:
        if value.strip() != value or not value:
            continue    # HTTP drops the blanks around a header value, and a blank header is no header
        status, raw, headers = await c.raw("GET", path_of(route, ids), headers={"Last-Event-ID": value})
        assert error_of(status, raw, headers, 400)["param"] == "after", value


async def test_the_largest_versions_are_fine(world):
    """The bounds themselves are valid: the end of a stream, not an error."""
    c, _, _, ids = world
    t = ids["thread_id"]
    page = await c.ok("GET", f"/threads/{t}/events", params={"after": "2147483647", "limit": "1000"})
    assert page["data"] == [] and page["has_more"] is False
    assert (await c.ok("GET", f"/threads/{t}", params={"as_of": "999999999999"}))["id"] == t
    assert (await c.ok("GET", "/threads", params={"limit": "100", "after": "z" * 128}))["object"] == "list"


@pytest.mark.parametrize("header", ["x-request-id", "Authorization", "api-key"])
async def test_a_header_that_is_not_utf8_is_a_logged_400(app_client, project, header, capsys):
    """A key guess or request id in bytes that are not UTF-8 gets a 400 and a log line, never a 500."""
    value = b"Bearer tl-\xff\xfe\xfd" if header == "Authorization" else b"\xff\xfe\xfd-guess"
    key = f"Authorization: Bearer {project[1]}\r\n".encode() if header != "Authorization" else b""
    reader, writer = await asyncio.open_connection("127.0.0.1", app_client.server.port)
    writer.write(b"GET /v1/assistants HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + key +
                 header.encode() + b": " + value + b"\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:300]
    error = json.loads(body)["error"]
    assert error["param"] == header and "UTF-8" in error["message"]
    logged = capsys.readouterr()
    line = next(ln for ln in (logged.out + logged.err).splitlines() if "header_not_utf8" in ln)
    assert header in line and "\udcff" not in line and "\xff" not in line
