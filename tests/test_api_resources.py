"""Assistants, threads, messages and files over real HTTP: every endpoint under every mount prefix,
the objects of wire-api §3, and pagination exactly as §2.5 (both the Azure and the openai loop)."""

from __future__ import annotations

import asyncio
import json as jsonlib
import math
import random
import time

import pytest

from conftest import Client

MiB = 1 << 20
PREFIXES = ["", "/v1", "/openai", "/api/projects/{project}"]
API_VERSIONS = [None, "2025-05-15-preview"]

ASSISTANT_KEYS = {"id", "object", "created_at", "name", "description", "model", "instructions", "tools",
                  "tool_resources", "metadata", "temperature", "top_p", "response_format", "reasoning_effort"}
THREAD_KEYS = {"id", "object", "created_at", "metadata", "tool_resources"}
MESSAGE_KEYS = {"id", "object", "created_at", "thread_id", "status", "incomplete_details", "completed_at",
                "incomplete_at", "role", "content", "assistant_id", "run_id", "attachments", "metadata"}
FILE_KEYS = {"id", "object", "bytes", "created_at", "filename", "purpose", "status", "status_details", "expires_at"}
LIST_KEYS = {"object", "data", "first_id", "last_id", "has_more"}


# --- helpers -------------------------------------------------------------------------------------



def assert_timestamp(value):
    assert isinstance(value, int) and not isinstance(value, bool), value
    assert abs(value - time.time()) < 600, value


def assert_error(status, body, expected_status, message=None):
    assert status == expected_status, (status, body)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    if message is not None:
        assert body["error"]["message"] == message, body


def assert_page(page, ids, has_more):
    assert set(page) == LIST_KEYS and page["object"] == "list", page
    assert [o["id"] for o in page["data"]] == ids, page
    assert page["first_id"] == (ids[0] if ids else None)
    assert page["last_id"] == (ids[-1] if ids else None)
    assert page["has_more"] is has_more


@pytest.fixture(params=[(p, v) for p in PREFIXES for v in API_VERSIONS],
                ids=[f"{p or '/'}{'?api-version' if v else ''}" for p in PREFIXES for v in API_VERSIONS])
def mounted(request, app_client, project):
    prefix, version = request.param
    name, key = project
    return Client(app_client, key, prefix.format(project=name), version)


# --- assistants ----------------------------------------------------------------------------------

