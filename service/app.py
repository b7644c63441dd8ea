"""The aiohttp application: wiring, middlewares, system routes, start-up and shutdown."""

from __future__ import annotations

import asyncio
import time
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import msgspec
import structlog
from aiohttp import web

from events.store import EventStore, Notify
from projections.cache import AgentCache
from projections.projector import SERVICE_PROJECTIONS
from service import database, erasure
from service.api import idempotency
from service.actors import ActorRegistry
from service.api.errors import ApiError, domain_error_response, error_response
from service.api.http import CLIENT_REQUEST_ID, CTX, REQUEST_ID, SERVICES, Ctx
from service.api.openapi import openapi_document
from service.api.routes import add_routes
from service.api.uploads import sweep_expired
from service.auth import KeyCache, Principal
from service.config import Config, load_token_issuers
from service.domain.errors import DomainError
from service.models import tokens
from service.models.router import ModelRouter
from service.observability import client_trace_id, current_trace_id, flush_periodically
from service.api.oidc import KeysUnavailable, TokenRejected, TokenVerifier, looks_like_jwt
from service.runs.engine import RunEngine
from service.streams.hub import CHANNEL, StreamHub, notify_payload
from service.runs.execution import Deps
from service.tools.runtime import ToolRuntime, default_runtime
from service.webhooks.dispatcher import WebhookDispatcher

log = structlog.get_logger("threadline.http")
OPENAPI = web.AppKey("openapi", bytes)
STATIC = Path(__file__).resolve().parent / "static"
PUBLIC = {"/healthz", "/openapi.json", "/docs", "/chat", "/"}
# When Postgres shuts down (or a server process crashes), a query running then fails with
# AdminShutdownError / CrashShutdownError, and for the moment until the socket closes the pool may
# hand out that connection again, whose protocol is still waiting to finish the failed query:
# asyncpg's InternalClientError. The database went away; not a bug, so 503 as well.
DB_ERRORS = (asyncpg.PostgresConnectionError, asyncpg.ConnectionDoesNotExistError,
             asyncpg.InterfaceError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError,
             asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, asyncpg.InternalClientError,
             ConnectionError, OSError, asyncio.TimeoutError)


# Request ids need to be unique, not secret: a counter and a per-process tag avoid a syscall each.
_request_numbers = itertools.count(1)
_process_tag = os.urandom(4).hex()


@dataclass
class Services:
    config: Config
    db: asyncpg.Pool
    uploads: asyncpg.Pool   # apart from `db`: a slow uploader must not starve the API
    store: EventStore
    actors: ActorRegistry
    keys: KeyCache
    engine: RunEngine
    hub: StreamHub
    webhooks: WebhookDispatcher
    agents: AgentCache      # agents as run creation reads them
    tools: ToolRuntime      # the tools this server runs
    tokens: TokenVerifier | None = None     # OIDC/JWT bearer tokens, when issuers are configured


