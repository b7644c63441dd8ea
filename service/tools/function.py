"""`function` tools: the client runs them. The model's call is shown to the client in
`required_action`, and the run waits for its output."""

from __future__ import annotations

import re
from typing import ClassVar

from events.types import FunctionCall, FunctionCallBody, ToolCall
from service.domain.errors import InvalidRequest
from service.tools.base import JSON, ModelCall, ToolContext

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class FunctionTool:
    type: ClassVar[str] = "function"
    on_server: ClassVar[bool] = False

    def check(self, definition: JSON, param: str) -> None:
        fn = definition.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRequest(f"Missing required parameter: '{param}.function.name'.", param=f"{param}.function.name")
        if not _NAME.match(fn["name"]):
            raise InvalidRequest(f"Invalid '{param}.function.name': string does not match pattern. Expected a string "
                                 "that matches the pattern '^[a-zA-Z0-9_-]+$' (at most 64).",
                                 param=f"{param}.function.name")
        if "parameters" in fn and not isinstance(fn["parameters"], dict):
            raise InvalidRequest(f"Invalid type for '{param}.function.parameters': expected an object.",
                                 param=f"{param}.function.parameters")

    def offered(self, definition: JSON) -> list[JSON]:
        return [{"type": "function", "function": definition["function"]}]

    def names(self, definition: JSON) -> list[str]:
        return [definition["function"]["name"]]

    def pending(self, call: ModelCall) -> ToolCall:
        return FunctionCall(id=call.id, function=FunctionCallBody(name=call.name, arguments=call.arguments))

    async def execute(self, call: ModelCall, context: ToolContext) -> ToolCall:
        raise TypeError("function tools are run by the client")

    def replay(self, call: ToolCall) -> tuple[ModelCall, str]:
        return ModelCall(call.id, call.function.name, call.function.arguments), call.function.output or ""
