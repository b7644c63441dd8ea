"""A provider for any server that speaks OpenAI chat completions: OpenAI, Azure OpenAI, vLLM, Ollama,
llama.cpp, LM Studio, ...

Requests go through the service's one outbound HTTP stack (service/outbound/client.py) and stream
as server-sent events with usage included. We retry, and only while nothing of the answer has been
yielded: a retry after the first chunks were passed on would show the run its text twice. Every
wait (for the response, and then for each chunk) is bounded by `Timeouts.read`, so a server that
hangs mid-stream fails the call.

The stream's chunks are read by service/models/chat_chunks.py, which smooths over how servers differ.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, AsyncIterator, Literal
from urllib.parse import quote

import aiohttp
import msgspec
import structlog

from service.models.base import JSON, ModelChunk, ModelError, ModelRequest
from service.models.chat_chunks import ChunkReader, Retryable
from service.observability import Redactor
from service.outbound.client import OutboundClient
from service.outbound.policy import AddressPolicy

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


OPENAI_BASE_URL = "https://api.openai.com/v1"
MAX_ERROR_BODY = 65_536     # bytes of a failed call's answer read for its message


class OpenAICompatProvider:
    def __init__(self, http: OutboundClient, url: str, headers: dict[str, str], model: str, *,
                 api_key: str = "", encoding: str = "o200k_base", timeouts: Timeouts = Timeouts(),
                 retry: RetryPolicy = RetryPolicy(), max_tokens_param: MaxTokensParam = "max_tokens",
                 owns_http: bool = False):
        self.http = http
        self.url = url                          # where chat completions are posted
        self.headers = headers
        self.model = model                      # the name the server knows (Azure: the deployment)
        self.api_key = api_key
        self.encoding = encoding
        self.timeouts = timeouts
        self.retry = retry
        # max_tokens is what vLLM, Ollama and llama.cpp read; OpenAI's reasoning models want
        # max_completion_tokens instead.
        self.max_tokens_param = max_tokens_param
        self.owns_http = owns_http

    @classmethod
    def create(cls, *, model: str, api_key: str, base_url: str | None = None,
               azure_deployment: str | None = None, api_version: str | None = None,
               encoding: str = "o200k_base", timeouts: Timeouts = Timeouts(),
               retry: RetryPolicy = RetryPolicy(), max_tokens_param: MaxTokensParam = "max_tokens",
               http: OutboundClient | None = None) -> "OpenAICompatProvider":
        """A provider for Azure OpenAI when azure_deployment or api_version is given (base_url is
        then the resource endpoint), plain OpenAI-compatible otherwise. Its endpoint is the
        operator's choice, so any address may be reached (`AddressPolicy.anywhere`)."""
        owns = http is None
        http = http or OutboundClient(AddressPolicy.anywhere(), connect_timeout=timeouts.connect)
        if azure_deployment is not None or api_version is not None:
            if not base_url or not api_version:
                raise ValueError("an Azure OpenAI model needs its endpoint (base_url) and api_version")
            model = azure_deployment or model
            url = (f"{base_url.rstrip('/')}/openai/deployments/{quote(model, safe='')}/chat/completions"
                   f"?api-version={quote(api_version, safe='')}")
            headers = {"api-key": api_key}
        else:
            url = f"{(base_url or OPENAI_BASE_URL).rstrip('/')}/chat/completions"
            headers = {"Authorization": f"Bearer {api_key}"}
        return cls(http, url, {**headers, "Accept": "text/event-stream"}, model, api_key=api_key, encoding=encoding,
                   timeouts=timeouts, retry=retry, max_tokens_param=max_tokens_param, owns_http=owns)

    async def aclose(self) -> None:
        if self.owns_http:
            await self.http.close()

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
        for name, value in (("response_format", request.response_format), ("temperature", request.temperature),
                            ("top_p", request.top_p), (self.max_tokens_param, request.max_tokens),
                            ("reasoning_effort", request.reasoning_effort)):
            if value is not None:
                body[name] = value
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
            except Retryable as failure:
                if yielded or attempt >= self.retry.attempts:
                    raise failure.error from None
                delay = self.retry.delay(attempt, failure.retry_after)
                log.warning("model_call_retry", model=self.model, attempt=attempt, code=failure.error.code,
                            reason=failure.error.message, delay=round(delay, 3))
                await asyncio.sleep(delay)

    async def _attempt(self, body: JSON, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        try:
            async with asyncio.timeout(self.timeouts.connect + self.timeouts.read):
                opened = self.http.request("POST", self.url, headers=self.headers, json=body)
                response = await opened.__aenter__()
        except Exception as error:
            raise self._without_secrets(_classify(error)) from error
        try:
            if response.status >= 400:
                raise self._without_secrets(await _status_error(response))
            reader = ChunkReader(self.encoding, request)
            events = _sse_data(response.content)
            while True:
                try:
                    async with asyncio.timeout(self.timeouts.read):
                        data = await anext(events)
                    if data == "[DONE]":
                        break
                    pieces = reader.feed(_chunk(data))
                except StopAsyncIteration:
                    break
                except (Retryable, ModelError) as failure:
                    raise self._without_secrets(failure) from None
                except Exception as error:
                    raise self._without_secrets(_classify(error)) from error
                for piece in pieces:
                    yield piece
            for piece in reader.finish():
                yield piece
        finally:
            await opened.__aexit__(None, None, None)

    def _without_secrets(self, failure: Exception) -> Exception:
        """A provider may quote the key it was sent in its error message, which becomes the run's
        `last_error` — read by every user of the project, and kept in the log for good. The
        operator's key (and anything shaped like a secret) comes out first."""
        error = failure.error if isinstance(failure, Retryable) else failure
        if isinstance(error, ModelError):
            key = self.api_key or ""
            message = error.message.replace(key, "[redacted]") if len(key) >= 8 else error.message
            error.message = _SECRETS(message)
            error.args = (error.message,)
        return failure


# --- failures ------------------------------------------------------------------------------------

_SECRETS = Redactor()          # secret shapes (bearer tokens, Threadline keys, passwords in URLs)

def _classify(error: Exception) -> Exception:
    """What a failure of the connection or the stream becomes: Retryable or a final ModelError."""
    if isinstance(error, (Retryable, ModelError)):
        return error
    if isinstance(error, TimeoutError):
        return Retryable(ModelError("server_error", "The model did not answer in time."))
    if isinstance(error, aiohttp.ClientConnectorError):
        return Retryable(ModelError("server_error", f"The connection to the model failed: {error}"))
    if isinstance(error, (ValueError, TypeError, AttributeError, msgspec.ValidationError)):
        return ModelError("server_error", f"The model sent a response that cannot be read: {error}")
    if isinstance(error, (OSError, aiohttp.ClientError)):
        return Retryable(ModelError("server_error", f"Lost the connection to the model: {error!r}"))
    return ModelError("server_error", f"The model call failed: {error!r}")


async def _status_error(response: aiohttp.ClientResponse) -> Exception:
    """What an HTTP error answer becomes: rate limits and server errors are worth another try."""
    status = response.status
    raw = b""
    try:
        while len(raw) < MAX_ERROR_BODY and (piece := await response.content.read(MAX_ERROR_BODY - len(raw))):
            raw += piece
    except (OSError, aiohttp.ClientError, TimeoutError):
        pass
    message = _provider_message(raw, status)
    if status == 429:
        return Retryable(ModelError("rate_limit_exceeded", message), _retry_after(response))
    if status == 408 or status >= 500:
        return Retryable(ModelError("server_error", message))
    if status in (401, 403, 404):
        # The provider's key, permissions or model name: the server's configuration, not the prompt.
        return ModelError("server_error", f"The model provider refused the call (HTTP {status}): {message}")
    return ModelError("invalid_prompt", message)


def _provider_message(raw: bytes, status: int) -> str:
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        body = raw.decode(errors="replace").strip()
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str) and error:
        return error
    return f"The model answered HTTP {status}."


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare enough to fall back to our own backoff


async def _sse_data(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The `data` of each server-sent event (comments and other fields skipped)."""
    lines: list[str] = []
    async for raw in content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
        elif line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
    if lines:
        yield "\n".join(lines)


def _chunk(data: str) -> Any:
    """A chunk of the stream; an error event in it (the server overloaded after accepting the
    call, say) is worth another try."""
    chunk = msgspec.json.decode(data)
    if isinstance(chunk, dict) and chunk.get("error") is not None:
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise Retryable(ModelError("server_error", str(message or "The model's stream reported an error.")))
    return chunk