FULL_ASSISTANT = {
    "model": "gpt-4o", "name": "a1", "description": "helps", "instructions": "be nice",
    "tools": [{"type": "function", "function": {
                  "name": "get_weather", "description": "Get weather for a city.",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": []}}},
              {"type": "function", "function": {"name": "get_time"}}],
    "tool_resources": {},
    "metadata": {"k": "v", "team": "blue"}, "temperature": 0.5, "top_p": 0.9,
    "response_format": {"type": "json_object"},
}


async def test_assistant_lifecycle(mounted):
    c = mounted
    created = await c.ok("POST", "/assistants", FULL_ASSISTANT)
    assert set(created) == ASSISTANT_KEYS
    assert created["object"] == "assistant" and created["id"].startswith("asst_")
    assert_timestamp(created["created_at"])
    for field, value in FULL_ASSISTANT.items():
        assert created[field] == value, field
    aid = created["id"]

    assert await c.ok("GET", f"/assistants/{aid}") == created
    listed = await c.ok("GET", "/assistants")
    assert_page(listed, [aid], False)
    assert listed["data"][0] == created

    updated = await c.ok("POST", f"/assistants/{aid}", {"name": "a2", "metadata": {"new": "1"}, "temperature": 1.5})
    assert updated == {**created, "name": "a2", "metadata": {"new": "1"}, "temperature": 1.5}
    assert await c.ok("GET", f"/assistants/{aid}") == updated

    deleted = await c.ok("DELETE", f"/assistants/{aid}")
    assert deleted == {"id": aid, "object": "assistant.deleted", "deleted": True}
    status, body = await c.call("GET", f"/assistants/{aid}")
    assert_error(status, body, 404, f"No assistant found with id '{aid}'.")
    assert_page(await c.ok("GET", "/assistants"), [], False)


async def test_assistant_minimal_create_has_every_field(client):
    a = await client.ok("POST", "/assistants", {"model": "gpt-4o-mini"})
    assert set(a) == ASSISTANT_KEYS
    assert a["model"] == "gpt-4o-mini"
    assert a["name"] is None and a["description"] is None and a["instructions"] is None
    assert a["tools"] == [] and a["tool_resources"] == {} and a["metadata"] == {}
    assert a["response_format"] == "auto"


async def test_assistant_update_changes_only_what_is_sent(client):
    a = await client.ok("POST", "/assistants", FULL_ASSISTANT)
    aid = a["id"]
    assert await client.ok("POST", f"/assistants/{aid}", {}) == a
    same = await client.ok("POST", f"/assistants/{aid}", {"instructions": "be brief"})
    assert same == {**a, "instructions": "be brief"}
    # null clears a nullable field; metadata/tool_resources null mean "empty"; response_format null means "auto"
    cleared = await client.ok("POST", f"/assistants/{aid}", {
        "name": None, "description": None, "metadata": None, "tool_resources": None, "response_format": None,
        "tools": [], "temperature": None, "top_p": None})
    assert cleared == {**same, "name": None, "description": None, "metadata": {}, "tool_resources": {},
                       "response_format": "auto", "tools": [], "temperature": None, "top_p": None}
    # metadata is replaced as a whole, not merged
    replaced = await client.ok("POST", f"/assistants/{aid}", {"metadata": {"only": "this"}, "model": "gpt-4.1"})
    assert replaced["metadata"] == {"only": "this"} and replaced["model"] == "gpt-4.1"
    assert await client.ok("GET", f"/assistants/{aid}") == replaced


async def test_assistant_tools_of_any_type_round_trip_when_the_operator_allows_them(lenient_client):
    client = lenient_client
    tools = [{"type": "bing_grounding", "bing_grounding": {"search_configurations": [{"connection_id": "c"}]}},
             {"type": "azure_ai_search"}, {"type": "connected_agent", "connected_agent": {"id": "asst_x", "name": "n"}},
             {"type": "openapi", "openapi": {"name": "o", "spec": {"openapi": "3.0.0"}, "auth": {"type": "anonymous"}}}]
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}, "strict": True}}
    a = await client.ok("POST", "/assistants", {"model": "m", "tools": tools, "response_format": fmt})
    assert a["tools"] == tools and a["response_format"] == fmt
    assert (await client.ok("GET", f"/assistants/{a['id']}"))["tools"] == tools


async def test_assistant_text_round_trips_unicode(client):
    name = "Ünïcødé ✓ 𝄞 \"quoted\" \\ back"
    a = await client.ok("POST", "/assistants", {"model": "m", "name": name, "instructions": "line1\nline2\t\u0001",
                                                "metadata": {"ключ": "значение", "emoji": "🎉"}})
    got = await client.ok("GET", f"/assistants/{a['id']}")
    assert got["name"] == name and got["instructions"] == "line1\nline2\t\u0001"
    assert got["metadata"] == {"ключ": "значение", "emoji": "🎉"}


async def test_deleting_an_assistant_twice_is_404(client):
    a = await client.ok("POST", "/assistants", {"model": "m"})
    await client.ok("DELETE", f"/assistants/{a['id']}")
    for method in ("DELETE", "POST"):
        status, body = await client.call(method, f"/assistants/{a['id']}", {} if method == "POST" else None)
        assert_error(status, body, 404, f"No assistant found with id '{a['id']}'.")


# --- threads -------------------------------------------------------------------------------------

async def test_thread_lifecycle(mounted):
    c = mounted
    resources = {}      # function tools, the only ones this server runs, have no resources
    created = await c.ok("POST", "/threads", {"metadata": {"k": "v"}, "tool_resources": resources})
    assert set(created) == THREAD_KEYS
    assert created["object"] == "thread" and created["id"].startswith("thread_")
    assert_timestamp(created["created_at"])
    assert created["metadata"] == {"k": "v"} and created["tool_resources"] == resources
    tid = created["id"]

    assert await c.ok("GET", f"/threads/{tid}") == created
    assert_page(await c.ok("GET", "/threads"), [tid], False)

    updated = await c.ok("POST", f"/threads/{tid}", {"metadata": {"k2": "v2"}})
    assert updated == {**created, "metadata": {"k2": "v2"}}
    assert await c.ok("GET", f"/threads/{tid}") == updated

    deleted = await c.ok("DELETE", f"/threads/{tid}")
    assert deleted == {"id": tid, "object": "thread.deleted", "deleted": True}
    for method, path in (("GET", f"/threads/{tid}"), ("GET", f"/threads/{tid}/messages"),
                         ("DELETE", f"/threads/{tid}")):
        status, body = await c.call(method, path)
        assert_error(status, body, 404, f"No thread found with id '{tid}'.")
    assert_page(await c.ok("GET", "/threads"), [], False)


async def test_thread_update_semantics(lenient_client):
    client = lenient_client
    t = await client.ok("POST", "/threads", {"metadata": {"a": "1"}, "tool_resources": {"x": {"y": 1}}})
    tid = t["id"]
    assert await client.ok("POST", f"/threads/{tid}", {}) == t
    assert await client.ok("POST", f"/threads/{tid}", None) == t     # no body at all
    t2 = await client.ok("POST", f"/threads/{tid}", {"tool_resources": {"code_interpreter": {"file_ids": []}}})
    assert t2 == {**t, "tool_resources": {"code_interpreter": {"file_ids": []}}}
    t3 = await client.ok("POST", f"/threads/{tid}", {"metadata": None, "tool_resources": None})
    assert t3 == {**t, "metadata": {}, "tool_resources": {}}


async def test_empty_thread_create_body(client):
    for body in (None, {}, {"metadata": None, "tool_resources": None, "messages": []}):
        t = await client.ok("POST", "/threads", body)
        assert t["metadata"] == {} and t["tool_resources"] == {}
        assert_page(await client.ok("GET", f"/threads/{t['id']}/messages"), [], False)


async def test_deleting_a_thread_deletes_its_messages(client):
    t = await client.ok("POST", "/threads", {"messages": [{"role": "user", "content": "hi"}]})
    m = await client.ok("POST", f"/threads/{t['id']}/messages", {"role": "user", "content": "again"})
    await client.ok("DELETE", f"/threads/{t['id']}")
    for method, body in (("GET", None), ("POST", {"metadata": {"a": "b"}}), ("DELETE", None)):
        status, err = await client.call(method, f"/threads/{t['id']}/messages/{m['id']}", body)
        assert_error(status, err, 404, f"No thread found with id '{t['id']}'.")
    status, err = await client.call("POST", f"/threads/{t['id']}/messages", {"role": "user", "content": "x"})
    assert_error(status, err, 404, f"No thread found with id '{t['id']}'.")


# --- messages ------------------------------------------------------------------------------------

async def test_message_lifecycle(mounted):
    c = mounted
    tid = (await c.ok("POST", "/threads"))["id"]
    fid = (await c.upload(b"attached", "notes.md"))["id"]
    created = await c.ok("POST", f"/threads/{tid}/messages", {
        "role": "user", "content": "What's the weather?", "metadata": {"k": "v"},
        "attachments": [{"file_id": fid, "tools": []}]})
    assert set(created) == MESSAGE_KEYS
    assert created["object"] == "thread.message" and created["id"].startswith("msg_")
    assert_timestamp(created["created_at"])
    assert_timestamp(created["completed_at"])
    assert created["thread_id"] == tid and created["role"] == "user" and created["status"] == "completed"
    assert created["content"] == [{"type": "text", "text": {"value": "What's the weather?", "annotations": []}}]
    assert created["incomplete_details"] is None and created["incomplete_at"] is None
    assert created["assistant_id"] is None and created["run_id"] is None
    assert created["attachments"] == [{"file_id": fid, "tools": []}]
    assert created["metadata"] == {"k": "v"}
    mid = created["id"]

    assert await c.ok("GET", f"/threads/{tid}/messages/{mid}") == created
    listed = await c.ok("GET", f"/threads/{tid}/messages")
    assert_page(listed, [mid], False)
    assert listed["data"][0] == created

    updated = await c.ok("POST", f"/threads/{tid}/messages/{mid}", {"metadata": {"seen": "yes"}})
    assert updated == {**created, "metadata": {"seen": "yes"}}
    assert await c.ok("GET", f"/threads/{tid}/messages/{mid}") == updated
    assert await c.ok("POST", f"/threads/{tid}/messages/{mid}", {}) == updated   # nothing to change

    deleted = await c.ok("DELETE", f"/threads/{tid}/messages/{mid}")
    assert deleted == {"id": mid, "object": "thread.message.deleted", "deleted": True}
    status, body = await c.call("GET", f"/threads/{tid}/messages/{mid}")
    assert_error(status, body, 404, f"No message found with id '{mid}'.")
    assert_page(await c.ok("GET", f"/threads/{tid}/messages"), [], False)
    assert (await c.ok("GET", f"/threads/{tid}"))["id"] == tid   # the thread stays