@web.middleware
async def api_middleware(request: web.Request, handler):
    """Request id, authentication, the error envelope and the request log: one layer, since each
    middleware layer costs every request."""
    # aiohttp hands undecodable header bytes over as surrogates, which no log line or database
    # column can hold: such a request is refused (and logged) before anything reads them.
    unreadable = next((name for name in _TEXT_HEADERS if not _utf8(request.headers.get(name, ""))), None)
    # The request id is always the server's own; what a client calls its request is kept apart, so
    # the log never records a client's claim as the server's word.
    request_id = f"req_{next(_request_numbers):x}{_process_tag}"
    client_request_id = None if unreadable else _client_request_id(request)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    if client_request_id is not None:
        structlog.contextvars.bind_contextvars(client_request_id=client_request_id)
    request[REQUEST_ID] = request_id
    request[CLIENT_REQUEST_ID] = client_request_id
    started = time.perf_counter()
    failed = True
    try:
        if unreadable is not None:
            log.warning("header_not_utf8", header=unreadable)
            raise ApiError(400, f"Invalid '{unreadable}' header: it is not valid UTF-8.", param=unreadable)
        if request.path not in PUBLIC and not request.path.startswith("/static/"):
            await _authenticate(request)
            if idempotency.applies(request):
                handler = idempotency.once(handler)
        response = await handler(request)
        failed = False
    except ApiError as exc:
        response = exc.response()
    except DomainError as exc:
        response = domain_error_response(exc)
    except web.HTTPException as exc:
        response = _http_error(request, exc)
    except asyncio.CancelledError:
        raise
    except DB_ERRORS:
        log.warning("database_unavailable", exc_info=True)
        response = error_response(503, "The service is temporarily unable to reach its database. Please retry.",
                          type_="server_error", code="service_unavailable")
    except Exception:  # noqa: BLE001 - the last line of defence: no stack trace ever reaches a client
        log.exception("unhandled_error", method=request.method, path=request.path)
        response = error_response(500, "The server had an error while processing your request.", type_="server_error")
    if failed and _under_way(request):
        # A stream failed after its status line and frames went out: an error answer would land in
        # the middle of its body and leave the client waiting. End the connection instead, so the
        # client sees the stream break and resumes from its last event id.
        log.warning("stream_broken", path=request.path, status=response.status)
        if request.transport is not None:
            request.transport.close()
        return response          # aiohttp finds the connection closed and writes nothing
    response.headers["x-request-id"] = request[REQUEST_ID]
    if request[CLIENT_REQUEST_ID] is not None and "x-ms-client-request-id" in request.headers:
        response.headers["x-ms-client-request-id"] = request[CLIENT_REQUEST_ID]     # Azure's convention
    log.info("request", method=request.method, path=request.path, status=response.status,
             ms=round((time.perf_counter() - started) * 1000, 2))
    return response


_TEXT_HEADERS = ("x-request-id", "x-ms-client-request-id", "Authorization", "api-key", "traceparent",
                 "Idempotency-Key", "Last-Event-ID")


def _client_request_id(request: web.Request) -> str | None:
    value = request.headers.get("x-request-id") or request.headers.get("x-ms-client-request-id")
    return value[:128] if value and value.isprintable() else None


