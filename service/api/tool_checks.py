"""Refusing tools this server does not run, where a client gives them: definitions (`tools`), their
resources (`tool_resources`) and message attachments. A tool type that is stored but never run
would be silently skipped by every run, so it is refused unless the operator opts into that
(THREADLINE_ALLOW_UNEXECUTED_TOOLS). The tool runtime knows which types run here."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from events.types import Attachment
from service.api.errors import ApiError
from service.api.http import services


def _lenient(request: web.Request) -> bool:
    return services(request).config.allow_unexecuted_tools


def check_tools(request: web.Request, tools: list[dict[str, Any]], param: str = "tools") -> None:
    services(request).tools.check(tools, param, allow_unexecuted=_lenient(request))


def check_tool_resources(request: web.Request, resources: dict[str, Any] | None,
                         param: str = "tool_resources") -> None:
    """Resources are for the tools this server runs; a resource of any other tool would never be used."""
    if _lenient(request):
        return
    runtime = services(request).tools
    for name in resources or {}:
        if name not in runtime.types:
            raise runtime.refusal(name, f"{param}.{name[:64]}")


def check_attachments(request: web.Request, attachments: list[Attachment], param: str = "attachments") -> None:
    """An attachment names the tools that read the file: they must be tools this server runs."""
    if _lenient(request):
        return
    runtime = services(request).tools
    for i, attachment in enumerate(attachments):
        for j, tool in enumerate(attachment.tools):
            kind = tool.get("type")
            if not isinstance(kind, str) or not kind:
                raise ApiError(400, f"Missing required parameter: '{param}[{i}].tools[{j}].type'.",
                               param=f"{param}[{i}].tools[{j}].type")
            if kind not in runtime.types:
                raise runtime.refusal(kind, f"{param}[{i}].tools[{j}].type")
