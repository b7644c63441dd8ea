"""What every handler shares: the request context, body decoding, list parameters, responses."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

import msgspec
from aiohttp import web

from events.store import EventMetadata
from projections import queries
from projections.queries import PageRequest
from service.api.errors import ApiError, from_validation, not_found

T = TypeVar("T")
SERVICES = web.AppKey("services", object)
_CURSOR = re.compile(r"[A-Za-z0-9_\-]{1,128}")
# ASCII digits only: str.isdigit() also takes '²' and other digits int() refuses.
_DIGITS = re.compile(r"[0-9]{1,10}")
_INTEGER = re.compile(r"-?[0-9]{1,20}")
MAX_VERSION = 2**31 - 1     # events.version is a Postgres integer
_JSON_TYPES = ("application/json", "text/plain", "application/octet-stream", "")
# A JSON \u0000 escape (not an escaped backslash followed by "u0000"): Postgres text/jsonb cannot store NUL.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


@dataclass(frozen=True, slots=True)
class Ctx:
    project: str
    key_id: str
    request_id: str                         # the server's own
    trace_id: str | None                    # the trace the server ran the request in, with tracing on
    client_request_id: str | None = None    # what the client calls its request (x-request-id), as it said
    client_trace_id: str | None = None      # the trace id of the client's traceparent, as it said

    def meta(self, causation: str) -> EventMetadata:
        return EventMetadata(request_id=self.request_id, project=self.project, api_key_id=self.key_id,
                             trace_id=self.trace_id, causation=causation, client_request_id=self.client_request_id,
                             client_trace_id=self.client_trace_id)


CTX = web.RequestKey("ctx", Ctx)
REQUEST_ID = web.RequestKey("request_id", str)
CLIENT_REQUEST_ID = web.RequestKey("client_request_id", object)


def ctx_of(request: web.Request) -> Ctx:
    return request[CTX]


def services(request: web.Request):
    """The running service's parts (pool, store, actors, config); see service.app.Services."""
    return request.app[SERVICES]


_decoders: dict[type, msgspec.json.Decoder] = {}


async def read_body(request: web.Request, type_: type[T]) -> T:
    """Decode and validate a JSON body; an empty body is an empty object."""
    ctype = request.content_type if request.headers.get("Content-Type") else ""
    if ctype not in _JSON_TYPES and not ctype.endswith("+json"):
        raise ApiError(415, f"Unsupported content type '{ctype}': send a JSON body (application/json).")
    raw = await request.read()
    if not raw.strip():
        raw = b"{}"
    if b"\\u0000" in raw and _NUL_ESCAPE.search(raw):
        raise ApiError(400, "Invalid request body: strings may not contain the NUL character (\\u0000).")
    decoder = _decoders.get(type_) or _decoders.setdefault(type_, msgspec.json.Decoder(type_))
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise from_validation(exc) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "We could not parse the JSON body of your request. The API expects a JSON "
                            "payload, but what was sent was not valid JSON.") from None


def event_version(raw: str) -> int | None:
    """A thread stream version from a client (`after`, `Last-Event-ID`, `as_of`), or None if it is not one."""
    if not _DIGITS.fullmatch(raw):
        return None
    value = int(raw)
    return value if value <= MAX_VERSION else None


def stream_position(raw: str) -> tuple[int, int] | None:
    """Where a client resumes a stream (`Last-Event-ID`, `after`), or None if it is no frame id:
    (the last whole event it has, how many frames of the next one it has). Version `v` is after that
    whole event; `v.k`, the id of the k-th frame of event v, is after k of event v's frames."""
    version, dot, k = raw.partition(".")
    version = event_version(version)
    if not dot:
        return None if version is None else (version, 0)
    frames = event_version(k)
    if version is None or frames is None or version == 0 or frames == 0:
        return None
    return version - 1, frames


def page_request(request: web.Request, default_limit: int = 20, max_limit: int = 100) -> PageRequest:
    q = request.query
    raw_limit = q.get("limit", str(default_limit))
    # int() alone would also take ' 5', '1_0' and '٣'.
    if not _INTEGER.fullmatch(raw_limit):
        raise ApiError(400, f"Invalid 'limit': expected an integer, got '{raw_limit[:40]}'.", param="limit")
    limit = int(raw_limit)
    if not 1 <= limit <= max_limit:
        raise ApiError(400, f"Invalid 'limit': {limit} is not between 1 and {max_limit}.", param="limit")
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, f"Invalid 'order': expected 'asc' or 'desc', got '{order[:40]}'.", param="order")
    cursors = {}
    for name in ("after", "before"):
        value = q.get(name) or None
        if value is not None and not _CURSOR.fullmatch(value):
            raise ApiError(400, f"Invalid '{name}': expected an object id.", param=name)
        cursors[name] = value
    return PageRequest(limit=limit, order=order, **cursors)


_encoder = msgspec.json.Encoder()


def json_ok(obj: Any) -> web.Response:
    return web.Response(body=_encoder.encode(obj), content_type="application/json")


def raw_ok(data: str | bytes) -> web.Response:
    """An object already stored as JSON text in a read model."""
    return web.Response(body=data.encode() if isinstance(data, str) else data, content_type="application/json")


Handler = Callable[[web.Request], Awaitable[web.Response]]


def project_object(kind: str, id_param: str, query: Callable[..., Awaitable[str | None]]) -> Handler:
    """GET of one object of the caller's project, as its read model stores it; 404 naming it otherwise."""
    async def get(request: web.Request) -> web.Response:
        object_id = request.match_info[id_param]
        data = await query(services(request).db, ctx_of(request).project, object_id)
        if data is None:
            raise not_found(kind, object_id)
        return raw_ok(data)
    get.__name__ = f"get_{kind}"      # the OpenAPI document's operationId: getAssistant
    return get


def project_page(kinds: str, query: Callable[..., Awaitable[Any]]) -> Handler:
    """GET of a page of the caller's project's objects of one kind (`kinds`: its plural)."""
    async def list_page(request: web.Request) -> web.Response:
        page = await query(services(request).db, ctx_of(request).project, page_request(request))
        return raw_ok(page.to_json())
    list_page.__name__ = f"list_{kinds}"
    return list_page


async def require_thread(request: web.Request, thread_id: str) -> None:
    """404 naming the thread unless the caller's project has it."""
    if not await queries.thread_exists(services(request).db, ctx_of(request).project, thread_id):
        raise not_found("thread", thread_id)


async def not_found_in_thread(request: web.Request, thread_id: str, kind: str, object_id: str) -> ApiError:
    """The 404 for an object of a thread that was not found: the thread's, if the thread is what is missing."""
    await require_thread(request, thread_id)
    return not_found(kind, object_id)
