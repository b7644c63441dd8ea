"""What a tool is to the run engine: the schema it offers the model, where it runs, and what its
calls record.

A tool is one `type` of the API's tool definitions (`function`, and the server-run tools to come).
The model sees every tool as chat-completions functions; the calls it writes come back here as
`ModelCall`s and leave as the tool's own call type (events/types.py `ToolCall`), which is what a
run step shows and what the log keeps (its content fields are marked `Sealed` there).

A client-run tool (`on_server = False`) parks the run in `requires_action` until the client
submits outputs; a server-run tool is executed by the engine and the run goes on by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import msgspec

from events.types import ToolCall

JSON = dict[str, Any]


class ModelCall(msgspec.Struct, frozen=True):
    """A call as the model wrote it: which of the offered functions, with what JSON arguments."""
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolContext:
    """What a server-run tool may know of the run it works for (ids it must check access against)."""
    project: str
    thread_id: str
    run_id: str
    definition: JSON            # the run's definition of this tool
    tool_resources: JSON        # the run's tool_resources


class ToolFailed(Exception):
    """A server-run tool could not do its work: the step and the run fail with this error."""

    def __init__(self, message: str, code: str = "server_error"):
        super().__init__(message)
        self.code = code
        self.message = message


class Tool(Protocol):
    type: ClassVar[str]         # the `type` of its definitions and of its calls
    on_server: ClassVar[bool]   # executed by the engine, or answered by the client

    def check(self, definition: JSON, param: str) -> None:
        """Refuse a malformed definition (domain InvalidRequest naming `param`)."""

    def offered(self, definition: JSON) -> list[JSON]:
        """The chat-completions tools a definition offers the model."""

    def names(self, definition: JSON) -> list[str]:
        """The function names its calls come back under."""

    def pending(self, call: ModelCall) -> ToolCall:
        """The call as its step shows it before it has an output."""

    async def execute(self, call: ModelCall, context: ToolContext) -> ToolCall:
        """A server-run call, done: the call with its result (ToolFailed if it cannot be done)."""

    def replay(self, call: ToolCall) -> tuple[ModelCall, str]:
        """A finished call as the model wrote it and the output it was given, for the next turn."""
