"""Reading a chat-completions stream: `chat.completion.chunk` objects in, ModelChunks out.

Servers differ in details this smooths over: a tool call without an id gets one, arguments sent
before the call's name wait for it, a stream with tool calls that finishes with "stop" finishes
with "tool_calls", and a server that reports no usage gets it counted offline.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from service.models.base import Finished, ModelChunk, ModelError, ModelRequest, TextDelta, ToolCallDelta, Usage
from service.models.builtin import new_call_id
from service.models.tokens import count_text, count_tools


class Retryable(Exception):
    """A failure worth another try, and the ModelError it becomes when there is none."""

    def __init__(self, error: ModelError, retry_after: float | None = None):
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


class _WireFunction(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _WireToolCall(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    function: _WireFunction | None = None


class _WireDelta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_WireToolCall] | None = None


class _WireChoice(msgspec.Struct):
    index: int = 0
    delta: _WireDelta | None = None
    finish_reason: str | None = None


class _WireUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _WireChunk(msgspec.Struct):
    choices: list[_WireChoice] | None = None
    usage: _WireUsage | None = None


class _ToolCall(msgspec.Struct):
    index: int
    id: str | None = None
    name: str | None = None
    announced: bool = False
    pending_arguments: str = ""   # arguments that came before the call's name


class ChunkReader:
    """Turns chat.completion.chunk objects into ModelChunks; finish() adds Usage and Finished."""

    def __init__(self, encoding: str, request: ModelRequest):
        self.encoding = encoding
        self.request = request
        self.calls: dict[int, _ToolCall] = {}
        self.last_call: _ToolCall | None = None
        self.finish_reason: str | None = None
        self.usage: _WireUsage | None = None
        self.produced: list[str] = []  # for counting usage when the server reports none

    def feed(self, chunk: Any) -> list[ModelChunk]:
        raw = chunk
        wire = msgspec.convert(raw, _WireChunk)
        if wire.choices is None and wire.usage is None:
            raise ValueError(f"not a chat.completion.chunk: {str(raw)[:200]}")
        if wire.usage is not None and wire.usage.prompt_tokens is not None \
                and wire.usage.completion_tokens is not None:
            self.usage = wire.usage
        out: list[ModelChunk] = []
        for choice in wire.choices or ():
            if choice.index != 0:
                continue
            delta = choice.delta or _WireDelta()
            if delta.content:
                self.produced.append(delta.content)
                out.append(TextDelta(delta.content))
            for piece in delta.tool_calls or ():
                out.extend(self._tool_call(piece))
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        return out

    def _tool_call(self, piece: _WireToolCall) -> list[ModelChunk]:
        call = self._call_for(piece)
        function = piece.function or _WireFunction()
        arguments = function.arguments or ""
        if call.id is None and piece.id:
            call.id = piece.id
        if call.name is None and function.name:
            call.name = function.name
        if not call.announced:
            if call.name is None:
                call.pending_arguments += arguments
                return []
            call.announced = True
            call.id = call.id or new_call_id()
            arguments = call.pending_arguments + arguments
            self.produced.append(call.name)
            self.produced.append(arguments)
            return [ToolCallDelta(call.index, id=call.id, name=call.name, arguments=arguments)]
        if not arguments:
            return []
        self.produced.append(arguments)
        return [ToolCallDelta(call.index, arguments=arguments)]

    def _call_for(self, piece: _WireToolCall) -> _ToolCall:
        index = piece.index
        if index is None:
            # Some servers leave out the index: a new id starts a call, anything else continues one.
            known = next((c for c in self.calls.values() if piece.id and c.id == piece.id), None)
            if known is not None:
                index = known.index
            elif piece.id or self.last_call is None:
                index = len(self.calls)
            else:
                index = self.last_call.index
        call = self.calls.get(index)
        if call is None:
            call = self.calls[index] = _ToolCall(index)
        self.last_call = call
        return call

    def finish(self) -> list[ModelChunk]:
        reason = self.finish_reason
        if reason is None:
            raise Retryable(ModelError("server_error", "The model's stream ended before it finished."))
        if reason == "error":
            raise ModelError("server_error", "The model stopped with an error.")
        if any(not call.announced for call in self.calls.values()):
            raise ModelError("server_error", "The model sent a tool call without a name.")
        usage = self.usage or _WireUsage(
            self.request.prompt_tokens(self.encoding) + count_tools(self.request.tools, self.encoding),
            count_text("".join(self.produced), self.encoding))
        return [Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0), Finished(self._finished_reason(reason))]

    def _finished_reason(self, reason: str) -> Literal["stop", "tool_calls", "length", "content_filter"]:
        if reason in ("length", "content_filter"):
            return reason  # type: ignore[return-value]
        if reason in ("tool_calls", "function_call") or self.calls:
            return "tool_calls"
        return "stop"
