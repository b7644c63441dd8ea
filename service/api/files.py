"""Files: multipart upload, list, get, delete, content download.

Bytes stream from the request into Postgres in 1 MiB chunks and back out the same way, inside one
transaction with the FileUploaded event: a failed or oversized upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import re

import msgspec
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from events.store import Append, EventMetadata, EventStore, write_appends
from projections import queries
from projections.objects import DeletionStatus, File, file_from
from service.actors import execute
from service.api.errors import ApiError, not_found
from service.api.http import ctx_of, json_ok, page_request, project_object, raw_ok, services
from service.domain import file as file_domain
from service.domain.errors import NotFound
from service.ids import new_id, now

CHUNK_BYTES = 1 << 20
FILES_PAGE_LIMIT = 10_000
PURPOSES = ("assistants", "assistants_output", "vision", "batch", "fine-tune", "user_data", "evals")
# Postgres text/jsonb cannot hold NUL or lone surrogates (undecodable filename bytes arrive as those).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_UNREADABLE = "The multipart body could not be read."
EXPIRES_AFTER_SECONDS = (3600, 2_592_000)     # OpenAI's range: an hour to 30 days


async def upload_file(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    tl = services(request)
    if request.content_type != "multipart/form-data":
        raise ApiError(415, "Files are uploaded as multipart/form-data with the parts 'purpose' and 'file'.")
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError):
        raise ApiError(400, "The multipart body could not be read.") from None
    file_id = new_id("file-")
    purpose = filename = named = None
    expires_after: dict[str, str] = {}
    size = 0
    sha = hashlib.sha256()
    async with tl.uploads.acquire() as conn, conn.transaction():
        try:
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):   # a nested multipart body
                    raise ApiError(400, _UNREADABLE)
                if part.name == "purpose":
                    purpose = (await part.read_chunk(256)).decode("utf-8", "replace").strip()
                    await part.release()
                elif part.name == "filename":   # azure-ai-agents `upload(file=bytes, filename=...)` sends it as a field
                    named = (await part.read_chunk(1024)).decode("utf-8", "replace").strip() or None
                    await part.release()
                elif part.name in ("expires_after[anchor]", "expires_after[seconds]"):
                    expires_after[part.name] = (await part.read_chunk(64)).decode("utf-8", "replace").strip()
                    await part.release()
                elif part.name == "file" and filename is None:
                    filename = (part.filename or "upload")[:512]
                    seq, buffer = 0, bytearray()
                    while chunk := await part.read_chunk(256 * 1024):
                        size += len(chunk)
                        if size > tl.config.max_file_bytes:
                            raise ApiError(413, f"File is larger than the limit of {tl.config.max_file_bytes} bytes.",
                                           param="file")
                        sha.update(chunk)
                        buffer += chunk
                        if len(buffer) >= CHUNK_BYTES:
                            await _write_chunk(conn, file_id, seq, buffer)
                            seq, buffer = seq + 1, bytearray()
                    if buffer or seq == 0:
                        await _write_chunk(conn, file_id, seq, buffer)
                else:
                    raise ApiError(400, f"Unrecognized multipart field '{str(part.name)[:64]}'; expected 'purpose' and 'file'.",
                                   param=str(part.name)[:64])
        except (ValueError, AssertionError, HttpProcessingError):   # a truncated or malformed multipart body
            raise ApiError(400, _UNREADABLE) from None
        if filename is None:
            raise ApiError(400, "Missing required parameter: 'file'.", param="file")
        filename = _UNSTORABLE.sub("\ufffd", named[:512] if named else filename)
        if purpose is None:
            raise ApiError(400, "Missing required parameter: 'purpose'.", param="purpose")
        if purpose not in PURPOSES:
            raise ApiError(400, f"Invalid value for 'purpose': '{purpose[:64]}' is not one of {', '.join(PURPOSES)}.",
                           param="purpose")
        command = file_domain.UploadFile(project=ctx.project, at=now(), filename=filename, purpose=purpose, bytes=size,
                                        sha256=sha.hexdigest(), lifetime=_expires_after(expires_after))
        events = file_domain.decide(file_domain.FileState(file_id), command)
        uploaded = events[0]
        await write_appends(conn, [Append(file_domain.DECIDER.stream(file_id), 0, events, ctx.meta("upload_file"))], tl.store.projections)
    return json_ok(file_from(uploaded))


def _expires_after(fields: dict[str, str]) -> int | None:
    """The file's lifetime in seconds from the form fields `expires_after[anchor]` and
    `expires_after[seconds]` (as the SDKs send `expires_after={...}`), or None without them."""
    if not fields:
        return None
    anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
    if anchor != "created_at":
        raise ApiError(400, f"Invalid value for 'expires_after[anchor]': expected 'created_at', got "
                            f"{'nothing' if anchor is None else repr(anchor[:32])}.", param="expires_after[anchor]")
    low, high = EXPIRES_AFTER_SECONDS
    if seconds is None or not seconds.isascii() or not seconds.isdigit() or not low <= int(seconds) <= high:
        raise ApiError(400, f"Invalid value for 'expires_after[seconds]': expected an integer from {low} to {high}.",
                       param="expires_after[seconds]")
    return int(seconds)


async def expire_files(store: EventStore, db, limit: int = 500) -> int:
    """Delete the files past their `expires_at`, exactly as DELETE /files/{id} would (the event,
    the read model, the bytes); how many were due. Two processes sweeping at once are safe: the
    second one's delete finds the file already gone."""
    due = await db.fetch("SELECT id, project FROM files WHERE data->>'expires_at' IS NOT NULL"
                         " AND (data->>'expires_at')::bigint <= $1 ORDER BY (data->>'expires_at')::bigint LIMIT $2",
                         now(), limit)
    for file_id, project in due:
        try:
            await execute(store, file_domain.DECIDER, file_id, file_domain.DeleteFile(project),
                          EventMetadata(project=project, causation="file expired"))
        except NotFound:
            pass
    return len(due)


