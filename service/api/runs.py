"""Runs and run steps: create (also with a new thread), list, get, update, cancel, submit tool outputs."""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp import web

from projections import queries
from service.api.errors import ApiError, not_found
from service.api.http import ctx_of, not_found_in_thread, page_request, raw_ok, require_thread, services
from service.api.messages import new_message
from service.api.streams import sdk_stream
from service.api.requests import (
    CreateRunRequest, CreateThreadAndRunRequest, RunSettings, SubmitToolOutputsRequest, UpdateRunRequest,
    check_response_format, check_tool_choice,
)
from service.api.tool_checks import check_tool_resources, check_tools
from service.domain import run as runs
from service.domain import thread
from service.ids import new_id, now

INCLUDABLE = {"step_details.tool_calls[*].file_search.results[*].content"}
# The SDKs' pollers (openai `poll`, `create_and_poll`, ...) send this header, keep polling while a
# run is in one of POLLED, and sleep what `openai-poll-after-ms` says between polls.
POLL_HELPER = "X-Stainless-Poll-Helper"
POLL_AFTER = "openai-poll-after-ms"
POLLED = frozenset({"queued", "in_progress", "cancelling"})


def _check_include(request: web.Request) -> list[str]:
    values = [v for raw in request.query.getall("include[]", []) for v in raw.split(",")]
    for v in values:
        if v not in INCLUDABLE:
            raise ApiError(400, f"Invalid value for 'include[]': '{v[:128]}'. Supported: "
                           f"{', '.join(sorted(INCLUDABLE))}.", param="include[]")
    return values


async def _run_settings(request: web.Request, body: RunSettings,
                        additional_instructions: str | None = None) -> runs.RunSettings:
    """The run's effective settings: the assistant's, overridden by the request, once every tool
    in them is one this server runs."""
    ctx = ctx_of(request)
    raw = await services(request).agents.get(services(request).db, ctx.project, body.assistant_id)
    if raw is None:
        raise ApiError(404, f"No assistant found with id '{body.assistant_id}'.", param="assistant_id")
    truncation = ({"type": body.truncation_strategy.type, "last_messages": body.truncation_strategy.last_messages}
                  if body.truncation_strategy is not None else {"type": "auto", "last_messages": None})
    if truncation["type"] == "last_messages" and truncation["last_messages"] is None:
        raise ApiError(400, "Missing required parameter: 'truncation_strategy.last_messages'.",
                       param="truncation_strategy.last_messages")
    run = runs.run_settings(msgspec.json.decode(raw), msgspec.structs.asdict(body), truncation=truncation,
                            additional_instructions=additional_instructions)
    # Also the assistant's own tools: one stored before this server refused what it does not run
    # (or under THREADLINE_ALLOW_UNEXECUTED_TOOLS) must not run as if it had none.
    check_tools(request, run.tools)
    check_tool_resources(request, run.tool_resources)
    check_tool_choice(body.tool_choice, run.tools)
    check_response_format(body.response_format)
    return run


def _create(request: web.Request, settings: runs.RunSettings, messages=()) -> runs.CreateRun:
    at = now()
    return runs.CreateRun(project=ctx_of(request).project, run_id=new_id("run_"), at=at,
                          expires_at=at + services(request).config.run_expiry_seconds, settings=settings,
                          messages=list(messages))


async def create_run(request: web.Request, body: CreateRunRequest) -> web.StreamResponse:
    _check_include(request)
    ctx = ctx_of(request)
    thread_id = request.match_info["thread_id"]
    settings = await _run_settings(request, body, body.additional_instructions)
    messages = [await new_message(request, m, f"additional_messages[{i}]")
                for i, m in enumerate(body.additional_messages or [])]
    tl = services(request)
    run = _create(request, settings, messages)
    _, recorded = await tl.actors.ask(thread_id, run, ctx.meta("create_run"))
    tl.engine.submit(thread_id, run.run_id)
    if body.stream:
        # The first frames come from what was just committed: no log read before the first byte.
        return await sdk_stream(request, thread_id, run.run_id, recorded[-1].version - 1, committed=recorded[-1:])
    return await _current_run(request, thread_id, run.run_id)


async def create_thread_and_run(request: web.Request, body: CreateThreadAndRunRequest) -> web.StreamResponse:
    ctx = ctx_of(request)
    thread_id = new_id("thread_")
    settings = await _run_settings(request, body)      # refuses a bad request before anything is made
    spec = body.thread
    if spec is not None:
        check_tool_resources(request, spec.tool_resources, "thread.tool_resources")
    messages = [await new_message(request, m, f"thread.messages[{i}]")
                for i, m in enumerate(spec.messages if spec else [])]
    tl = services(request)
    create = thread.CreateThread(project=ctx.project, at=now(), metadata=(spec.metadata if spec else None) or {},
                                 tool_resources=(spec.tool_resources if spec else None) or {}, messages=messages)
    _, made = await tl.actors.ask(thread_id, create, ctx.meta("create_thread_and_run"))
    run = _create(request, settings)
    _, queued = await tl.actors.ask(thread_id, run, ctx.meta("create_thread_and_run"))
    tl.engine.submit(thread_id, run.run_id)
    if body.stream:
        return await sdk_stream(request, thread_id, run.run_id, 0, with_thread=True, committed=made + queued)
    return await _current_run(request, thread_id, run.run_id)


