"""A provider for any server that speaks OpenAI chat completions: OpenAI, Azure OpenAI, vLLM, Ollama,
llama.cpp, LM Studio, ...

Requests stream with usage included. The openai client's own retries are off: it would retry a
call whose first chunks we already passed on, and the run would see text twice. We retry here,
and only while nothing of the answer has been yielded. Every wait (for the response, and then for
each chunk) is bounded by `Timeouts.read`, so a server that hangs mid-stream fails the call.

Servers differ in details this module smooths over: a tool call without an id gets one, a stream
with tool calls that finishes with "stop" finishes with "tool_calls", and a server that reports no
usage gets it counted offline.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, AsyncIterator, Literal

import httpx2
import msgspec
import openai
import structlog

from service.models.base import (
    Finished, JSON, ModelChunk, ModelError, ModelRequest, TextDelta, ToolCallDelta, Usage,
)
from service.models.builtin import new_call_id
from service.models.tokens import count_text, count_tools
from service.observability import Redactor

log = structlog.get_logger("threadline.models")

MaxTokensParam = Literal["max_tokens", "max_completion_tokens"]


class Timeouts(msgspec.Struct, frozen=True):
    connect: float = 10.0
    read: float = 120.0     # longest wait for the response headers, and then for each next chunk


class RetryPolicy(msgspec.Struct, frozen=True):
    attempts: int = 4       # tries in all, the first one included
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, failed_attempts: int, retry_after: float | None = None) -> float:
        """Exponential backoff with full jitter; a server's Retry-After wins while it is within
        max_delay."""
        if retry_after is not None and 0 <= retry_after <= self.max_delay:
            return retry_after
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (failed_attempts - 1)))


class OpenAICompatProvider:
    def __init__(self, client: openai.AsyncOpenAI, model: str, *, encoding: str = "o200k_base",
                 timeouts: Timeouts = Timeouts(), retry: RetryPolicy = RetryPolicy(),
                 max_tokens_param: MaxTokensParam = "max_tokens"):
        self.client = client
        self.model = model                      # the name the server knows (Azure: the deployment)
        self.encoding = encoding
        self.timeouts = timeouts
        self.retry = retry
        # max_tokens is what vLLM, Ollama and llama.cpp read; OpenAI's reasoning models want
        # max_completion_tokens instead.
        self.max_tokens_param = max_tokens_param

    @classmethod
    def create(cls, *, model: str, api_key: str, base_url: str | None = None,
               azure_deployment: str | None = None, api_version: str | None = None,
               encoding: str = "o200k_base", timeouts: Timeouts = Timeouts(),
               retry: RetryPolicy = RetryPolicy(),
               max_tokens_param: MaxTokensParam = "max_tokens") -> "OpenAICompatProvider":
        """A provider with its own client: Azure OpenAI when azure_deployment or api_version is
        given (base_url is then the resource endpoint), plain OpenAI-compatible otherwise."""
        timeout = httpx2.Timeout(timeouts.read, connect=timeouts.connect)
        client: openai.AsyncOpenAI
        if azure_deployment is not None or api_version is not None:
            client = openai.AsyncAzureOpenAI(
                azure_endpoint=base_url, azure_deployment=azure_deployment, api_version=api_version,
                api_key=api_key, timeout=timeout, max_retries=0)
            model = azure_deployment or model
        else:
            client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
        return cls(client, model, encoding=encoding, timeouts=timeouts, retry=retry,
                   max_tokens_param=max_tokens_param)

    async def aclose(self) -> None:
        await self.client.close()

    def request_body(self, request: ModelRequest) -> JSON:
        """The chat.completions.create arguments for request."""
        body: JSON = {
            "model": self.model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = request.tools
            # Servers reject these without tools (parallel_tool_calls especially).
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
            if request.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = request.parallel_tool_calls
        if request.response_format is not None:
            body["response_format"] = request.response_format
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.max_tokens is not None:
            body[self.max_tokens_param] = request.max_tokens
        if request.reasoning_effort is not None:
            body["reasoning_effort"] = request.reasoning_effort
        return body

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        body = self.request_body(request)
        attempt = 0
        while True:
            attempt += 1
            yielded = False
            try:
                async for chunk in self._attempt(body, request):
                    yielded = True
                    yield chunk
                return
            except _Retryable as failure:
                if yielded or attempt >= self.retry.attempts:
                    raise failure.error from None
                delay = self.retry.delay(attempt, failure.retry_after)
                log.warning("model_call_retry", model=self.model, attempt=attempt, code=failure.error.code,
                            reason=failure.error.message, delay=round(delay, 3))
                await asyncio.sleep(delay)

    async def _attempt(self, body: JSON, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        try:
            async with asyncio.timeout(self.timeouts.connect + self.timeouts.read):
                response = await self.client.chat.completions.create(**body)
        except Exception as error:
            raise self._without_secrets(_classify(error)) from error
        try:
            reader = _StreamReader(self.encoding, request)
            while True:
                try:
                    async with asyncio.timeout(self.timeouts.read):
                        chunk = await anext(response)
                    pieces = reader.feed(chunk)
                except StopAsyncIteration:
                    break
                except Exception as error:
                    raise self._without_secrets(_classify(error)) from error
                for piece in pieces:
                    yield piece
            for piece in reader.finish():
                yield piece
        finally:
            await response.close()


    def _without_secrets(self, failure: Exception) -> Exception:
        """A provider may quote the key it was sent in its error message, which becomes the run's
        `last_error` — read by every user of the project, and kept in the log for good. The
        operator's key (and anything shaped like a secret) comes out first."""
        error = failure.error if isinstance(failure, _Retryable) else failure
        if isinstance(error, ModelError):
            key = self.client.api_key or ""
            message = error.message.replace(key, "[redacted]") if len(key) >= 8 else error.message
            error.message = _SECRETS(message)
            error.args = (error.message,)
        return failure