def _utf8(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _under_way(request: web.Request) -> bool:
    """Whether the handler had begun its own response (a stream) before it failed."""
    writer = request.writer
    return writer is not None and writer.output_size > 0


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if exc.status == 404:
        return error_response(404, f"Invalid URL ({request.method} {request.path})")
    if exc.status == 405:
        return error_response(405, f"Method {request.method} is not allowed for {request.path}.")
    if exc.status == 413:
        return error_response(413, "Request body is too large.", code="request_too_large")
    return error_response(exc.status, exc.reason or "Bad request.")


async def _authenticate(request: web.Request) -> None:
    key = None
    authorization = request.headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer ":
        key = authorization[7:].strip()
    key = key or request.headers.get("api-key", "").strip() or None
    if key is None and request.method == "GET" and request.path.endswith("/stream"):
        key = request.query.get("api_key") or None    # EventSource cannot send headers
    services: Services = request.app[SERVICES]
    if key and services.tokens is not None and looks_like_jwt(key):
        principal = await _verify_token(services.tokens, key)
    else:
        principal = await services.keys.lookup(services.db, key) if key else None
    if principal is None:
        raise ApiError(401, "Incorrect API key provided." if key else
                       "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' or 'api-key: <key>'.",
                       code="invalid_api_key")
    url_project = request.match_info.get("project")
    if url_project is not None and url_project != principal.project:
        raise ApiError(404, f"No project found with name '{url_project[:64]}'.")
    # Postgres text cannot hold NUL: no object has such an id, and no filter can match such a value.
    if "\x00" in request.path:
        raise ApiError(404, f"Invalid URL ({request.method} {request.path})")
    for name, value in request.query.items():
        if "\x00" in name or "\x00" in value:
            raise ApiError(400, f"Invalid '{name[:64]}': the NUL character is not allowed.", param=name[:64])
    structlog.contextvars.bind_contextvars(project=principal.project)
    if "thread_id" in request.match_info:
        structlog.contextvars.bind_contextvars(thread_id=request.match_info["thread_id"])
    request[CTX] = Ctx(project=principal.project, key_id=principal.key_id, request_id=request[REQUEST_ID],
                       trace_id=current_trace_id(), client_request_id=request[CLIENT_REQUEST_ID],
                       client_trace_id=client_trace_id(request.headers.get("traceparent")))


async def _verify_token(tokens: TokenVerifier, token: str) -> Principal:
    """The principal of an OIDC/JWT bearer token, or the 401 (503 while its issuer is unreachable)."""
    try:
        return await tokens.verify(token)
    except TokenRejected as rejected:
        log.warning("bearer_token_rejected", reason=rejected.reason, issuer=rejected.issuer, kid=rejected.kid)
        raise ApiError(401, f"Invalid bearer token: {rejected.reason}.", code="invalid_api_key") from None
    except KeysUnavailable as unavailable:
        raise ApiError(503, f"The signing keys of token issuer '{unavailable}' cannot be fetched yet. Please retry.",
                       type_="server_error", code="service_unavailable") from None


async def healthz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(2):
            await request.app[SERVICES].db.fetchval("SELECT 1")
    except Exception:  # noqa: BLE001
        return error_response(503, "Database unavailable.", type_="server_error", code="service_unavailable")
    return web.json_response({"status": "ok"})


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def docs(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "reference.html")


async def chat(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "chat.html")


async def root(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/chat"})


def create_app(config: Config, database_url: str, tools: ToolRuntime | None = None) -> web.Application:
    tools = tools or default_runtime()
    app = web.Application(client_max_size=config.max_body_bytes,
                          middlewares=[api_middleware])
    app[OPENAPI] = msgspec.json.encode(openapi_document())

    async def lifecycle(app: web.Application):
        db = await database.connect(database_url, config.db_pool_size)
        await database.prepare(db)
        uploads = await database.connect(database_url, config.upload_connections)
        hub = StreamHub()
        agents = AgentCache()
        hub.on_append(agents.forget)
        store = EventStore(db, SERVICE_PROJECTIONS, notify=Notify(CHANNEL, notify_payload), on_commit=hub.publish)
        hub.listen(database_url)
        actors = ActorRegistry(store, db, idle_timeout=config.actor_idle_seconds, max_actors=config.max_actors)
        router = ModelRouter.from_config(config)
        await asyncio.to_thread(tokens.preload, "o200k_base", "cl100k_base")   # ~1 s each, off the loop
        engine = RunEngine(Deps(actors, db, router, config, tools))
        webhooks = WebhookDispatcher(db, store, database_url, config)
        webhooks.start()
        issuers = load_token_issuers(config.token_issuers_file)
        token_verifier = TokenVerifier(issuers) if issuers else None
        if token_verifier is not None:
            token_verifier.start()
        app[SERVICES] = Services(config, db, uploads, store, actors, KeyCache(), engine, hub, webhooks, agents,
                                 tools, token_verifier)
        background = [asyncio.create_task(flush_periodically()),
                      asyncio.create_task(sweep_expired(store, uploads, config.file_sweep_seconds))]
        if config.retention_days > 0:
            background.append(asyncio.create_task(
                erasure.retention_loop(actors, db, config.retention_days, config.retention_sweep_seconds)))
        yield
        for task in background:
            task.cancel()
        if token_verifier is not None:
            await token_verifier.close()
        await engine.close()
        await webhooks.close()
        await hub.close()
        await router.aclose()
        await actors.close()
        await store.close()
        await uploads.close()
        await db.close()

    app.cleanup_ctx.append(lifecycle)

    async def end_streams(app: web.Application) -> None:
        app[SERVICES].hub.shutdown()     # open streams would otherwise hold the shutdown for a minute

    app.on_shutdown.append(end_streams)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs)
    app.router.add_get("/chat", chat)
    app.router.add_get("/", root)
    app.router.add_static("/static/", STATIC)
    add_routes(app)
    return app
