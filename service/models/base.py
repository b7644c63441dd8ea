"""What the run engine asks of a model provider, and what it gets back.

A provider turns a ModelRequest (chat messages in the OpenAI chat-completions shape) into an async
stream of ModelChunks. Providers raise ModelError for failures the run should report; they retry
what is worth retrying (timeouts, 429, 5xx) themselves, with bounded backoff.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Literal, Protocol

import msgspec

from service.models.tokens import count_messages

JSON = dict[str, Any]


class ModelRequest(msgspec.Struct, kw_only=True):
    model: str                                  # the name as the run has it (routing already done)
    messages: list[JSON]                        # chat-completions messages: system/user/assistant/tool
    tools: list[JSON] = []                      # chat-completions tools: [{"type": "function", "function": {...}}]
    tool_choice: str | JSON | None = None       # "none" | "auto" | "required" | {"type": "function", ...}
    parallel_tool_calls: bool | None = None
    response_format: JSON | None = None         # {"type": "json_object"} | {"type": "json_schema", ...}
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None               # completion tokens this call may produce
    reasoning_effort: str | None = None         # for reasoning models: "low", "high", ... as the run has it
    # (encoding, count_messages(messages, encoding)) when the caller has counted them already
    counted: tuple[str, int] | None = None

    def prompt_tokens(self, encoding: str) -> int:
        """Prompt tokens of the messages in `encoding`: a long thread is not counted twice."""
        if self.counted is not None and self.counted[0] == encoding:
            return self.counted[1]
        return count_messages(self.messages, encoding)


class TextDelta(msgspec.Struct, tag="text"):
    text: str


class ToolCallDelta(msgspec.Struct, tag="tool_call"):
    """A piece of one tool call; the first piece of a call carries its id and name."""
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class Usage(msgspec.Struct, tag="usage"):
    prompt_tokens: int
    completion_tokens: int


class Finished(msgspec.Struct, tag="finished"):
    reason: Literal["stop", "tool_calls", "length", "content_filter"]


ModelChunk = TextDelta | ToolCallDelta | Usage | Finished


class ModelError(Exception):
    """A provider failure that ends the run `failed` with this last_error."""

    def __init__(self, code: Literal["server_error", "rate_limit_exceeded", "invalid_prompt"], message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class ModelInfo(msgspec.Struct, frozen=True):
    context_window: int = 128_000
    encoding: str = "o200k_base"                # quicktok encoding used to count tokens offline


class Provider(Protocol):
    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]: ...
