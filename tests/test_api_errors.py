"""Every error class over real HTTP: status, and the envelope {"error":{"message","type","param","code"}}
with all four keys (wire-api §0 rule 2, §3.10, §6.4, §6.5). No request may ever get a 500."""

from __future__ import annotations

import json as jsonlib
import uuid

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

import conftest
from conftest import Client, new_key
from service.app import create_app
from service.auth import digest

MiB = 1 << 20
PREFIXES = ["", "/v1", "/openai", "/api/projects/{project}"]


# --- helpers -------------------------------------------------------------------------------------



def envelope(status, body, expected_status, *, message=None, contains=None, param="any", code=None,
             type_="invalid_request_error"):
    """Assert the error envelope; returns the error object."""
    assert status == expected_status, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert err["type"] == type_, err
    assert err["code"] == code, err
    assert err["param"] is None or isinstance(err["param"], str), err
    if param != "any":
        assert err["param"] == param, err
    if message is not None:
        assert err["message"] == message, err
    if contains is not None:
        assert contains in err["message"], err
    return err


async def expect(c: Client, method, path, json=None, status=400, **kw):
    envelope_kw = {k: kw.pop(k) for k in ("message", "contains", "param", "code", "type_") if k in kw}
    s, body = await c.call(method, path, json, **kw)
    return envelope(s, body, status, **envelope_kw)


def raw_json(c: Client, method, path, data: bytes, content_type="application/json"):
    return c.call(method, path, data=data, headers={"Content-Type": content_type})


@pytest.fixture
async def objs(client):
    """One of each object, so paths with ids resolve."""
    asst = (await client.ok("POST", "/assistants", {"model": "m"}))["id"]
    thread = (await client.ok("POST", "/threads"))["id"]
    msg = (await client.ok("POST", f"/threads/{thread}/messages", {"role": "user", "content": "hi"}))["id"]
    file = (await client.upload(b"abc"))["id"]
    return {"asst": asst, "thread": thread, "msg": msg, "file": file}


async def small_app(database_url, **config):
    client = TestClient(TestServer(create_app(conftest.test_config(**config), database_url)))
    await client.start_server()
    return client


# Every endpoint that takes a JSON body: (method, path, minimal valid body)
BODY_ENDPOINTS = [
    ("POST", "/assistants", {"model": "m"}),
    ("POST", "/assistants/{asst}", {}),
    ("POST", "/threads", {}),
    ("POST", "/threads/{thread}", {}),
    ("POST", "/threads/{thread}/messages", {"role": "user", "content": "hi"}),
    ("POST", "/threads/{thread}/messages/{msg}", {}),
]
BODY_IDS = [f"{m} {p}" for m, p, _ in BODY_ENDPOINTS]
METADATA_ENDPOINTS = BODY_ENDPOINTS   # every body takes metadata

LIST_ENDPOINTS = ["/assistants", "/threads", "/threads/{thread}/messages", "/files"]


# --- validation of limits (wire-api §6.4) -----------------------------------------------------------

@pytest.mark.parametrize("method,path,base", METADATA_ENDPOINTS, ids=BODY_IDS)
async def test_metadata_limits(client, objs, method, path, base):
    path = path.format(**objs)
    await expect(client, method, path, {**base, "metadata": {f"k{i}": "v" for i in range(17)}},
                 param="metadata", contains="16")
    await expect(client, method, path, {**base, "metadata": {"k" * 65: "v"}}, contains="64")
    await expect(client, method, path, {**base, "metadata": {"k": "v" * 513}}, contains="512")
    await expect(client, method, path, {**base, "metadata": {"k": 1}}, contains="str")
    await expect(client, method, path, {**base, "metadata": {"k": None}})
    await expect(client, method, path, {**base, "metadata": ["k", "v"]}, param="metadata")
    await expect(client, method, path, {**base, "metadata": "k=v"}, param="metadata")
    # the limits themselves are allowed
    at_limit = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    assert len(next(iter(at_limit))) == 64
    body = await client.ok(method, path, {**base, "metadata": at_limit})
    assert body["metadata"] == at_limit


async def test_metadata_limits_in_thread_messages(client):
    await expect(client, "POST", "/threads",
                 {"messages": [{"role": "user", "content": "x", "metadata": {f"k{i}": "v" for i in range(17)}}]},
                 param="messages[0].metadata")


