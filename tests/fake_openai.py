"""A real HTTP server on 127.0.0.1 that speaks OpenAI chat completions (streamed as SSE), scripted
per test, and recording what it was sent.

    async with FakeOpenAI() as fake:
        fake.script(text_reply("Hel", "lo"), error_reply(500))   # one reply per request
        provider = OpenAICompatProvider.create(model="m", api_key="k", base_url=fake.url)
        ...
        assert fake.requests[0].body["messages"] == [...]

Replies are used in order; the last one then answers every further request (so
`fake.script(error_reply(500))` is a server that fails forever). `fake.script_for("m", ...)` gives
requests for model "m" their own replies (so runs on several models can fail differently at the
same time); other models use `script`. Any POST path ending in
/chat/completions is answered, so Azure clients work too (`fake.endpoint` is the Azure endpoint;
`requests[i].path` and `.query` show deployment and api-version).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

JSON = dict[str, Any]


@dataclass
class Reply:
    """One scripted answer, after `delay` seconds with nothing sent (a model slow to start). A 200
    streams `events` as SSE `data:` lines (dicts as JSON, strings as they are, which is how garbage
    is sent), then `data: [DONE]` when `done`; then it ends, hangs until the server closes, resets
    the connection, trickles SSE comments (keep-alives, no data) every `chunk_delay` (at least
    0.05 s) until the server closes, or sends its last event again and again ("endless", a model
    that never stops). `raw` is answered as it is, with `status` and `headers` (a proxy's HTML error
    page, say). Any other status answers `body` as JSON."""
    delay: float = 0.0
    status: int = 200
    events: list[JSON | str] = field(default_factory=list)
    done: bool = True
    then: Literal["end", "hang", "reset", "trickle", "endless"] = "end"
    chunk_delay: float = 0.0
    body: JSON | None = None
    headers: dict[str, str] = field(default_factory=dict)
    reset_before_response: bool = False
    raw: bytes | None = None


@dataclass
class FakeToolCall:
    id: str | None
    name: str
    argument_pieces: list[str]


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: JSON


# --- building replies ----------------------------------------------------------------------------

def chunk(delta: JSON | None = None, finish_reason: str | None = None, *, usage: JSON | None = None,
          choices: bool = True) -> JSON:
    """A chat.completion.chunk; choices=False makes the usage-only chunk that ends a stream."""
    payload: JSON = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
                     "model": "fake-model", "choices": []}
    if choices:
        payload["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}]
    if usage is not None:
        payload["usage"] = usage
    return payload


def usage_chunk(prompt_tokens: int, completion_tokens: int) -> JSON:
    return chunk(choices=False, usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                       "total_tokens": prompt_tokens + completion_tokens})


def text_events(*pieces: str) -> list[JSON | str]:
    events: list[JSON | str] = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in pieces]
    return events


def text_reply(*pieces: str, finish_reason: str = "stop", usage: tuple[int, int] | None = (11, 7),
               **reply: Any) -> Reply:
    events = text_events(*pieces) + [chunk({}, finish_reason)]
    if usage is not None:
        events.append(usage_chunk(*usage))
    return Reply(events=events, **reply)


def tool_call_events(*calls: FakeToolCall) -> list[JSON | str]:
    events: list[JSON | str] = [chunk({"role": "assistant", "content": None})]
    for index, call in enumerate(calls):
        first: JSON = {"index": index, "type": "function", "function": {"name": call.name, "arguments": ""}}
        if call.id is not None:
            first["id"] = call.id
        events.append(chunk({"tool_calls": [first]}))
        events += [chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                   for piece in call.argument_pieces]
    return events


def tool_calls_reply(*calls: FakeToolCall, finish_reason: str = "tool_calls",
                     usage: tuple[int, int] | None = (20, 9), **reply: Any) -> Reply:
    events = tool_call_events(*calls) + [chunk({}, finish_reason)]
    if usage is not None:
        events.append(usage_chunk(*usage))
    return Reply(events=events, **reply)


def error_reply(status: int, message: str = "fake failure", *, code: str | None = None,
                retry_after: float | None = None) -> Reply:
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    return Reply(status=status, headers=headers,
                 body={"error": {"message": message, "type": "fake_error", "param": None, "code": code}})


# --- the server ----------------------------------------------------------------------------------

class FakeOpenAI:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.replies_for: dict[str, deque[Reply]] = {}
        self.requests: list[RecordedRequest] = []
        # 200 answers still streaming; a trickling or endless one ends when its client goes away
        self.open_streams = 0
        self._arrived = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        """The server's root: what an Azure client takes as azure_endpoint."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base_url of an OpenAI client."""
        return f"{self.endpoint}/v1"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order; the last one repeats."""
        self.replies = deque(replies)

    def script_for(self, model: str, *replies: Reply) -> None:
        """Answer requests for this model with these replies, in order; the last one repeats."""
        self.replies_for[model] = deque(replies)

    def models_file_content(self, *names: str, **config: Any) -> JSON:
        """A THREADLINE_MODELS table sending these model names here; config adds to every entry."""
        return {"models": {name: {"base_url": self.url, **config} for name in names}}

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        async with asyncio.timeout(timeout):
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    async def start(self) -> "FakeOpenAI":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A short shutdown_timeout: hanging replies are released on close anyway.
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeOpenAI":
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _next_reply(self, model: Any = None) -> Reply:
        replies = self.replies_for.get(model, self.replies) if isinstance(model, str) else self.replies
        if not replies:
            return error_reply(500, "the fake server has no reply scripted")
        return replies.popleft() if len(replies) > 1 else replies[0]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"unparsable": raw.decode(errors="replace")}
        async with self._arrived:
            self.requests.append(RecordedRequest(request.method, request.path, dict(request.query),
                                                 dict(request.headers), body))
            self._arrived.notify_all()

        if not request.path.endswith("/chat/completions"):
            return web.json_response({"error": {"message": f"no route {request.path}"}}, status=404)
        reply = self._next_reply(body.get("model"))
        if reply.delay:
            try:
                await asyncio.wait_for(self._closing.wait(), reply.delay)
            except TimeoutError:
                pass
        if reply.reset_before_response:
            return self._reset(request)
        if reply.raw is not None:
            return web.Response(body=reply.raw, status=reply.status,
                                headers={"Content-Type": "text/html", **reply.headers})
        if reply.status != 200:
            return web.json_response(reply.body or {}, status=reply.status, headers=reply.headers)

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               **reply.headers})
        await response.prepare(request)
        self.open_streams += 1
        try:
            return await self._stream(request, response, reply)
        finally:
            self.open_streams -= 1

    async def _stream(self, request: web.Request, response: web.StreamResponse, reply: Reply) -> web.StreamResponse:
        for index, event in enumerate(reply.events):
            if index and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            data = event if isinstance(event, str) else json.dumps(event)
            await response.write(f"data: {data}\n\n".encode())
        if reply.then == "hang":
            await self._closing.wait()
            return response
        if reply.then == "reset":
            return self._reset(request)
        if reply.then in ("trickle", "endless"):
            last = reply.events[-1] if reply.events else {}
            line = b": keep-alive\n\n" if reply.then == "trickle" else \
                f"data: {last if isinstance(last, str) else json.dumps(last)}\n\n".encode()
            try:
                while not self._closing.is_set():
                    await asyncio.sleep(max(reply.chunk_delay, 0.05))
                    await response.write(line)
            except ConnectionError:
                pass                    # the client gave up, which is what these replies wait for
            return response
        if reply.done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @staticmethod
    def _reset(request: web.Request) -> web.StreamResponse:
        # The connection drops with the answer unfinished, as when a server process dies.
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError
