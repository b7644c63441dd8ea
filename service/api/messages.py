"""Messages of a thread: create, list (optionally by run), get, update, delete."""

from __future__ import annotations

from aiohttp import web

from events.types import (
    ContentPart, ImageFilePart, ImageUrlPart, TextPart, TextValue,
)
from projections import queries
from projections.objects import DeletionStatus, message_from
from service.api import audit
from service.api.errors import ApiError
from service.api.http import ctx_of, json_ok, not_found_in_thread, page_request, raw_ok, require_thread, services
from service.api.requests import (
    CreateMessageRequest, InputImageFile, InputImageUrl, InputText, UpdateMessageRequest,
)
from service.api.tool_checks import check_attachments
from service.domain import thread
from service.domain.messages import NewMessage
from service.ids import new_id, now


def _content(content: str | list) -> list[ContentPart]:
    if isinstance(content, str):
        return [TextPart(TextValue(content))]
    parts: list[ContentPart] = []
    for part in content:
        match part:
            case InputText(text=text):
                parts.append(TextPart(TextValue(text)))
            case InputImageUrl(image_url=image_url):
                parts.append(ImageUrlPart(image_url))
            case InputImageFile(image_file=image_file):
                parts.append(ImageFilePart(image_file))
    return parts


async def new_message(request: web.Request, body: CreateMessageRequest, param: str = "") -> NewMessage:
    """The message a client adds, once every file it names is known to this project."""
    content = _content(body.content)
    attachments = body.attachments or []
    check_attachments(request, attachments, f"{param}.attachments" if param else "attachments")
    wanted = [p.image_file.file_id for p in content if isinstance(p, ImageFilePart)]
    wanted += [a.file_id for a in attachments]
    if wanted:
        found = await queries.files_exist(services(request).db, ctx_of(request).project, wanted)
        for file_id in wanted:
            if file_id not in found:
                raise ApiError(400, f"No file found with id '{file_id}'.", param=param or None)
    return NewMessage(message_id=new_id("msg_"), role=body.role, content=content, attachments=attachments,
                      metadata=body.metadata or {})


async def create_message(request: web.Request, body: CreateMessageRequest) -> web.Response:
    ctx = ctx_of(request)
    thread_id = request.match_info["thread_id"]
    message = await new_message(request, body)
    _, recorded = await services(request).actors.ask(thread_id, thread.AddMessage(ctx.project, now(), message),
                                                     ctx.meta("create_message"))
    return json_ok(message_from(recorded[-1].event))


async def list_messages(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    thread_id = request.match_info["thread_id"]
    if "as_of" in request.query:
        return await audit.list_messages_as_of(request, thread_id, request.query["as_of"])
    page = page_request(request)
    await require_thread(request, thread_id)
    result = await queries.list_messages(services(request).db, ctx.project, thread_id, page,
                                         request.query.get("run_id") or None)
    return raw_ok(result.to_json())


async def get_message(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    thread_id, message_id = request.match_info["thread_id"], request.match_info["message_id"]
    data = await queries.get_message(services(request).db, ctx.project, thread_id, message_id)
    if data is None:
        raise await not_found_in_thread(request, thread_id, "message", message_id)
    return raw_ok(data)


async def update_message(request: web.Request, body: UpdateMessageRequest) -> web.Response:
    ctx = ctx_of(request)
    thread_id, message_id = request.match_info["thread_id"], request.match_info["message_id"]
    if body.metadata is None:   # nothing to change
        return await get_message(request)
    await services(request).actors.ask(
        thread_id, thread.UpdateMessage(ctx.project, message_id, body.metadata),
        ctx.meta("update_message"))
    return await get_message(request)


async def delete_message(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    thread_id, message_id = request.match_info["thread_id"], request.match_info["message_id"]
    await services(request).actors.ask(
        thread_id, thread.DeleteMessage(ctx.project, message_id), ctx.meta("delete_message"))
    return json_ok(DeletionStatus(id=message_id, object="thread.message.deleted"))
