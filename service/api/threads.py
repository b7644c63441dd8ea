"""Threads: create (with initial messages), list, get, update, delete."""

from __future__ import annotations

import msgspec
from aiohttp import web

from projections import queries
from projections.objects import DeletionStatus, thread_from
from service.api import audit
from service.api.errors import not_found
from service.api.http import ctx_of, json_ok, project_page, raw_ok, services
from service.api.messages import new_message
from service.api.requests import CreateThreadRequest, UpdateThreadRequest
from service.api.tool_checks import check_tool_resources
from service.domain import thread
from service.ids import new_id, now


async def create_thread(request: web.Request, body: CreateThreadRequest) -> web.Response:
    ctx = ctx_of(request)
    check_tool_resources(request, body.tool_resources)
    thread_id = new_id("thread_")
    messages = [await new_message(request, m, f"messages[{i}]") for i, m in enumerate(body.messages)]
    create = thread.CreateThread(project=ctx.project, at=now(), metadata=body.metadata or {},
                                 tool_resources=body.tool_resources or {}, messages=messages)
    _, recorded = await services(request).actors.ask(thread_id, create, ctx.meta("create_thread"))
    return json_ok(thread_from(recorded[0].event))


list_threads = project_page("threads", queries.list_threads)


async def get_thread(request: web.Request) -> web.Response:
    thread_id = request.match_info["thread_id"]
    if "as_of" in request.query:
        return await audit.get_thread_as_of(request, thread_id, request.query["as_of"])
    data = await queries.get_thread(services(request).db, ctx_of(request).project, thread_id)
    if data is None:
        raise not_found("thread", thread_id)
    return raw_ok(data)


async def update_thread(request: web.Request, body: UpdateThreadRequest) -> web.Response:
    ctx = ctx_of(request)
    thread_id = request.match_info["thread_id"]
    changes = {}
    if body.metadata is not msgspec.UNSET:
        changes["metadata"] = body.metadata or {}
    if body.tool_resources is not msgspec.UNSET:
        check_tool_resources(request, body.tool_resources)
        changes["tool_resources"] = body.tool_resources or {}
    await services(request).actors.ask(thread_id, thread.UpdateThread(ctx.project, **changes),
                                       ctx.meta("update_thread"))
    return await get_thread(request)


async def delete_thread(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    thread_id = request.match_info["thread_id"]
    await services(request).actors.ask(thread_id, thread.DeleteThread(ctx.project), ctx.meta("delete_thread"))
    return json_ok(DeletionStatus(id=thread_id, object="thread.deleted"))