async def _write_chunk(conn, file_id: str, seq: int, data: bytearray) -> None:
    await conn.execute("INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, $2, $3)", file_id, seq, bytes(data))


async def list_files(request: web.Request) -> web.Response:
    purpose = request.query.get("purpose") or None
    # OpenAI's files list takes 1..10000 and defaults to 10000; Azure's SDK reads only `data` and never
    # pages, so the large default is what lets it see every file.
    page = await queries.list_files(services(request).db, ctx_of(request).project,
                                    page_request(request, FILES_PAGE_LIMIT, FILES_PAGE_LIMIT), purpose)
    return raw_ok(page.to_json())


get_file = project_object("file", "file_id", queries.get_file)


async def download_file(request: web.Request) -> web.StreamResponse:
    file_id = request.match_info["file_id"]
    db = services(request).db
    data = await queries.get_file(db, ctx_of(request).project, file_id)
    if data is None:
        raise not_found("file", file_id)
    meta = msgspec.json.decode(data, type=File)
    # Control characters would be refused by aiohttp as header injection (a 500): drop them with the quoting.
    safe_name = re.sub(r'[\x00-\x1f\x7f"\\]', "", meta.filename).encode("ascii", "replace").decode()
    response = web.StreamResponse(headers={
        "Content-Type": "application/octet-stream", "Content-Length": str(meta.bytes),
        "Content-Disposition": f'attachment; filename="{safe_name}"'})
    await response.prepare(request)
    async for chunk in queries.file_chunks(db, file_id):
        await response.write(chunk)
    await response.write_eof()
    return response


async def delete_file(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    file_id = request.match_info["file_id"]
    await execute(services(request).store, file_domain.DECIDER, file_id, file_domain.DeleteFile(ctx.project),
                  ctx.meta("delete_file"))
    return json_ok(DeletionStatus(id=file_id, object="file"))
