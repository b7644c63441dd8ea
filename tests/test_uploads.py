"""The Uploads API: a file sent in parts, completed into a normal File (wire-api-tools.md §1.3)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid

import pytest
from aiohttp import FormData
from openai import AsyncOpenAI, OpenAI

from service.api.uploads import expire_uploads
from tests.conftest import Client, new_key, until


async def _start(client, size: int, **extra):
    return await client.ok("POST", "/uploads", json={"bytes": size, "filename": "big.bin",
                                                      "mime_type": "application/octet-stream",
                                                      "purpose": "assistants", **extra})


async def _part(client, upload_id: str, data: bytes):
    form = FormData()
    form.add_field("data", data, filename="blob")
    return await client.call("POST", f"/uploads/{upload_id}/parts", data=form)


async def test_parts_complete_into_a_downloadable_file(client):
    a, b = os.urandom(3 << 20 | 17), os.urandom(1000)
    up = await _start(client, len(a) + len(b))
    assert up["status"] == "pending" and up["object"] == "upload"
    assert up["expires_at"] == up["created_at"] + 3600 and up["file"] is None
    _, pa = await _part(client, up["id"], a)
    _, pb = await _part(client, up["id"], b)
    assert pa["object"] == "upload.part" and pa["upload_id"] == up["id"]
    done = await client.ok("POST", f"/uploads/{up['id']}/complete",
                           json={"part_ids": [pa["id"], pb["id"]], "md5": hashlib.md5(a + b).hexdigest()})
    assert done["status"] == "completed"
    assert done["file"]["bytes"] == len(a) + len(b) and done["file"]["filename"] == "big.bin"
    assert done["file"]["status"] == "processed"
    status, body, _ = await client.raw("GET", f"/files/{done['file']['id']}/content")
    assert status == 200 and body == a + b
    assert (await client.ok("GET", f"/files/{done['file']['id']}"))["bytes"] == len(a) + len(b)
    # a completed upload takes no more parts and cannot complete again
    status, err = await _part(client, up["id"], b"x")
    assert status == 400 and "completed" in err["error"]["message"]
    status, _ = await client.call("POST", f"/uploads/{up['id']}/complete", json={"part_ids": [pa["id"]]})
    assert status == 400


async def test_parts_are_joined_in_the_order_named(client):
    up = await _start(client, 6)
    _, first = await _part(client, up["id"], b"abc")
    _, second = await _part(client, up["id"], b"def")
    done = await client.ok("POST", f"/uploads/{up['id']}/complete", json={"part_ids": [second["id"], first["id"]]})
    _, body, _ = await client.raw("GET", f"/files/{done['file']['id']}/content")
    assert body == b"defabc"


async def test_sizes_that_do_not_sum_or_a_wrong_md5_are_refused(client):
    up = await _start(client, 10)
    _, p = await _part(client, up["id"], b"12345")
    status, err = await client.call("POST", f"/uploads/{up['id']}/complete", json={"part_ids": [p["id"]]})
    assert status == 400 and err["error"]["param"] == "part_ids"
    _, q = await _part(client, up["id"], b"67890")
    status, err = await client.call("POST", f"/uploads/{up['id']}/complete",
                                    json={"part_ids": [p["id"], q["id"]], "md5": hashlib.md5(b"nope").hexdigest()})
    assert status == 400 and err["error"]["param"] == "md5"
    status, err = await _part(client, up["id"], b"1")   # more bytes than declared
    assert status == 400
    # the refused completions left the upload pending and whole
    done = await client.ok("POST", f"/uploads/{up['id']}/complete", json={"part_ids": [p["id"], q["id"]]})
    _, body, _ = await client.raw("GET", f"/files/{done['file']['id']}/content")
    assert body == b"1234567890"


async def test_an_upload_larger_than_the_file_cap_is_refused(client):
    status, err = await client.call("POST", "/uploads", json={
        "bytes": 512 * 1024 * 1024 + 1, "filename": "x", "mime_type": "text/plain", "purpose": "assistants"})
    assert status == 400 and err["error"]["param"] == "bytes"


async def test_cancel_ends_the_upload(client):
    up = await _start(client, 3)
    await _part(client, up["id"], b"abc")
    cancelled = await client.ok("POST", f"/uploads/{up['id']}/cancel")
    assert cancelled["status"] == "cancelled"
    status, _ = await _part(client, up["id"], b"abc")
    assert status == 400
    assert (await client.call("POST", f"/uploads/{up['id']}/cancel"))[0] == 400


async def test_another_projects_upload_is_not_found(client, app_client, db):
    up = await _start(client, 3)
    other = Client(app_client, await new_key(db))
    status, _ = await _part(other, up["id"], b"abc")
    assert status == 404
    assert (await other.call("POST", f"/uploads/{up['id']}/complete", json={"part_ids": []}))[0] == 404
    assert (await other.call("POST", f"/uploads/{up['id']}/cancel"))[0] == 404


async def test_a_pending_upload_past_its_expiry_expires_and_loses_its_parts(client, db):
    up = await _start(client, 3)
    _, part = await _part(client, up["id"], b"abc")
    await db.execute("UPDATE uploads SET expires_at = expires_at - 7200 WHERE id = $1", up["id"])
    status, err = await client.call("POST", f"/uploads/{up['id']}/complete", json={"part_ids": [part["id"]]})
    assert status == 400 and "expired" in err["error"]["message"]
    await expire_uploads(db)
    assert await db.fetchval("SELECT status FROM uploads WHERE id = $1", up["id"]) == "expired"
    assert await db.fetchval("SELECT count(*) FROM blob_chunks WHERE blob_id = $1", part["id"]) == 0


async def test_the_service_sweeps_expired_uploads(database_url, db):
    from tests.conftest import ServiceProcess
    proc = await asyncio.to_thread(ServiceProcess, database_url, {"THREADLINE_FILE_SWEEP_SECONDS": "0.2"})
    try:
        with OpenAI(base_url=f"{proc.url}/v1", api_key=await new_key(db), max_retries=0) as oa:
            up = oa.uploads.create(bytes=3, filename="a", mime_type="text/plain", purpose="assistants")
            oa.uploads.parts.create(up.id, data=b"abc")
            await db.execute("UPDATE uploads SET expires_at = expires_at - 7200 WHERE id = $1", up.id)
            await until(lambda: db.fetchval("SELECT status = 'expired' FROM uploads WHERE id = $1", up.id),
                        "the sweeper expires the upload")
            assert await db.fetchval("SELECT count(*) FROM upload_parts WHERE upload_id = $1", up.id) == 0
    finally:
        proc.stop()


def test_openai_upload_file_chunked_sync(service, tmp_path, db_key):
    data = os.urandom(2_500_000)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    with OpenAI(base_url=f"{service.url}/v1", api_key=db_key, max_retries=0) as oa:
        up = oa.uploads.upload_file_chunked(file=path, mime_type="application/octet-stream",
                                            purpose="assistants", part_size=1_000_000)
        assert up.status == "completed" and up.file.bytes == len(data)
        assert oa.files.content(up.file.id).content == data


async def test_openai_upload_file_chunked_async(service, db_key):
    data = os.urandom(700_001)
    async with AsyncOpenAI(base_url=f"{service.url}/v1", api_key=db_key, max_retries=0) as oa:
        up = await oa.uploads.upload_file_chunked(file=data, filename="mem.bin", bytes=len(data),
                                                  mime_type="application/octet-stream", purpose="assistants",
                                                  part_size=300_000)
        assert up.status == "completed" and up.filename == "mem.bin"
        assert (await oa.files.content(up.file.id)).content == data


@pytest.fixture
async def db_key(db):
    return await new_key(db, f"up-{uuid.uuid4().hex[:10]}")


async def test_files_list_defaults_to_and_accepts_up_to_10000(client):
    for i in range(25):
        await client.upload(b"x", filename=f"f{i}.txt")
    page = await client.ok("GET", "/files")
    assert len(page["data"]) == 25 and page["has_more"] is False   # more than the 20 other lists default to
    assert len((await client.ok("GET", "/files", params={"limit": "10000"}))["data"]) == 25
    assert (await client.call("GET", "/files", params={"limit": "10001"}))[0] == 400
    page = await client.ok("GET", "/files", params={"limit": "2"})
    assert len(page["data"]) == 2 and page["has_more"] is True


# --- files that expire (`expires_after`) ----------------------------------------------------------

async def test_files_with_expires_after_are_deleted_by_the_service_when_they_expire(database_url, db):
    from tests.conftest import ServiceProcess
    proc = await asyncio.to_thread(ServiceProcess, database_url, {"THREADLINE_FILE_SWEEP_SECONDS": "0.2"})
    try:
        with OpenAI(base_url=f"{proc.url}/v1", api_key=await new_key(db), max_retries=0) as oa:
            hour = {"anchor": "created_at", "seconds": 3600}
            due = oa.files.create(file=("due.txt", b"gone soon"), purpose="assistants", expires_after=hour)
            later = oa.files.create(file=("later.txt", b"stays"), purpose="assistants",
                                    expires_after={"anchor": "created_at", "seconds": 2_592_000})
            kept = oa.files.create(file=("kept.txt", b"forever"), purpose="assistants")
            assert due.expires_at == due.created_at + 3600 and later.expires_at == later.created_at + 2_592_000
            assert kept.expires_at is None and oa.files.retrieve(due.id).expires_at == due.expires_at
            up = oa.uploads.create(bytes=3, filename="up.txt", mime_type="text/plain", purpose="assistants",
                                   expires_after={"anchor": "created_at", "seconds": 7200})
            part = oa.uploads.parts.create(up.id, data=b"abc")
            done = oa.uploads.complete(up.id, part_ids=[part.id])
            assert done.file.expires_at == done.file.created_at + 7200
            assert oa.files.retrieve(done.file.id).expires_at == done.file.expires_at
            # An hour passes for two of them (the log cannot be edited: the read model's clock is).
            for f in (due.id, done.file.id):
                await db.execute("UPDATE files SET data = jsonb_set(data, '{expires_at}',"
                                 " to_jsonb(extract(epoch FROM now())::int8 - 1)) WHERE id = $1", f)
            await until(lambda: db.fetchval("SELECT count(*) = 0 FROM files WHERE id = ANY($1::text[])",
                                            [due.id, done.file.id]), "the sweeper deletes the expired files")
            listed = {f.id for f in oa.files.list()}
            assert due.id not in listed and done.file.id not in listed and {later.id, kept.id} <= listed
            for gone in (due.id, done.file.id):
                status, _ = await _status(proc.url, oa.api_key, f"/v1/files/{gone}")
                assert status == 404
                status, _ = await _status(proc.url, oa.api_key, f"/v1/files/{gone}/content")
                assert status == 404
                assert await db.fetchval("SELECT count(*) FROM blob_chunks WHERE blob_id = $1", gone) == 0
                meta = await db.fetchval("SELECT metadata->>'causation' FROM events WHERE stream = $1"
                                         " AND type = 'FileDeleted'", f"file-{gone}")
                assert meta == "file expired"
            assert oa.files.content(later.id).content == b"stays"
    finally:
        proc.stop()


async def _status(url: str, key: str, path: str):
    import aiohttp
    async with aiohttp.ClientSession() as http, http.get(url + path, headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status, await r.read()


@pytest.mark.parametrize("fields, param", [
    ({"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"}, "expires_after[anchor]"),
    ({"expires_after[seconds]": "3600"}, "expires_after[anchor]"),
    ({"expires_after[anchor]": "created_at"}, "expires_after[seconds]"),
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "3599"}, "expires_after[seconds]"),
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"}, "expires_after[seconds]"),
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "1e4"}, "expires_after[seconds]"),
])
async def test_a_bad_expires_after_is_refused_naming_the_field(client, fields, param):
    form = FormData()
    form.add_field("purpose", "assistants")
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("file", b"x", filename="x.txt")
    status, err = await client.call("POST", "/files", data=form)
    assert status == 400 and err["error"]["param"] == param, err


async def test_an_upload_refuses_a_bad_expires_after(client):
    status, err = await client.call("POST", "/uploads", json={
        "bytes": 1, "filename": "a", "mime_type": "text/plain", "purpose": "assistants",
        "expires_after": {"anchor": "created_at", "seconds": 60}})
    assert status == 400 and "expires_after" in (err["error"]["param"] or ""), err
