"""Uploads API: a large file sent in parts, then completed into a normal File.

Uploads are transfer state, not conversation: plain rows (`uploads`, `upload_parts`), not events.
A part's bytes stream into blob_chunks under the part's id; completing re-keys those chunk rows to
the new file's id in SQL (the bytes never pass through the process again except to hash them) and
records the file with the ordinary FileUploaded event, in one transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Literal

import msgspec
import structlog
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from events.store import Append, write_appends
from projections.objects import File, file_from
from service.api.errors import ApiError, not_found
from service.api.files import CHUNK_BYTES, PURPOSES, _write_chunk, expire_files
from service.api.http import ctx_of, json_ok, services
from service.api.requests import CompleteUploadRequest, CreateUploadRequest
from service.domain import file as file_domain
from service.ids import new_id, now

log = structlog.get_logger("threadline.uploads")

MAX_PART_BYTES = 64 * 1024 * 1024
UPLOAD_TTL_SECONDS = 3600
_UNREADABLE = "The multipart body could not be read."


class Upload(msgspec.Struct):
    id: str
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str
    status: Literal["pending", "completed", "cancelled", "expired"]
    file: File | None = None
    object: Literal["upload"] = "upload"


class UploadPart(msgspec.Struct):
    id: str
    created_at: int
    upload_id: str
    object: Literal["upload.part"] = "upload.part"


async def _upload_of(conn, row) -> Upload:
    file = None
    if row["file_id"]:
        data = await conn.fetchval("SELECT data FROM files WHERE id = $1", row["file_id"])
        file = msgspec.json.decode(data, type=File) if data is not None else None
    return Upload(id=row["id"], bytes=row["bytes"], created_at=row["created_at"], expires_at=row["expires_at"],
                  filename=row["filename"], purpose=row["purpose"], status=row["status"], file=file)


async def _pending(conn, project: str, upload_id: str, lock: str):
    """The upload row, locked; 404 for another project's id, 400 unless it is still pending."""
    row = await conn.fetchrow(f"SELECT * FROM uploads WHERE id = $1 AND project = $2 FOR {lock}", upload_id, project)
    if row is None:
        raise not_found("upload", upload_id)
    if row["status"] == "pending" and row["expires_at"] <= now():
        raise ApiError(400, f"Upload '{upload_id}' has expired.", param="upload_id")
    if row["status"] != "pending":
        raise ApiError(400, f"Upload '{upload_id}' is already {row['status']}.", param="upload_id")
    return row


async def create_upload(request: web.Request, body: CreateUploadRequest) -> web.Response:
    ctx, tl = ctx_of(request), services(request)
    if body.purpose not in PURPOSES:
        raise ApiError(400, f"Invalid value for 'purpose': '{body.purpose[:64]}' is not one of {', '.join(PURPOSES)}.",
                       param="purpose")
    if body.bytes > tl.config.max_file_bytes:
        raise ApiError(400, f"'bytes' is larger than the limit of {tl.config.max_file_bytes} bytes.", param="bytes")
    created = now()
    upload_id = new_id("upload_")
    async with tl.uploads.acquire() as conn:
        row = await conn.fetchrow(
            "INSERT INTO uploads (id, project, status, created_at, expires_at, bytes, filename, mime_type, purpose,"
            " file_expires_after) VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8, $9) RETURNING *",
            upload_id, ctx.project, created, created + UPLOAD_TTL_SECONDS, body.bytes,
            body.filename.replace("\x00", "\ufffd"), body.mime_type, body.purpose,
            body.expires_after.seconds if body.expires_after else None)
        return json_ok(await _upload_of(conn, row))


async def add_part(request: web.Request) -> web.Response:
    ctx, tl = ctx_of(request), services(request)
    upload_id = request.match_info["upload_id"]
    part_id, created = new_id("part_"), now()
    async with tl.uploads.acquire() as conn, conn.transaction():
        row = await _pending(conn, ctx.project, upload_id, "SHARE")   # another project's id: 404 before all else
        if request.content_type != "multipart/form-data":
            raise ApiError(415, "A part is sent as multipart/form-data with the field 'data'.")
        size, seq = 0, 0
        try:
            reader = await request.multipart()
            found = False
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or part.name != "data" or found:
                    raise ApiError(400, "A part is sent as the one multipart field 'data'.", param="data")
                found = True
                buffer = bytearray()
                while chunk := await part.read_chunk(256 * 1024):
                    size += len(chunk)
                    if size > MAX_PART_BYTES:
                        raise ApiError(400, f"A part is at most {MAX_PART_BYTES} bytes.", param="data")
                    buffer += chunk
                    if len(buffer) >= CHUNK_BYTES:
                        await _write_chunk(conn, part_id, seq, buffer)
                        seq, buffer = seq + 1, bytearray()
                if buffer:
                    await _write_chunk(conn, part_id, seq, buffer)
                    seq += 1
        except (ValueError, AssertionError, HttpProcessingError):
            raise ApiError(400, _UNREADABLE) from None
        if not found:
            raise ApiError(400, "Missing required parameter: 'data'.", param="data")
        stored = await conn.fetchval("SELECT coalesce(sum(bytes), 0) FROM upload_parts WHERE upload_id = $1", upload_id)
        if stored + size > row["bytes"]:
            raise ApiError(400, f"The parts add up to more than the upload's {row['bytes']} bytes.", param="data")
        await conn.execute("INSERT INTO upload_parts (id, upload_id, created_at, bytes, chunks) VALUES ($1, $2, $3, $4, $5)",
                           part_id, upload_id, created, size, seq)
    return json_ok(UploadPart(id=part_id, created_at=created, upload_id=upload_id))