@pytest.mark.parametrize("method,path", [("POST", "/assistants"), ("POST", "/assistants/{asst}")])
@pytest.mark.parametrize("field,limit", [("name", 256), ("description", 512), ("instructions", 256_000)])
async def test_assistant_text_limits(client, objs, method, path, field, limit):
    path = path.format(**objs)
    base = {"model": "m"} if path == "/assistants" else {}
    await expect(client, method, path, {**base, field: "x" * (limit + 1)}, param=field, contains=str(limit))
    assert (await client.ok(method, path, {**base, field: "x" * limit}))[field] == "x" * limit
    await expect(client, method, path, {**base, field: 5}, param=field)


@pytest.mark.parametrize("method,path", [("POST", "/assistants"), ("POST", "/assistants/{asst}")])
async def test_assistant_tool_count_limit(client, objs, method, path):
    path = path.format(**objs)
    base = {"model": "m"} if path == "/assistants" else {}
    await expect(client, method, path, {**base, "tools": [{"type": "code_interpreter"}] * 129}, param="tools",
                 contains="128")
    ok = await client.ok(method, path, {**base, "tools": [{"type": "function", "function": {"name": "f"}}] * 128})
    assert len(ok["tools"]) == 128


@pytest.mark.parametrize("path", LIST_ENDPOINTS)
async def test_list_parameter_validation(client, objs, path):
    path = path.format(**objs)
    too_many = "10001" if path == "/files" else "101"     # files.list pages up to 10,000, as OpenAI's does
    for bad in ("0", too_many, "-1", "abc", "1.5", "", "1e2", "9" * 5000, "99999999999999999999"):
        await expect(client, "GET", path, params={"limit": bad}, param="limit")
    for bad in ("up", "ascending", "ASC ", "random"):
        await expect(client, "GET", path, params={"order": bad}, param="order")
    for name in ("after", "before"):
        for forged in ("bad id!", "x" * 129, "a' OR '1'='1", "../../etc", "ä", "a b", "a%00", "a;b", "a\x00b"):
            await expect(client, "GET", path, params={name: forged}, param=name)
    for good in ("1", "100", "20"):
        assert (await client.ok("GET", path, params={"limit": good}))["object"] == "list"
    assert (await client.ok("GET", path, params={"after": "x" * 128, "before": "a-b_c"}))["object"] == "list"


# --- wrong types, unknown fields, required fields ---------------------------------------------------