async def _current_run(request: web.Request, thread_id: str, run_id: str) -> web.Response:
    data = await queries.get_run(services(request).db, ctx_of(request).project, thread_id, run_id)
    if data is None:
        raise await not_found_in_thread(request, thread_id, "run", run_id)
    response = raw_ok(data)
    fields = _poll_fields.decode(data)
    response.headers[POLL_AFTER] = str(poll_after_ms(fields.status, fields.created_at))
    return response


class _PollFields(msgspec.Struct):
    status: str = ""
    created_at: int = 0


_poll_fields = msgspec.json.Decoder(_PollFields)


async def list_runs(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    thread_id = request.match_info["thread_id"]
    page = page_request(request)
    await require_thread(request, thread_id)
    return raw_ok((await queries.list_runs(services(request).db, ctx.project, thread_id, page)).to_json())


async def get_run(request: web.Request) -> web.Response:
    thread_id, run_id = request.match_info["thread_id"], request.match_info["run_id"]
    if request.headers.get(POLL_HELPER) == "true":
        await _until_poll_ends(request, thread_id, run_id)
    return await _current_run(request, thread_id, run_id)


async def _until_poll_ends(request: web.Request, thread_id: str, run_id: str) -> None:
    """For an SDK poller: answer once the run leaves the statuses it polls in, or after
    THREADLINE_POLL_WAIT_SECONDS, so a poll costs one round trip however short the run is, and
    polling ends as soon as the run does instead of a sleep later."""
    tl = services(request)
    project = ctx_of(request).project
    loop = asyncio.get_running_loop()
    deadline = loop.time() + tl.config.poll_wait_seconds
    sub = tl.hub.subscribe(f"thread-{thread_id}")      # before the first look: no change slips by
    try:
        while (await queries.run_status(tl.db, project, thread_id, run_id)) in POLLED:
            left = deadline - loop.time()
            if left <= 0 or sub.closing:
                return
            await sub.wait(left)
            sub.take()
    finally:
        tl.hub.unsubscribe(sub)


def poll_after_ms(status: str | None, created_at: int | None = None) -> int:
    """How long a poller should wait before asking again: a tenth of the run's age, from 25 ms for a
    new run to 1 s for one that has been going for ten seconds or more."""
    if status not in POLLED:
        return 1000
    age = max(0, now() - created_at) if created_at else 0
    return min(1000, max(25, age * 100))


async def update_run(request: web.Request, body: UpdateRunRequest) -> web.Response:
    ctx = ctx_of(request)
    thread_id, run_id = request.match_info["thread_id"], request.match_info["run_id"]
    if body.metadata is not None:
        await services(request).actors.ask(
            thread_id, runs.UpdateRun(ctx.project, run_id, body.metadata), ctx.meta("update_run"))
    return await _current_run(request, thread_id, run_id)


async def cancel_run(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    thread_id, run_id = request.match_info["thread_id"], request.match_info["run_id"]
    tl = services(request)
    state, _ = await tl.actors.ask(thread_id, runs.CancelRun(ctx.project, run_id, now()),
                                   ctx.meta("cancel_run"))
    if state.active_run is not None and state.active_run.run_id == run_id:
        tl.engine.interrupt(run_id, "cancelled")      # stop the model now; the engine ends the run
    return await _current_run(request, thread_id, run_id)


async def submit_tool_outputs(request: web.Request, body: SubmitToolOutputsRequest) -> web.StreamResponse:
    ctx = ctx_of(request)
    thread_id, run_id = request.match_info["thread_id"], request.match_info["run_id"]
    outputs = [{"tool_call_id": o.tool_call_id, "output": o.output} for o in body.tool_outputs]
    tl = services(request)
    _, recorded = await tl.actors.ask(
        thread_id, runs.SubmitToolOutputs(ctx.project, run_id, outputs, now()),
        ctx.meta("submit_tool_outputs"))
    tl.engine.submit(thread_id, run_id)
    if body.stream:
        return await sdk_stream(request, thread_id, run_id, recorded[0].version - 1, committed=recorded)
    return await _current_run(request, thread_id, run_id)


async def list_steps(request: web.Request) -> web.Response:
    _check_include(request)
    ctx = ctx_of(request)
    thread_id, run_id = request.match_info["thread_id"], request.match_info["run_id"]
    db = services(request).db
    status = await queries.run_status(db, ctx.project, thread_id, run_id)
    if status is None:
        raise await not_found_in_thread(request, thread_id, "run", run_id)
    response = raw_ok((await queries.list_steps(db, ctx.project, thread_id, run_id, page_request(request))).to_json())
    response.headers[POLL_AFTER] = str(poll_after_ms(status))
    return response


async def get_step(request: web.Request) -> web.Response:
    _check_include(request)
    ctx = ctx_of(request)
    thread_id, run_id, step_id = (request.match_info["thread_id"], request.match_info["run_id"],
                                  request.match_info["step_id"])
    db = services(request).db
    data = await queries.get_step(db, ctx.project, thread_id, run_id, step_id)
    if data is None:
        if await queries.run_status(db, ctx.project, thread_id, run_id) is None:
            raise await not_found_in_thread(request, thread_id, "run", run_id)
        raise not_found("run step", step_id)
    response = raw_ok(data)
    response.headers[POLL_AFTER] = str(poll_after_ms(await queries.run_status(db, ctx.project, thread_id, run_id)))
    return response