async def complete_upload(request: web.Request, body: CompleteUploadRequest) -> web.Response:
    ctx, tl = ctx_of(request), services(request)
    upload_id = request.match_info["upload_id"]
    if len(set(body.part_ids)) != len(body.part_ids):
        raise ApiError(400, "'part_ids' names a part more than once.", param="part_ids")
    file_id = new_id("file-")
    async with tl.uploads.acquire() as conn, conn.transaction():
        row = await _pending(conn, ctx.project, upload_id, "UPDATE")
        parts = {r["id"]: r for r in await conn.fetch("SELECT * FROM upload_parts WHERE upload_id = $1", upload_id)}
        if unknown := [p for p in body.part_ids if p not in parts]:
            raise ApiError(400, f"No part '{unknown[0][:64]}' in upload '{upload_id}'.", param="part_ids")
        total = sum(parts[p]["bytes"] for p in body.part_ids)
        if total != row["bytes"]:
            raise ApiError(400, f"The parts hold {total} bytes; the upload was created for {row['bytes']}.",
                           param="part_ids")
        base = 0
        for part_id in body.part_ids:   # re-key, in the order given: the bytes stay where they are
            await conn.execute("UPDATE blob_chunks SET blob_id = $1, seq = seq + $2 WHERE blob_id = $3",
                               file_id, base, part_id)
            base += parts[part_id]["chunks"]
        if base == 0:   # an empty file still has its one (empty) chunk, as POST /files writes it
            await _write_chunk(conn, file_id, 0, bytearray())
        sha, md5 = hashlib.sha256(), hashlib.md5()
        seq = -1
        while batch := await conn.fetch("SELECT seq, data FROM blob_chunks WHERE blob_id = $1 AND seq > $2"
                                        " ORDER BY seq LIMIT 16", file_id, seq):
            for r in batch:
                sha.update(r[1])
                md5.update(r[1])
            seq = batch[-1][0]
        if body.md5 is not None and body.md5.lower() != md5.hexdigest():
            raise ApiError(400, "The md5 does not match the bytes uploaded.", param="md5")
        leftover = [p for p in parts if p not in body.part_ids]
        if leftover:
            await conn.execute("DELETE FROM blob_chunks WHERE blob_id = ANY($1::text[])", leftover)
        await conn.execute("DELETE FROM upload_parts WHERE upload_id = $1", upload_id)
        command = file_domain.UploadFile(project=ctx.project, at=now(), filename=row["filename"], purpose=row["purpose"],
                                        bytes=total, sha256=sha.hexdigest(), lifetime=row["file_expires_after"])
        events = file_domain.decide(file_domain.FileState(file_id), command)
        uploaded = events[0]
        await write_appends(conn, [Append(file_domain.DECIDER.stream(file_id), 0, events, ctx.meta("complete_upload"))],
                            tl.store.projections)
        row = await conn.fetchrow("UPDATE uploads SET status = 'completed', file_id = $2 WHERE id = $1 RETURNING *",
                                  upload_id, file_id)
        upload = await _upload_of(conn, row)
    upload.file = file_from(uploaded)
    return json_ok(upload)


async def cancel_upload(request: web.Request) -> web.Response:
    ctx, tl = ctx_of(request), services(request)
    upload_id = request.match_info["upload_id"]
    async with tl.uploads.acquire() as conn, conn.transaction():
        await _pending(conn, ctx.project, upload_id, "UPDATE")
        await _drop_parts(conn, [upload_id])
        row = await conn.fetchrow("UPDATE uploads SET status = 'cancelled' WHERE id = $1 RETURNING *", upload_id)
        return json_ok(await _upload_of(conn, row))


async def _drop_parts(conn, upload_ids: list[str]) -> None:
    await conn.execute("DELETE FROM blob_chunks WHERE blob_id IN"
                       " (SELECT id FROM upload_parts WHERE upload_id = ANY($1::text[]))", upload_ids)
    await conn.execute("DELETE FROM upload_parts WHERE upload_id = ANY($1::text[])", upload_ids)


async def expire_uploads(pool) -> int:
    """Mark pending uploads past their expires_at `expired` and delete their parts; how many expired."""
    async with pool.acquire() as conn, conn.transaction():
        ids = [r[0] for r in await conn.fetch(
            "UPDATE uploads SET status = 'expired' WHERE id IN (SELECT id FROM uploads WHERE status = 'pending'"
            " AND expires_at <= $1 ORDER BY expires_at LIMIT 500 FOR UPDATE SKIP LOCKED) RETURNING id", now())]
        if ids:
            await _drop_parts(conn, ids)
    return len(ids)


async def sweep_expired(store, pool, every_seconds: float) -> None:
    """Every process sweeps expired uploads (SKIP LOCKED keeps two processes off the same rows)
    and expired files (a file deleted twice is deleted once)."""
    while True:
        await asyncio.sleep(every_seconds)
        try:
            uploads = await expire_uploads(pool)
            files = await expire_files(store, store.pool)
            if uploads or files:
                log.info("expired", uploads=uploads, files=files)
        except Exception:   # a failed sweep (e.g. the database restarting) is retried next interval
            log.exception("expiry_sweep_failed")