WRONG_TYPES = [
    ("POST", "/assistants", {"model": 123}, "model"),
    ("POST", "/assistants", {"model": None}, "model"),
    ("POST", "/assistants", {"model": ""}, "model"),
    ("POST", "/assistants", {"model": "m", "tools": {"type": "file_search"}}, "tools"),
    ("POST", "/assistants", {"model": "m", "tools": ["file_search"]}, None),
    ("POST", "/assistants", {"model": "m", "tools": [{"type": "function"}]}, "tools[0].function.name"),
    ("POST", "/assistants", {"model": "m", "tools": [{"type": "function", "function": {"name": "bad name"}}]},
     "tools[0].function.name"),
    ("POST", "/assistants",
     {"model": "m", "tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
     "tools[0].function.parameters"),
    ("POST", "/assistants", {"model": "m", "tools": [{"no": "type"}]}, "tools[0].type"),
    ("POST", "/assistants", {"model": "m", "temperature": "hot"}, "temperature"),
    ("POST", "/assistants", {"model": "m", "temperature": 2.5}, "temperature"),
    ("POST", "/assistants", {"model": "m", "temperature": -0.1}, "temperature"),
    ("POST", "/assistants", {"model": "m", "top_p": 1.5}, "top_p"),
    ("POST", "/assistants", {"model": "m", "tool_resources": []}, "tool_resources"),
    ("POST", "/assistants", {"model": "m", "response_format": "xml"}, "response_format"),
    ("POST", "/assistants", {"model": "m", "response_format": {"type": "yaml"}}, "response_format"),
    ("POST", "/assistants", {"model": "m", "response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ("POST", "/assistants/{asst}", {"model": None}, "model"),
    ("POST", "/assistants/{asst}", {"tools": None}, "tools"),
    ("POST", "/assistants/{asst}", {"temperature": 3}, "temperature"),
    ("POST", "/assistants/{asst}", {"tools": [{"type": 5}]}, "tools[0].type"),
    ("POST", "/threads", {"messages": "hi"}, "messages"),
    ("POST", "/threads", {"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ("POST", "/threads", {"messages": [{"content": "x"}]}, None),
    ("POST", "/threads", {"messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]},
     "messages[0].content[0].type"),
    ("POST", "/threads", {"tool_resources": "none"}, "tool_resources"),
    ("POST", "/threads/{thread}", {"metadata": 5}, "metadata"),
    ("POST", "/threads/{thread}/messages", {"role": "user", "content": 5}, "content"),
    ("POST", "/threads/{thread}/messages", {"role": "user", "content": []}, "content"),
    ("POST", "/threads/{thread}/messages", {"role": "user", "content": None}, "content"),
    ("POST", "/threads/{thread}/messages", {"role": "tool", "content": "x"}, "role"),
    ("POST", "/threads/{thread}/messages", {"content": "x"}, None),
    ("POST", "/threads/{thread}/messages", {"role": "user"}, None),
    ("POST", "/threads/{thread}/messages", {"role": "user", "content": [{"type": "text"}]}, None),
    ("POST", "/threads/{thread}/messages", {"role": "user", "content": [{"type": "text", "text": {"value": "x"}}]},
     "content[0].text"),
    ("POST", "/threads/{thread}/messages",
     {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "ultra"}}]},
     "content[0].image_url.detail"),
    ("POST", "/threads/{thread}/messages", {"role": "user", "content": "x", "attachments": [{"tools": []}]}, None),
    ("POST", "/threads/{thread}/messages", {"role": "user", "content": "x", "attachments": {"file_id": "f"}},
     "attachments"),
    ("POST", "/threads/{thread}/messages/{msg}", {"metadata": "x"}, "metadata"),
]


@pytest.mark.parametrize("method,path,body,param", WRONG_TYPES, ids=[f"{m} {p} {jsonlib.dumps(b)[:40]}"
                                                                     for m, p, b, _ in WRONG_TYPES])
async def test_wrong_types_and_values_are_400(client, objs, method, path, body, param):
    await expect(client, method, path.format(**objs), body, param=param if param else "any")


@pytest.mark.parametrize("method,path,base", BODY_ENDPOINTS, ids=BODY_IDS)
async def test_unknown_fields_are_refused(client, objs, method, path, base):
    path = path.format(**objs)
    for field in ("bogus", "stream", "assistant_id", "Model"):
        if field in base:
            continue
        await expect(client, method, path, {**base, field: 1},
                     message=f"Unrecognized request argument supplied: {field}", param=field)


async def test_unknown_nested_fields_are_refused(client, objs):
    await expect(client, "POST", "/threads",
                 {"messages": [{"role": "user", "content": "x", "colour": "red"}]},
                 message="Unrecognized request argument supplied: messages[0].colour", param="messages[0].colour")
    await expect(client, "POST", f"/threads/{objs['thread']}/messages",
                 {"role": "user", "content": [{"type": "text", "text": "x", "foo": 1}]},
                 message="Unrecognized request argument supplied: content[0].foo", param="content[0].foo")


@pytest.mark.parametrize("method,path,base", BODY_ENDPOINTS, ids=BODY_IDS)
async def test_body_must_be_an_object(client, objs, method, path, base):
    path = path.format(**objs)
    for doc in (b"[]", b"null", b'"text"', b"42", b"true"):
        await expect(client, method, path, data=doc, headers={"Content-Type": "application/json"})


async def test_required_fields(client, objs):
    await expect(client, "POST", "/assistants", {}, contains="model")
    await expect(client, "POST", "/assistants", None, contains="model")     # an empty body is {}
    await expect(client, "POST", f"/threads/{objs['thread']}/messages", {}, contains="role")


# --- malformed bodies -------------------------------------------------------------------------------

MALFORMED = [b'{"model":', b'{"model":"m"} x', b"{'model':'m'}", b'{"model":"m",}', b'{"model":"m"}}',
             b'{"model":"m","temperature":NaN}', b'{"model":"m","temperature":Infinity}', b'{model:"m"}',
             b'\xef\xbb\xbf{"model":"m"}', b'{"model":"\\x41"}', b'{"model":"\\ud800"}', b"\x00",
             b'{"model":"m","tools":[{"type":"x","a":' + b'[' * 100_000 + b']' * 100_000 + b'}]}']
INVALID_UTF8 = [b'{"model":"\xff"}', b'{"model":"\xc3\x28"}', b'{"model":"\xed\xa0\x80"}', b'{"\xfe":"m"}',
                b'{"model":"m","metadata":{"k":"\xc0\xaf"}}']


@pytest.mark.parametrize("data", MALFORMED + INVALID_UTF8, ids=[repr(d[:24]) for d in MALFORMED + INVALID_UTF8])
async def test_malformed_json_and_invalid_utf8_are_400(client, data):
    err = await expect(client, "POST", "/assistants", data=data, headers={"Content-Type": "application/json"})
    assert "JSON" in err["message"] or "Invalid" in err["message"], err
    assert (await client.ok("GET", "/assistants"))["data"] == []


@pytest.mark.parametrize("method,path,base", BODY_ENDPOINTS, ids=BODY_IDS)
async def test_malformed_json_on_every_body_endpoint(client, objs, method, path, base):
    await expect(client, method, path.format(**objs), data=b'{"metadata": {',
                 headers={"Content-Type": "application/json"},
                 message="We could not parse the JSON body of your request. The API expects a JSON payload, "
                         "but what was sent was not valid JSON.")


async def test_nul_characters_are_refused_not_a_500(client, objs):
    """Postgres cannot store U+0000: a \\u0000 anywhere in a body is a 400, never a 500."""
    t = objs["thread"]
    cases = [("POST", "/assistants", b'{"model":"m","name":"a\\u0000b"}'),
             ("POST", "/assistants", b'{"model":"m","metadata":{"k\\u0000":"v"}}'),
             ("POST", "/assistants", b'{"model":"m","tools":[{"type":"x","x":{"deep":["\\u0000"]}}]}'),
             ("POST", f"/assistants/{objs['asst']}", b'{"instructions":"\\\\\\u0000"}'),
             ("POST", "/threads", b'{"messages":[{"role":"user","content":"\\u0000"}]}'),
             ("POST", f"/threads/{t}", b'{"tool_resources":{"\\u0000":{}}}'),
             ("POST", f"/threads/{t}/messages", b'{"role":"user","content":"a\\u0000"}'),
             ("POST", f"/threads/{t}/messages/{objs['msg']}", b'{"metadata":{"a":"\\u0000"}}')]
    for method, path, data in cases:
        await expect(client, method, path, data=data, headers={"Content-Type": "application/json"}, contains="NUL")
    # an escaped backslash followed by the text u0000 is not a NUL
    a = await client.ok("POST", "/assistants", data=b'{"model":"m","name":"a\\\\u0000b"}',
                        headers={"Content-Type": "application/json"})
    assert a["name"] == "a\\u0000b"
    assert (await client.ok("GET", f"/assistants/{a['id']}"))["name"] == "a\\u0000b"


async def test_nul_in_url_is_not_a_500(client, objs):
    for method, path in (("GET", "/threads/a%00b"), ("POST", "/threads/a%00b"), ("DELETE", "/threads/a%00b"),
                         ("GET", "/assistants/%00"), ("DELETE", "/assistants/%00"), ("POST", "/assistants/%00"),
                         ("GET", "/files/%00"), ("DELETE", "/files/%00"), ("GET", "/files/%00/content"),
                         ("GET", "/threads/%00/messages"), ("POST", "/threads/%00/messages"),
                         ("GET", f"/threads/{objs['thread']}/messages/%00"),
                         ("POST", f"/threads/{objs['thread']}/messages/%00"),
                         ("DELETE", f"/threads/{objs['thread']}/messages/%00")):
        body = {} if method == "POST" else None
        status, raw, headers = await client.raw(method, path, json=body)
        envelope(status, jsonlib.loads(raw), 404)
    for params in ({"purpose": "a\x00"}, {"run_id": "run_\x00"}, {"api-version": "\x00"}):
        path = f"/threads/{objs['thread']}/messages" if "run_id" in params else "/files"
        await expect(client, "GET", path, params=params, param=next(iter(params)))


# --- body size (413) and content type (415) --------------------------------------------------------

async def test_body_over_the_limit_is_413(database_url, db):
    http = await small_app(database_url, max_body_bytes=1024)
    try:
        c = Client(http, await new_key(db))
        thread = (await c.ok("POST", "/threads", {"metadata": {"k": "v"}}))["id"]
        big = "x" * 2000
        for method, path, body in (("POST", "/assistants", {"model": "m", "instructions": big}),
                                   ("POST", "/threads", {"messages": [{"role": "user", "content": big}]}),
                                   ("POST", f"/threads/{thread}", {"metadata": {"k": big[:500], "l": big[:500]}}),
                                   ("POST", f"/threads/{thread}/messages", {"role": "user", "content": big})):
            await expect(c, method, path, body, status=413, code="request_too_large")
        assert (await c.ok("GET", "/assistants"))["data"] == []
        assert [t["id"] for t in (await c.ok("GET", "/threads"))["data"]] == [thread]
        assert (await c.ok("GET", f"/threads/{thread}"))["metadata"] == {"k": "v"}
        assert (await c.ok("GET", f"/threads/{thread}/messages"))["data"] == []
        # just under the limit is fine, and file uploads are bounded by the file limit instead
        fits = await c.ok("POST", "/assistants", {"model": "m", "instructions": "y" * 900})
        assert fits["instructions"] == "y" * 900
        f = await c.upload(b"z" * 5000)
        assert f["bytes"] == 5000
    finally:
        await http.close()


async def test_upload_over_the_file_limit_is_413_and_leaves_nothing(database_url, db):
    limit = 2 * MiB + MiB // 2      # ~1 MiB chunks are already written when the limit is crossed
    http = await small_app(database_url, max_body_bytes=1024, max_file_bytes=limit)
    try:
        name = f"proj-{uuid.uuid4().hex[:10]}"
        c = Client(http, await new_key(db, name))
        chunks_before = await db.fetchval("SELECT count(*) FROM blob_chunks")
        for size in (3 * MiB, limit + 1):
            form = FormData()
            form.add_field("purpose", "assistants")
            form.add_field("file", b"q" * size, filename="too-big.bin")
            await expect(c, "POST", "/files", data=form, status=413, param="file", contains=str(limit))
        assert await db.fetchval("SELECT count(*) FROM blob_chunks") == chunks_before
        assert await db.fetchval("SELECT count(*) FROM files WHERE project = $1", name) == 0
        assert await db.fetchval("SELECT count(*) FROM events WHERE metadata->>'project' = $1", name) == 0
        assert (await c.ok("GET", "/files"))["data"] == []
        # exactly at the limit is accepted, on the same connection pool
        ok = await c.upload(b"r" * limit, "fits.bin")
        assert ok["bytes"] == limit
        assert await db.fetchval("SELECT count(*) FROM blob_chunks WHERE blob_id = $1", ok["id"]) >= 2
        assert (await c.raw("GET", f"/files/{ok['id']}/content"))[1] == b"r" * limit
    finally:
        await http.close()


@pytest.mark.parametrize("method,path,base", BODY_ENDPOINTS, ids=BODY_IDS)
async def test_wrong_content_type_is_415(client, objs, method, path, base):
    path = path.format(**objs)
    for ctype in ("application/xml", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
                  "image/png"):
        await expect(client, method, path, data=jsonlib.dumps(base).encode(), headers={"Content-Type": ctype},
                     status=415, contains="content type")
    # JSON-ish types are accepted
    for ctype in ("application/json", "application/json; charset=utf-8", "text/plain", "application/merge-patch+json"):
        await client.ok(method, path, data=jsonlib.dumps(base).encode(), headers={"Content-Type": ctype})


async def test_upload_with_wrong_content_type_is_415(client):
    for data, ctype in ((b'{"purpose":"assistants"}', "application/json"), (b"purpose=assistants",
                        "application/x-www-form-urlencoded"), (b"hello", "text/plain"), (b"hello", None)):
        headers = {"Content-Type": ctype} if ctype else {}
        await expect(client, "POST", "/files", data=data, headers=headers, status=415, contains="multipart/form-data")
    assert (await client.ok("GET", "/files"))["data"] == []


def multipart(*parts: bytes, boundary=b"B", close=True) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return body + (b"--" + boundary + b"--\r\n" if close else b"")


PURPOSE = b'Content-Disposition: form-data; name="purpose"\r\n\r\nassistants'
FILE = b'Content-Disposition: form-data; name="file"; filename="x.txt"\r\n\r\nhello'
BAD_UPLOADS = {
    "missing-file": (multipart(PURPOSE), "file"),
    "missing-purpose": (multipart(FILE), "purpose"),
    "bad-purpose": (multipart(b'Content-Disposition: form-data; name="purpose"\r\n\r\nwhatever', FILE), "purpose"),
    "unknown-part": (multipart(PURPOSE, FILE, b'Content-Disposition: form-data; name="extra"\r\n\r\nx'), "extra"),
    "truncated": (multipart(PURPOSE, FILE, close=False)[:-4], None),
    "no-closing-boundary": (multipart(PURPOSE, FILE, close=False), None),
    "garbage": (b"this is not multipart at all", None),
    "empty": (b"", None),
    "nested-multipart": (multipart(PURPOSE, b'Content-Disposition: form-data; name="file"; filename="x"\r\n'
                                            b'Content-Type: multipart/mixed; boundary=C\r\n\r\n--C\r\n\r\nhi\r\n--C--'),
                         None),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
async def test_bad_multipart_uploads_are_400(client, case):
    data, param = BAD_UPLOADS[case]
    await expect(client, "POST", "/files", data=data, headers={"Content-Type": "multipart/form-data; boundary=B"},
                 param=param if param else "any")
    assert (await client.ok("GET", "/files"))["data"] == []


async def test_multipart_without_boundary_is_400(client):
    await expect(client, "POST", "/files", data=multipart(PURPOSE, FILE),
                 headers={"Content-Type": "multipart/form-data"})


@pytest.mark.parametrize("disposition", [
    b"filename*=UTF-8''a%0Ab.txt", b"filename*=UTF-8''a%00b.txt", b"filename*=UTF-8''a%0D%0AX-Evil:%201",
    b'filename="\xff\xfe.txt"', b"filename*=UTF-8''a%7Fb%01.txt", b'filename="a\\"b\\\\c.txt"'])
async def test_odd_filenames_upload_and_download(client, disposition):
    data = multipart(PURPOSE, b'Content-Disposition: form-data; name="file"; ' + disposition + b"\r\n\r\nhello")
    status, raw, _ = await client.raw("POST", "/files", data=data,
                                      headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert status == 200, raw
    f = jsonlib.loads(raw)
    assert "\x00" not in f["filename"]
    status, content, headers = await client.raw("GET", f"/files/{f['id']}/content")
    assert status == 200 and content == b"hello"
    assert "\n" not in headers["Content-Disposition"] and "X-Evil" not in headers
    assert await client.ok("GET", f"/files/{f['id']}") == f


# --- unknown ids (404) ---------------------------------------------------------------------------

def _unknown_id_cases():
    a, t, m, f = "asst_nope", "thread_nope", "msg_nope", "file-nope"
    return [
        ("GET", f"/assistants/{a}", None, f"No assistant found with id '{a}'."),
        ("POST", f"/assistants/{a}", {"name": "x"}, f"No assistant found with id '{a}'."),
        ("POST", f"/assistants/{a}", {}, f"No assistant found with id '{a}'."),
        ("DELETE", f"/assistants/{a}", None, f"No assistant found with id '{a}'."),
        ("GET", f"/threads/{t}", None, f"No thread found with id '{t}'."),
        ("POST", f"/threads/{t}", {"metadata": {"a": "b"}}, f"No thread found with id '{t}'."),
        ("POST", f"/threads/{t}", {}, f"No thread found with id '{t}'."),
        ("DELETE", f"/threads/{t}", None, f"No thread found with id '{t}'."),
        ("GET", f"/threads/{t}/messages", None, f"No thread found with id '{t}'."),
        ("POST", f"/threads/{t}/messages", {"role": "user", "content": "x"}, f"No thread found with id '{t}'."),
        ("GET", f"/threads/{t}/messages/{m}", None, f"No thread found with id '{t}'."),
        ("POST", f"/threads/{t}/messages/{m}", {"metadata": {"a": "b"}}, f"No thread found with id '{t}'."),
        ("DELETE", f"/threads/{t}/messages/{m}", None, f"No thread found with id '{t}'."),
        ("GET", "/threads/{thread}/messages/" + m, None, f"No message found with id '{m}'."),
        ("POST", "/threads/{thread}/messages/" + m, {"metadata": {"a": "b"}}, f"No message found with id '{m}'."),
        ("POST", "/threads/{thread}/messages/" + m, {}, f"No message found with id '{m}'."),
        ("DELETE", "/threads/{thread}/messages/" + m, None, f"No message found with id '{m}'."),
        ("GET", f"/files/{f}", None, f"No file found with id '{f}'."),
        ("DELETE", f"/files/{f}", None, f"No file found with id '{f}'."),
        ("GET", f"/files/{f}/content", None, f"No file found with id '{f}'."),
    ]


@pytest.mark.parametrize("method,path,body,message", _unknown_id_cases(),
                         ids=[f"{m} {p}" + (" {}" if b == {} else "") for m, p, b, _ in _unknown_id_cases()])
async def test_unknown_ids_are_404(client, objs, method, path, body, message):
    await expect(client, method, path.format(**objs), body, status=404, message=message, param=None)


async def test_ids_of_deleted_objects_are_404(client, objs):
    await client.ok("DELETE", f"/threads/{objs['thread']}/messages/{objs['msg']}")
    await expect(client, "DELETE", f"/threads/{objs['thread']}/messages/{objs['msg']}", status=404,
                 message=f"No message found with id '{objs['msg']}'.")
    await client.ok("DELETE", f"/files/{objs['file']}")
    await expect(client, "GET", f"/files/{objs['file']}/content", status=404,
                 message=f"No file found with id '{objs['file']}'.")
    await client.ok("DELETE", f"/assistants/{objs['asst']}")
    await expect(client, "POST", f"/assistants/{objs['asst']}", {"name": "again"}, status=404,
                 message=f"No assistant found with id '{objs['asst']}'.")
    await client.ok("DELETE", f"/threads/{objs['thread']}")
    await expect(client, "POST", f"/threads/{objs['thread']}", {"metadata": {}}, status=404,
                 message=f"No thread found with id '{objs['thread']}'.")


async def test_odd_ids_are_404_not_500(client):
    for raw_id in ("x" * 5000, "a%20b", "%E2%9C%93", "%FF", "%ED%A0%80", "..", "a.b", "'; DROP TABLE agents;--"):
        for path in (f"/assistants/{raw_id}", f"/threads/{raw_id}", f"/files/{raw_id}",
                     f"/threads/{raw_id}/messages"):
            status, raw, _ = await client.raw("GET", path)
            assert status == 404, (path, status, raw)
            envelope(status, jsonlib.loads(raw), 404)


# --- authentication (401) and the URL's project ---------------------------------------------------

@pytest.mark.parametrize("prefix", PREFIXES)
async def test_missing_or_wrong_key_is_401(app_client, db, prefix):
    name = f"proj-{uuid.uuid4().hex[:10]}"
    key = await new_key(db, name)
    revoked = await new_key(db, name)
    await db.execute("UPDATE api_keys SET revoked_at = now() WHERE digest = $1", digest(revoked))
    c = Client(app_client, None, prefix.format(project=name))
    for headers in ({}, {"Authorization": "Bearer tl-wrong"}, {"Authorization": "Bearer "},
                    {"Authorization": "Bearer"},
                    {"Authorization": f"Basic {key}"}, {"Authorization": key}, {"api-key": "tl-wrong"},
                    {"api-key": ""}, {"x-api-key": key}):
        for method, path, body in (("GET", "/assistants", None), ("POST", "/threads", {}),
                                   ("GET", "/files/file-x/content", None), ("DELETE", "/threads/t", None),
                                   ("GET", "/no/such/path", None)):
            s, b = await c.call(method, path, body, headers=headers)
            envelope(s, b, 401, code="invalid_api_key", param=None)
    s, b = await c.call("GET", "/threads", headers={"Authorization": f"Bearer {revoked}"})
    envelope(s, b, 401, code="invalid_api_key", message="Incorrect API key provided.", param=None)
    assert (await c.ok("GET", "/threads", headers={"Authorization": f"Bearer {key}"}))["object"] == "list"


async def test_missing_key_message(client):
    err = await expect(client, "GET", "/threads", auth=False, status=401, code="invalid_api_key")
    assert "API key" in err["message"]
    err = await expect(client, "GET", "/threads", auth=False, headers={"Authorization": "Bearer nope"}, status=401,
                       code="invalid_api_key", message="Incorrect API key provided.")


async def test_api_key_header_and_bearer_variants_work(client, project):
    name, key = project
    for headers in ({"api-key": key}, {"Authorization": f"Bearer {key}"}, {"Authorization": f"bearer {key}"},
                    {"Authorization": f"BEARER   {key}  "}, {"api-key": f" {key} "}):
        t = await client.ok("POST", "/threads", {}, auth=False, headers=headers)
        assert (await client.ok("GET", f"/threads/{t['id']}", auth=False, headers=headers))["id"] == t["id"]
    # AzureOpenAI: /openai/... with api-key and an api-version
    az = Client(client.http, None, "/openai")
    assert (await az.ok("GET", "/threads", auth=False, headers={"api-key": key},
                        params={"api-version": "2024-05-01-preview"}))["object"] == "list"


async def test_public_paths_need_no_key(app_client):
    resp = await app_client.get("/healthz")
    assert resp.status == 200 and (await resp.json()) == {"status": "ok"}
    resp = await app_client.get("/openapi.json")
    assert resp.status == 200


async def test_url_project_must_be_the_keys_project(client, project, objs):
    name, key = project
    other = f"other-{uuid.uuid4().hex[:6]}"
    for method, path, body in (("GET", "/assistants", None), ("POST", "/threads", {}),
                               ("GET", f"/threads/{objs['thread']}", None),
                               ("DELETE", f"/files/{objs['file']}", None),
                               ("POST", "/assistants", {"model": "m"})):
        c = Client(client.http, key, f"/api/projects/{other}")
        await expect(c, method, path, body, status=404, message=f"No project found with name '{other}'.", param=None)
    # nothing happened through the wrong project
    assert (await client.ok("GET", f"/files/{objs['file']}"))["id"] == objs["file"]
    assert [a["id"] for a in (await client.ok("GET", "/assistants"))["data"]] == [objs["asst"]]
    # the right project works, with api-version too
    mine = Client(client.http, key, f"/api/projects/{name}")
    assert (await mine.ok("GET", f"/threads/{objs['thread']}", params={"api-version": "v1"}))["id"] == objs["thread"]


async def test_unknown_paths_are_404_envelopes(client, project):
    name, _ = project
    for method, path in (("GET", "/v1/nope"), ("GET", "/v2/assistants"), ("POST", "/v1/assistant"),
                         ("GET", f"/api/projects/{name}/nope"), ("GET", "/v1/threads/t/runs/x/y/z"),
                         ("GET", "/v1/files/f/content/extra"), ("GET", "/openai/deployments/x/chat")):
        status, raw, headers = await Client(client.http, client.key, "").raw(method, path)
        err = envelope(status, jsonlib.loads(raw), 404, param=None)
        assert err["message"] == f"Invalid URL ({method} {path})"


async def test_wrong_method_is_405_envelope(client, objs):
    for method, path in (("PUT", "/assistants"), ("PATCH", f"/threads/{objs['thread']}"),
                         ("DELETE", "/files"), ("POST", f"/files/{objs['file']}/content"), ("PUT", "/threads")):
        await expect(client, method, path, status=405, param=None)


async def test_errors_carry_no_retry_after(client):
    """Rule 17: no Retry-After on a non-429 4xx (azure-core would retry the POST)."""
    for method, path, body in (("POST", "/assistants", {}), ("GET", "/assistants/asst_nope", None),
                               ("POST", "/threads", {"bogus": 1})):
        status, _, headers = await client.raw(method, path, json=body)
        assert 400 <= status < 500 and "Retry-After" not in headers