# --- failures ------------------------------------------------------------------------------------

_SECRETS = Redactor()          # secret shapes (bearer tokens, Threadline keys, passwords in URLs)

class _Retryable(Exception):
    """A failure worth another try, and the ModelError it becomes when there is none."""

    def __init__(self, error: ModelError, retry_after: float | None = None):
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


def _classify(error: Exception) -> Exception:
    """What a failure of the client or the stream becomes: _Retryable or a final ModelError."""
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        message = _provider_message(error)
        if status == 429:
            return _Retryable(ModelError("rate_limit_exceeded", message), _retry_after(error.response))
        if status == 408 or status >= 500:
            return _Retryable(ModelError("server_error", message))
        if status in (401, 403, 404):
            # The provider's key, permissions or model name: the server's configuration, not the prompt.
            return ModelError("server_error", f"The model provider refused the call (HTTP {status}): {message}")
        return ModelError("invalid_prompt", message)
    if isinstance(error, (openai.APITimeoutError, TimeoutError)):
        return _Retryable(ModelError("server_error", "The model did not answer in time."))
    if isinstance(error, openai.APIConnectionError):
        return _Retryable(ModelError("server_error", f"The connection to the model failed: {error.__cause__ or error}"))
    if isinstance(error, openai.APIError):
        # An error event inside the stream (e.g. the server overloaded after accepting the call).
        return _Retryable(ModelError("server_error", error.message))
    if isinstance(error, (ValueError, TypeError, AttributeError, msgspec.ValidationError)):
        return ModelError("server_error", f"The model sent a response that cannot be read: {error}")
    if isinstance(error, (OSError, httpx2.HTTPError)) or type(error).__module__.startswith("anyio"):
        return _Retryable(ModelError("server_error", f"Lost the connection to the model: {error!r}"))
    return ModelError("server_error", f"The model call failed: {error!r}")


def _provider_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    if isinstance(body, str) and body:
        return body
    return f"The model answered HTTP {error.status_code}."


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare enough to fall back to our own backoff


# --- the stream ----------------------------------------------------------------------------------

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


class _StreamReader:
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
        raw = chunk.to_dict(warnings=False) if isinstance(chunk, openai.BaseModel) else chunk
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
            raise _Retryable(ModelError("server_error", "The model's stream ended before it finished."))
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
