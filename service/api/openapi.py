"""/openapi.json, generated from the route table and the msgspec types the API really uses."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from service.api.errors import ErrorEnvelope
from service.api.routes import ROUTES

_REF = "#/components/schemas/{name}"
_QUERY_SCHEMAS = {
    "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    "order": {"type": "string", "enum": ["asc", "desc"], "default": "desc"},
    "after": {"type": "string", "description": "An object id: the page starts after it."},
    "before": {"type": "string", "description": "An object id: the page ends before it."},
    "run_id": {"type": "string", "description": "Only messages created by this run."},
    "purpose": {"type": "string", "description": "Only files with this purpose."},
    "after@version": {"type": "string", "pattern": "^[0-9]+$",
                  "description": "Resume after this event id (the same as the Last-Event-ID header)."},
    "api_key": {"type": "string", "description": "The API key, for clients that cannot send headers "
                                                 "(EventSource); only on GET …/stream."},
    "as_of": {"type": "string", "description": "An event version of the thread, or an RFC 3339 time: the "
                                               "thread as it was then, rebuilt from its log."},
    "type": {"type": "string", "description": "Only events of these types (comma-separated)."},
    "status": {"type": "string", "enum": ["pending", "delivered", "dead"], "description": "Only deliveries in this state."},
    "include[]": {"type": "string", "enum": ["step_details.tool_calls[*].file_search.results[*].content"],
                  "description": "Extra fields to include (comma-separated when several)."},
}
_ERRORS = {"400": "Invalid request", "401": "Missing or wrong API key", "404": "No such object",
           "413": "Body too large", "415": "Unsupported content type", "503": "Database unavailable"}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 255},
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
                  "schema": _QUERY_SCHEMAS.get(f"{q}@version" if r.versioned else q) or _QUERY_SCHEMAS[q]}
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
            op["requestBody"] = {"required": False, "content": {"application/json": {"schema": refs[r.body]}}}
        if r.multipart:
            op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["purpose", "file"],
                "properties": {"purpose": {"type": "string"}, "file": {"type": "string", "format": "binary"}},
            }}}}
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


def _ok(route, refs) -> dict:
    if route.sse:
        return {"description": "Server-sent events: `id:` (the event's version in the thread's stream), "
                               "`event:` (thread.run.*, thread.run.step.*, thread.message.*, ping) and one "
                               "`data:` JSON line each; `event: done` / `data: [DONE]` when the run ends.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}}
    if route.binary:
        return {"description": "The file's bytes",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    return {"description": "OK", "content": {"application/json": {"schema": refs[route.response]}}}


def _operation_id(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)
