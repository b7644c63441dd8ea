"""Assistants (Azure: agents): create, list, get, update, delete."""

from __future__ import annotations

import msgspec
from aiohttp import web

from projections import queries
from projections.objects import DeletionStatus, assistant_from
from service.actors import execute
from service.api.http import ctx_of, json_ok, project_object, project_page, services
from service.api.requests import CreateAssistantRequest, UpdateAssistantRequest, check_response_format
from service.api.tool_checks import check_tool_resources, check_tools
from service.domain import agent
from service.ids import new_id, now


async def create_assistant(request: web.Request, body: CreateAssistantRequest) -> web.Response:
    ctx = ctx_of(request)
    check_tools(request, body.tools)
    check_tool_resources(request, body.tool_resources)
    check_response_format(body.response_format)
    settings = agent.AgentSettings(
        model=body.model, name=body.name, description=body.description, instructions=body.instructions,
        tools=body.tools, tool_resources=body.tool_resources or {}, metadata=body.metadata or {},
        temperature=body.temperature, top_p=body.top_p, response_format=body.response_format,
        reasoning_effort=body.reasoning_effort)
    _, recorded = await execute(services(request).store, agent.DECIDER, new_id("asst_"),
                                agent.CreateAgent(ctx.project, now(), settings), ctx.meta("create_assistant"))
    return json_ok(assistant_from(recorded[0].event))


list_assistants = project_page("assistants", queries.list_agents)
get_assistant = project_object("assistant", "assistant_id", queries.get_agent)


async def update_assistant(request: web.Request, body: UpdateAssistantRequest) -> web.Response:
    ctx = ctx_of(request)
    agent_id = request.match_info["assistant_id"]
    if body.tools is not msgspec.UNSET:
        check_tools(request, body.tools)
    if body.tool_resources is not msgspec.UNSET:
        check_tool_resources(request, body.tool_resources)
    if body.response_format is not msgspec.UNSET:
        check_response_format(body.response_format)
    fields = {f: getattr(body, f) for f in body.__struct_fields__ if getattr(body, f) is not msgspec.UNSET}
    if fields.get("metadata", msgspec.UNSET) is None:
        fields["metadata"] = {}
    if fields.get("tool_resources", msgspec.UNSET) is None:
        fields["tool_resources"] = {}
    tl = services(request)
    await execute(tl.store, agent.DECIDER, agent_id, agent.UpdateAgent(ctx.project, fields), ctx.meta("update_assistant"))
    return await get_assistant(request)


async def delete_assistant(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    agent_id = request.match_info["assistant_id"]
    tl = services(request)
    await execute(tl.store, agent.DECIDER, agent_id, agent.DeleteAgent(ctx.project), ctx.meta("delete_assistant"))
    return json_ok(DeletionStatus(id=agent_id, object="assistant.deleted"))
