"""The tool runtime: the one way the run engine and the API reach tools.

The API asks it which tool types this server runs and to check definitions; the engine asks it what
to offer the model, which calls the server answers itself, how to execute them and how to replay a
finished round to the model. A tool type joins by being registered here (`default_runtime`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Iterable

import msgspec

from events.types import ToolCall
from service.domain.errors import InvalidRequest
from service.tools.base import JSON, ModelCall, Tool, ToolContext, ToolFailed
from service.tools.function import FunctionTool

@dataclass
class Offer:
    """What one run offers the model: chat-completions tools, and which tool answers each name."""
    chat_tools: list[JSON] = field(default_factory=list)
    by_name: dict[str, tuple[Tool, JSON]] = field(default_factory=dict)


class ToolRuntime:
    def __init__(self, tools: Iterable[Tool], *, execute_timeout: float = 300.0):
        self.tools: dict[str, Tool] = {t.type: t for t in tools}
        self.execute_timeout = execute_timeout
        self._client = self.tools.get("function") or FunctionTool()

    @property
    def types(self) -> tuple[str, ...]:
        """The tool types this server runs; every other type is refused where it is given."""
        return tuple(self.tools)

    def check(self, definitions: list[JSON], param: str = "tools", *, allow_unexecuted: bool = False) -> None:
        """Every definition must be of a type this server runs (or, with allow_unexecuted, at least
        name a type) and well-formed for its tool."""
        for i, definition in enumerate(definitions):
            kind = definition.get("type")
            if not isinstance(kind, str) or not kind:
                raise InvalidRequest(f"Missing required parameter: '{param}[{i}].type'.", param=f"{param}[{i}].type")
            tool = self.tools.get(kind)
            if tool is None:
                if allow_unexecuted:
                    continue
                raise self.refusal(kind, f"{param}[{i}].type")
            tool.check(definition, f"{param}[{i}]")

    def refusal(self, kind: str, param: str) -> InvalidRequest:
        supported = ", ".join(f"'{t}'" for t in self.types)
        return InvalidRequest(f"Invalid value: '{kind[:64]}'. Supported values are: {supported}. This server does not "
                              f"run '{kind[:64]}' tools.", param=param, code="invalid_value")

    def offer(self, definitions: list[JSON]) -> Offer:
        """What a run with these definitions offers the model (definitions of types not run here,
        stored only with THREADLINE_ALLOW_UNEXECUTED_TOOLS, offer nothing)."""
        offer = Offer()
        for definition in definitions:
            tool = self.tools.get(definition.get("type"))
            if tool is None:
                continue
            offer.chat_tools += tool.offered(definition)
            for name in tool.names(definition):
                offer.by_name.setdefault(name, (tool, definition))
        return offer

    def on_server(self, offer: Offer, name: str) -> bool:
        found = offer.by_name.get(name)
        return found is not None and found[0].on_server

    def pending(self, offer: Offer, call: ModelCall) -> ToolCall:
        """A call the client must answer. A name the run did not offer goes to the client as a
        function call too: the model asked for it, and only the client can say it does not exist."""
        found = offer.by_name.get(call.name)
        tool = found[0] if found is not None and not found[0].on_server else self._client
        return tool.pending(call)

    async def execute(self, offer: Offer, call: ModelCall, context: dict[str, Any]) -> ToolCall:
        """A server-run call, done within the runtime's time limit."""
        tool, definition = offer.by_name[call.name]
        ctx = ToolContext(definition=definition, **context)
        try:
            return await asyncio.wait_for(tool.execute(call, ctx), self.execute_timeout)
        except asyncio.TimeoutError:
            raise ToolFailed(f"{tool.type} did not finish within {self.execute_timeout:g} s.") from None

    def replay(self, calls: list[ToolCall]) -> list[JSON]:
        """A finished round as the chat messages that show it to the model: the assistant's calls,
        then one tool message with each output."""
        replayed = [self.tools.get(c.type, self._client).replay(c) for c in calls]
        return [{"role": "assistant", "content": None, "tool_calls": [
                    {"id": m.id, "type": "function", "function": {"name": m.name, "arguments": m.arguments}}
                    for m, _ in replayed]},
                *({"role": "tool", "tool_call_id": m.id, "content": output} for m, output in replayed)]

    @staticmethod
    def call_of(stored: JSON) -> ToolCall:
        """A call as a step's stored JSON holds it."""
        return msgspec.convert(stored, ToolCall)


def default_runtime() -> ToolRuntime:
    """The tools this server runs."""
    return ToolRuntime([FunctionTool()])