async def test_message_content_parts(client):
    tid = (await client.ok("POST", "/threads"))["id"]
    img = (await client.upload(b"\x89PNG\r\n\x1a\n fake", "cat.png", "vision"))["id"]
    m = await client.ok("POST", f"/threads/{tid}/messages", {"role": "assistant", "content": [
        {"type": "text", "text": "look at this"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
        {"type": "image_file", "image_file": {"file_id": img}},
        {"type": "image_file", "image_file": {"file_id": img, "detail": "low"}}]})
    assert m["role"] == "assistant"
    assert m["content"] == [
        {"type": "text", "text": {"value": "look at this", "annotations": []}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
        {"type": "image_file", "image_file": {"file_id": img, "detail": "auto"}},
        {"type": "image_file", "image_file": {"file_id": img, "detail": "low"}}]
    assert await client.ok("GET", f"/threads/{tid}/messages/{m['id']}") == m


async def test_message_naming_an_unknown_or_deleted_file_is_refused(client):
    tid = (await client.ok("POST", "/threads"))["id"]
    gone = (await client.upload(b"bye"))["id"]
    await client.ok("DELETE", f"/files/{gone}")
    for fid in ("file-doesnotexist", gone):
        for body in ({"role": "user", "content": "x", "attachments": [{"file_id": fid, "tools": []}]},
                     {"role": "user", "content": [{"type": "image_file", "image_file": {"file_id": fid}}]}):
            status, err = await client.call("POST", f"/threads/{tid}/messages", body)
            assert_error(status, err, 400, f"No file found with id '{fid}'.")
    assert_page(await client.ok("GET", f"/threads/{tid}/messages"), [], False)


async def test_messages_run_id_filter(client):
    tid = (await client.ok("POST", "/threads"))["id"]
    m = await client.ok("POST", f"/threads/{tid}/messages", {"role": "user", "content": "hi"})
    assert_page(await client.ok("GET", f"/threads/{tid}/messages", params={"run_id": "run_unknown"}), [], False)
    assert_page(await client.ok("GET", f"/threads/{tid}/messages",
                                params={"run_id": "run_unknown", "order": "asc", "limit": "1"}), [], False)
    # an empty run_id is no filter
    assert_page(await client.ok("GET", f"/threads/{tid}/messages", params={"run_id": ""}), [m["id"]], False)


async def test_a_message_belongs_to_its_thread(client):
    t1 = (await client.ok("POST", "/threads"))["id"]
    t2 = (await client.ok("POST", "/threads"))["id"]
    m = await client.ok("POST", f"/threads/{t1}/messages", {"role": "user", "content": "in t1"})
    for method, body in (("GET", None), ("POST", {"metadata": {"a": "b"}}), ("DELETE", None)):
        status, err = await client.call(method, f"/threads/{t2}/messages/{m['id']}", body)
        assert_error(status, err, 404, f"No message found with id '{m['id']}'.")
    assert await client.ok("GET", f"/threads/{t1}/messages/{m['id']}") == m


# --- threads created with messages (wire-api §2.3) -------------------------------------------------

async def test_thread_created_with_initial_messages(lenient_client):
    client = lenient_client
    img = (await client.upload(b"GIF89a....", "pic.gif", "vision"))["id"]
    doc = (await client.upload(b"# manual", "manual.md"))["id"]
    t = await client.ok("POST", "/threads", {"metadata": {"topic": "pets"}, "messages": [
        {"role": "user", "content": "hi", "metadata": {"n": "1"}},
        {"role": "assistant", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://example.com/dog.jpg", "detail": "low"}},
            {"type": "image_file", "image_file": {"file_id": img, "detail": "high"}}]},
        {"role": "user", "content": [{"type": "text", "text": "see attached"}],
         "attachments": [{"file_id": doc, "tools": [{"type": "file_search"}, {"type": "code_interpreter"}]}]},
    ]})
    assert set(t) == THREAD_KEYS and t["metadata"] == {"topic": "pets"}
    asc = await client.ok("GET", f"/threads/{t['id']}/messages", params={"order": "asc"})
    assert len(asc["data"]) == 3 and asc["has_more"] is False
    first, second, third = asc["data"]
    for m in asc["data"]:
        assert set(m) == MESSAGE_KEYS and m["thread_id"] == t["id"] and m["object"] == "thread.message"
        assert m["run_id"] is None and m["assistant_id"] is None and m["status"] == "completed"
        assert_timestamp(m["created_at"])
    assert first["role"] == "user" and first["metadata"] == {"n": "1"}
    assert first["content"] == [{"type": "text", "text": {"value": "hi", "annotations": []}}]
    assert second["role"] == "assistant" and second["content"] == [
        {"type": "text", "text": {"value": "look", "annotations": []}},
        {"type": "image_url", "image_url": {"url": "https://example.com/dog.jpg", "detail": "low"}},
        {"type": "image_file", "image_file": {"file_id": img, "detail": "high"}}]
    assert third["attachments"] == [{"file_id": doc, "tools": [{"type": "file_search"}, {"type": "code_interpreter"}]}]
    desc = await client.ok("GET", f"/threads/{t['id']}/messages")
    assert [m["id"] for m in desc["data"]] == [third["id"], second["id"], first["id"]]


@pytest.mark.parametrize("bad", ["image_file", "attachment"])
async def test_thread_with_a_message_naming_an_unknown_file_is_refused_whole(client, bad):
    ok_file = (await client.upload(b"fine"))["id"]
    message = ({"role": "user", "content": [{"type": "image_file", "image_file": {"file_id": "file-nope"}}]}
               if bad == "image_file" else
               {"role": "user", "content": "x", "attachments": [{"file_id": "file-nope", "tools": []}]})
    status, err = await client.call("POST", "/threads", {"messages": [
        {"role": "user", "content": "fine", "attachments": [{"file_id": ok_file}]}, message]})
    assert_error(status, err, 400, "No file found with id 'file-nope'.")
    assert_page(await client.ok("GET", "/threads"), [], False)   # nothing was created


# --- files ---------------------------------------------------------------------------------------

async def test_file_lifecycle(mounted):
    c = mounted
    data = bytes(range(256)) * 4 + b"\r\n--boundary-lookalike--\r\n" + bytes(range(255, -1, -1))
    created = await c.upload(data, "all-bytes.bin")
    assert set(created) == FILE_KEYS
    assert created["object"] == "file" and created["id"].startswith(("file-", "assistant-"))
    assert_timestamp(created["created_at"])
    assert created["bytes"] == len(data) and created["filename"] == "all-bytes.bin"
    assert created["purpose"] == "assistants" and created["status"] == "processed"
    assert created["status_details"] is None
    fid = created["id"]

    assert await c.ok("GET", f"/files/{fid}") == created
    listed = await c.ok("GET", "/files")
    assert_page(listed, [fid], False)
    assert listed["data"][0] == created

    status, content, headers = await c.raw("GET", f"/files/{fid}/content")
    assert status == 200 and content == data
    assert headers["Content-Type"] == "application/octet-stream"
    assert int(headers["Content-Length"]) == len(data)

    deleted = await c.ok("DELETE", f"/files/{fid}")
    assert deleted == {"id": fid, "object": "file", "deleted": True}
    for method, path in (("GET", f"/files/{fid}"), ("GET", f"/files/{fid}/content"), ("DELETE", f"/files/{fid}")):
        status, body = await c.call(method, path)
        assert_error(status, body, 404, f"No file found with id '{fid}'.")
    assert_page(await c.ok("GET", "/files"), [], False)


async def test_upload_as_azure_sends_it(client):
    """wire-api §2.4: parts `purpose` then `file`, filename given, no part Content-Type."""
    body = (b'--f57a\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
            b'--f57a\r\nContent-Disposition: form-data; name="file"; filename="hello.txt"\r\n\r\n'
            b'hello world\r\n--f57a--\r\n')
    status, raw, _ = await client.raw("POST", "/files", data=body,
                                      headers={"Content-Type": "multipart/form-data; boundary=f57a"})
    assert status == 200, raw
    f = jsonlib.loads(raw)
    assert f["bytes"] == 11 and f["filename"] == "hello.txt" and f["purpose"] == "assistants"
    assert f["status"] == "processed"
    assert (await client.raw("GET", f"/files/{f['id']}/content"))[1] == b"hello world"


async def test_upload_as_openai_sends_it(client):
    """openai adds a guessed Content-Type on the file part."""
    f = await client.upload(b"col1,col2\n1,2\n", "data.csv", "assistants", content_type="text/csv")
    assert f["filename"] == "data.csv" and f["bytes"] == 14
    assert (await client.raw("GET", f"/files/{f['id']}/content"))[1] == b"col1,col2\n1,2\n"


async def test_empty_file(client):
    f = await client.upload(b"", "empty.txt")
    assert f["bytes"] == 0
    status, content, headers = await client.raw("GET", f"/files/{f['id']}/content")
    assert status == 200 and content == b"" and headers["Content-Length"] == "0"


@pytest.mark.parametrize("size", [3 * MiB + 123_457, 2 * MiB], ids=["3.1MiB", "exactly-2MiB"])
async def test_multi_megabyte_upload_round_trips_byte_exact(client, db, size):
    data = random.Random(size).randbytes(size)
    f = await client.upload(data, "big.bin")
    assert f["bytes"] == size
    rows = await db.fetch("SELECT seq, data FROM blob_chunks WHERE blob_id = $1 ORDER BY seq", f["id"])
    # stored in several chunks of about 1 MiB (network reads decide the exact cut), none empty
    assert [r[0] for r in rows] == list(range(len(rows))) and len(rows) >= 2
    assert all(MiB <= len(r[1]) < MiB + 256 * 1024 for r in rows[:-1]) and 0 < len(rows[-1][1])
    assert b"".join(r[1] for r in rows) == data
    status, content, headers = await client.raw("GET", f"/files/{f['id']}/content")
    assert status == 200 and int(headers["Content-Length"]) == size
    assert content == data
    await client.ok("DELETE", f"/files/{f['id']}")
    assert await db.fetchval("SELECT count(*) FROM blob_chunks WHERE blob_id = $1", f["id"]) == 0


async def test_files_list_purpose_filter(client):
    a = (await client.upload(b"a", "a.txt", "assistants"))["id"]
    v = (await client.upload(b"v", "v.png", "vision"))["id"]
    a2 = (await client.upload(b"a2", "a2.txt", "assistants"))["id"]
    o = (await client.upload(b"o", "o.txt", "assistants_output"))["id"]
    assert_page(await client.ok("GET", "/files"), [o, a2, v, a], False)
    assert_page(await client.ok("GET", "/files", params={"purpose": "assistants"}), [a2, a], False)
    assert_page(await client.ok("GET", "/files", params={"purpose": "vision"}), [v], False)
    assert_page(await client.ok("GET", "/files", params={"purpose": "batch"}), [], False)
    assert_page(await client.ok("GET", "/files", params={"purpose": "assistants", "order": "asc", "limit": "1"}),
                [a], True)
    assert_page(await client.ok("GET", "/files", params={"purpose": "assistants", "order": "asc", "after": a}),
                [a2], False)


@pytest.mark.parametrize("purpose", ["assistants", "assistants_output", "vision", "batch", "fine-tune",
                                     "user_data", "evals"])
async def test_every_documented_purpose_is_accepted(client, purpose):
    f = await client.upload(b"x", "x.jsonl", purpose)
    assert f["purpose"] == purpose
    assert (await client.ok("GET", f"/files/{f['id']}"))["purpose"] == purpose


async def test_utf8_filename_round_trips(client):
    """httpx (openai) and azure-core write a non-ASCII filename as raw UTF-8 in the quoted parameter."""
    name = "résumé 2024 (final) ✓.pdf"
    body = (b'--XyZ\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
            b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="' + name.encode() + b'"\r\n'
            b'Content-Type: application/pdf\r\n\r\n%PDF-1.4\r\n--XyZ--\r\n')
    status, raw, _ = await client.raw("POST", "/files", data=body,
                                      headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert status == 200, raw
    f = jsonlib.loads(raw)
    assert f["filename"] == name and f["bytes"] == 8
    assert (await client.ok("GET", f"/files/{f['id']}"))["filename"] == name
    status, content, headers = await client.raw("GET", f"/files/{f['id']}/content")
    assert status == 200 and content == b"%PDF-1.4" and headers["Content-Disposition"].startswith("attachment")


# --- pagination (wire-api §2.5, rules 6 and 7) -----------------------------------------------------

KINDS = ["assistants", "threads", "messages", "files"]


async def make_items(c: Client, kind: str, n: int) -> tuple[str, list[str]]:
    """n objects of a kind, in creation order, and the path that lists them."""
    ids = []
    if kind == "messages":
        tid = (await c.ok("POST", "/threads"))["id"]
        path = f"/threads/{tid}/messages"
    else:
        path = f"/{kind}"
    for i in range(n):
        if kind == "assistants":
            ids.append((await c.ok("POST", "/assistants", {"model": "m", "name": f"a{i}"}))["id"])
        elif kind == "threads":
            ids.append((await c.ok("POST", "/threads", {"metadata": {"i": str(i)}}))["id"])
        elif kind == "messages":
            ids.append((await c.ok("POST", path, {"role": "user", "content": f"m{i}"}))["id"])
        else:
            ids.append((await c.upload(f"f{i}".encode(), f"f{i}.txt"))["id"])
    return path, ids


async def walk_azure(c: Client, path: str, order: str, limit: int) -> tuple[list[str], int]:
    """Azure ItemPaged: re-request with after=last_id until last_id is null (ignores has_more)."""
    seen, cursor, requests = [], None, 0
    while True:
        params = {"order": order, "limit": str(limit), **({"after": cursor} if cursor else {})}
        page = await c.ok("GET", path, params=params)
        requests += 1
        assert requests <= 50, "the Azure paging loop does not terminate"
        ids = [o["id"] for o in page["data"]]
        assert_page(page, ids, page["has_more"])
        assert len(ids) <= limit
        if not page["last_id"]:
            assert ids == [] and page["has_more"] is False
            return seen, requests
        seen += ids
        cursor = page["last_id"]


async def walk_openai(c: Client, path: str, order: str, limit: int) -> list[str]:
    """openai CursorPage: after=data[-1].id while has_more."""
    seen, params = [], {"order": order, "limit": str(limit)}
    for _ in range(50):
        page = await c.ok("GET", path, params=params)
        seen += [o["id"] for o in page["data"]]
        if not page["has_more"]:
            return seen
        params = {**params, "after": page["data"][-1]["id"]}
    raise AssertionError("the openai paging loop does not terminate")


@pytest.mark.parametrize("kind", KINDS)
async def test_default_order_is_newest_first(client, kind):
    path, ids = await make_items(client, kind, 4)
    assert_page(await client.ok("GET", path), ids[::-1], False)
    assert_page(await client.ok("GET", path, params={"order": "desc"}), ids[::-1], False)
    assert_page(await client.ok("GET", path, params={"order": "asc"}), ids, False)


@pytest.mark.parametrize("kind", KINDS)
async def test_limit_after_before_pages(client, kind):
    path, ids = await make_items(client, kind, 7)
    a = dict(enumerate(ids, 1))   # a[1] is the oldest
    get = lambda **p: client.ok("GET", path, params={k: str(v) for k, v in p.items()})  # noqa: E731

    # forward, ascending
    assert_page(await get(order="asc", limit=2), [a[1], a[2]], True)
    assert_page(await get(order="asc", limit=2, after=a[2]), [a[3], a[4]], True)
    assert_page(await get(order="asc", limit=3, after=a[4]), [a[5], a[6], a[7]], False)
    assert_page(await get(order="asc", limit=2, after=a[7]), [], False)
    # forward, descending (the default)
    assert_page(await get(limit=3), [a[7], a[6], a[5]], True)
    assert_page(await get(limit=3, after=a[5]), [a[4], a[3], a[2]], True)
    assert_page(await get(limit=3, after=a[2]), [a[1]], False)
    assert_page(await get(limit=3, after=a[1]), [], False)
    # before: the page adjacent to the cursor, still in the requested order
    assert_page(await get(order="asc", limit=2, before=a[5]), [a[3], a[4]], True)
    assert_page(await get(order="asc", limit=2, before=a[3]), [a[1], a[2]], False)
    assert_page(await get(order="asc", limit=5, before=a[3]), [a[1], a[2]], False)
    assert_page(await get(order="asc", before=a[1]), [], False)
    assert_page(await get(order="desc", limit=2, before=a[3]), [a[5], a[4]], True)
    assert_page(await get(order="desc", limit=2, before=a[5]), [a[7], a[6]], False)
    assert_page(await get(order="desc", before=a[7]), [], False)
    # after and before together bound a window
    assert_page(await get(order="asc", after=a[2], before=a[6]), [a[3], a[4], a[5]], False)
    assert_page(await get(order="desc", after=a[6], before=a[2]), [a[5], a[4], a[3]], False)
    assert_page(await get(order="asc", limit=2, after=a[2], before=a[6]), [a[3], a[4]], True)
    # limit bounds
    assert_page(await get(limit=1), [a[7]], True)
    assert_page(await get(limit=100), ids[::-1], False)
    assert_page(await get(limit=7), ids[::-1], False)
    assert_page(await get(limit=6), ids[:0:-1], True)


@pytest.mark.parametrize("kind", KINDS)
async def test_empty_list_has_null_ids(client, kind):
    """Rule 6: `last_id` must be null on an empty page, or the Azure loop never ends."""
    path = (f"/threads/{(await client.ok('POST', '/threads'))['id']}/messages" if kind == "messages"
            else f"/{kind}")
    for params in ({}, {"order": "asc"}, {"after": "zzzz"}, {"before": "a0"}, {"limit": "1"},
                   {"order": "asc", "after": "asst_0"}):
        page = await client.ok("GET", path, params=params)
        assert page == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


@pytest.mark.parametrize("kind", KINDS)
async def test_walking_every_page_yields_each_item_once_in_order(client, kind):
    path, ids = await make_items(client, kind, 7)
    for order, expected in (("asc", ids), ("desc", ids[::-1])):
        for limit in (1, 2, 3, 7, 8, 100):
            seen, requests = await walk_azure(client, path, order, limit)
            assert seen == expected, (order, limit)
            assert requests == math.ceil(len(ids) / limit) + 1   # one extra request ends the Azure loop
            assert await walk_openai(client, path, order, limit) == expected, (order, limit)


@pytest.mark.parametrize("kind", KINDS)
async def test_walking_backwards_with_before(client, kind):
    path, ids = await make_items(client, kind, 7)
    for order, expected in (("asc", ids), ("desc", ids[::-1])):
        pages, cursor = [], expected[-1]
        while True:
            page = await client.ok("GET", path, params={"order": order, "limit": "2", "before": cursor})
            if not page["data"]:
                assert page["last_id"] is None and page["first_id"] is None and page["has_more"] is False
                break
            pages.insert(0, [o["id"] for o in page["data"]])
            cursor = page["first_id"]
            assert len(pages) < 20
        assert [i for p in pages for i in p] == expected[:-1]


async def test_default_limit_is_20(client):
    _, ids = await make_items(client, "threads", 21)
    page = await client.ok("GET", "/threads")
    assert_page(page, ids[:0:-1], True)
    assert_page(await client.ok("GET", "/threads", params={"after": page["last_id"]}), [ids[0]], False)


async def test_a_deleted_cursor_still_pages(client):
    path, ids = await make_items(client, "assistants", 5)
    await client.ok("DELETE", f"/assistants/{ids[2]}")
    assert_page(await client.ok("GET", path, params={"order": "asc", "after": ids[2]}), ids[3:], False)
    assert_page(await client.ok("GET", path, params={"order": "asc", "before": ids[2], "limit": "1"}), [ids[1]], True)
    seen, _ = await walk_azure(client, path, "asc", 2)
    assert seen == ids[:2] + ids[3:]


async def test_lists_are_per_thread(client):
    p1, m1 = await make_items(client, "messages", 3)
    p2, m2 = await make_items(client, "messages", 2)
    assert_page(await client.ok("GET", p1, params={"order": "asc"}), m1, False)
    assert_page(await client.ok("GET", p2, params={"order": "asc"}), m2, False)
    # a cursor from another thread only positions the page: it does not leak that thread's messages
    page = await client.ok("GET", p2, params={"after": m1[0], "order": "asc"})
    assert {o["id"] for o in page["data"]} <= set(m2)


async def test_a_stalled_upload_does_not_block_the_api(database_url, db):
    """Uploads hold their own connection while streaming: with a one-connection API pool, other
    requests still run while an upload waits for its client, and the upload then completes."""
    from aiohttp.test_utils import TestClient, TestServer

    from conftest import new_key, test_config
    from service.app import create_app

    app = create_app(test_config(db_pool_size=1, upload_connections=1), database_url)
    async with TestClient(TestServer(app)) as http:
        c = Client(http, await new_key(db))
        release = asyncio.Event()
        boundary = "stall-boundary"

        async def body():
            yield (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
                   f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.txt"\r\n\r\n'
                   "first half ").encode()
            await release.wait()
            yield f"second half\r\n--{boundary}--\r\n".encode()

        upload = asyncio.create_task(c.raw("POST", "/files", data=body(),
                                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        for i in range(10):
            thread = await asyncio.wait_for(c.ok("POST", "/threads", {"metadata": {"i": str(i)}}), 10)
            assert (await asyncio.wait_for(c.ok("GET", f"/threads/{thread['id']}"), 10))["id"] == thread["id"]
        assert not upload.done()
        release.set()
        status, raw, _ = await asyncio.wait_for(upload, 10)
        assert status == 200, raw
        file = jsonlib.loads(raw)
        assert file["bytes"] == len(b"first half second half")
        assert (await c.raw("GET", f"/files/{file['id']}/content"))[1] == b"first half second half"
