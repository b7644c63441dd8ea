"""/openapi.json, generated from the route table and the msgspec types the API really uses."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from service.api.errors import ErrorEnvelope
from service.api.files import FILES_PAGE_LIMIT, PURPOSES
from service.api.http import MAX_VERSION
from service.api.routes import ROUTES

_REF = "#/components/schemas/{name}"
_QUERY_SCHEMAS = {
    "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    "order": {"type": "string", "enum": ["asc", "desc"], "default": "desc"},
    "after": {"type": "string", "pattern": "^[A-Za-z0-9_-]{0,128}$",
              "description": "An object id: the page starts after it (empty: no cursor)."},
    "before": {"type": "string", "pattern": "^[A-Za-z0-9_-]{0,128}$",
               "description": "An object id: the page ends before it (empty: no cursor)."},
    "run_id": {"type": "string", "description": "Only messages created by this run."},
    "purpose": {"type": "string", "description": "Only files with this purpose."},
    "limit@version": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    "limit@/files": {"type": "integer", "minimum": 1, "maximum": FILES_PAGE_LIMIT, "default": FILES_PAGE_LIMIT},
    "after@version": {"type": "integer", "minimum": 0, "maximum": MAX_VERSION,
                  "description": "Resume after this event id (the same as the Last-Event-ID header)."},
    "after@sse": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$",
                  "description": "Resume after this frame id (the same as the Last-Event-ID header): `v` after "
                                 "the whole event of version v, `v.k` after its k-th frame."},
    "api_key": {"type": "string", "description": "The API key, for clients that cannot send headers "
                                                 "(EventSource); only on GET …/stream."},
    "as_of": {"type": "string", "minLength": 1,
              "description": "An event version of the thread, or an RFC 3339 time: the thread as it was then, "
                             "rebuilt from its log."},
    "type": {"type": "string", "description": "Only events of these types (comma-separated)."},
    "status": {"type": "string", "enum": ["pending", "delivered", "dead"], "description": "Only deliveries in this state."},
    "include[]": {"type": "string", "enum": ["step_details.tool_calls[*].file_search.results[*].content"],
                  "description": "Extra fields to include (comma-separated when several)."},
}
_ERRORS = {"400": "Invalid request", "401": "Missing or wrong API key", "404": "No such object",
           "413": "Body too large", "415": "Unsupported content type", "503": "Database unavailable"}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]*[!-~][ -~]*$"},
    "description": "Retrying with the same key returns the first response (header `Idempotent-Replayed: true`) "
                   "and creates nothing; the same key with a different request is a 400. Kept for 24 hours.",
}


def openapi_document() -> dict[str, Any]:
    types = {ErrorEnvelope}
    for r in ROUTES:
        types.update(t for t in (r.body, r.response) if t is not None)
    ordered = sorted(types, key=lambda t: t.__name__)
    schemas, components = msgspec.json.schema_components(ordered, ref_template=_REF)
    refs = dict(zip(ordered, schemas))
    paths: dict[str, dict] = {}
    for r in ROUTES:
        op: dict[str, Any] = {
            "operationId": _operation_id(r.handler.__name__),
            "summary": r.summary,
            "tags": [r.tag],
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in re.findall(r"{(\w+)}", r.path)
            ] + [{"name": q, "in": "query", "required": False,
                  "schema": _QUERY_SCHEMAS.get(f"{q}@{r.path}") or
                            (_QUERY_SCHEMAS.get(f"{q}@sse") if r.sse else None) or
                            (_QUERY_SCHEMAS.get(f"{q}@version") if r.versioned else None) or _QUERY_SCHEMAS[q]}
                 for q in r.query],
            "responses": {
                "200": _ok(r, refs),
                **{code: {"description": text, "content": {"application/json": {"schema": refs[ErrorEnvelope]}}}
                   for code, text in _ERRORS.items()},
            },
        }
        if r.method == "POST":
            op["parameters"].append(_IDEMPOTENCY_KEY)
            op["responses"]["409"] = {"description": "A request with this Idempotency-Key is still running",
                                      "content": {"application/json": {"schema": refs[ErrorEnvelope]}}}
        if r.body is not None:
            # An absent body is an empty object, so it may be left out only when no field is required.
            required = any(f.required for f in msgspec.structs.fields(r.body))
            op["requestBody"] = {"required": required, "content": {"application/json": {"schema": refs[r.body]}}}
        if r.multipart:
            op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": _FORMS[r.path]}}}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Threadline", "version": "0.1.0",
                 "description": "Self-hosted, event-sourced agent service speaking the Assistants v2 / "
                                "Foundry Agent Service (classic) wire API. Every path is also served under "
                                "/v1, /openai and /api/projects/{project}."},
        "servers": [{"url": "/"}, {"url": "/v1"}],
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "api-key"}},
        },
    }


# Before OpenAPI 3.2's `itemSchema`, an event stream's `schema` describes each event, not the stream.
_FORMS = {     # the multipart bodies, by path
    "/files": {
        "type": "object", "required": ["purpose", "file"], "additionalProperties": False,
        "properties": {"purpose": {"type": "string", "enum": list(PURPOSES)},
                       "file": {"type": "string", "format": "binary"},
                       "filename": {"type": "string", "maxLength": 512,
                                    "description": "Overrides the file part's own filename."},
                       "expires_after[anchor]": {"type": "string", "enum": ["created_at"],
                                                 "description": "With expires_after[seconds]: the file is deleted "
                                                                "that long after it was created."},
                       "expires_after[seconds]": {"type": "integer", "minimum": 3600, "maximum": 2_592_000}},
    },
    "/uploads/{upload_id}/parts": {
        "type": "object", "required": ["data"], "additionalProperties": False,
        "properties": {"data": {"type": "string", "format": "binary", "description": "At most 64 MB."}},
    },
}

_SSE_EVENT = {
    "type": "object", "required": ["event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$",
               "description": "The frame's own id (absent on ping and done): an event of version v that makes "
                              "several frames numbers them v.1, v.2, … and its last one v."},
        "event": {"type": "string", "description": "thread.run.*, thread.run.step.*, thread.message.*, ping, done"},
        "data": {"type": "string", "description": "One JSON line; `[DONE]` on the done event."},
    },
}
_SSE_DESCRIPTION = ("Server-sent events: `id:` (the frame's own id: `v.k`, the last frame of event v `v`), `event:` "
                    "(thread.run.*, thread.run.step.*, thread.message.*, ping) and one `data:` JSON line each; "
                    "`event: done` / `data: [DONE]` when the run ends.")


def _ok(route, refs) -> dict:
    if route.sse:
        return {"description": _SSE_DESCRIPTION, "content": {"text/event-stream": {"schema": _SSE_EVENT}}}
    if route.binary:
        return {"description": "The file's bytes",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    ok = {"description": "OK", "content": {"application/json": {"schema": refs[route.response]}}}
    if route.body is not None and "stream" in route.body.__struct_fields__:   # `"stream": true` answers SSE
        ok["description"] = "The object; with `\"stream\": true`, the run's events instead. " + _SSE_DESCRIPTION
        ok["content"]["text/event-stream"] = {"schema": _SSE_EVENT}
    return ok


def _operation_id(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)
