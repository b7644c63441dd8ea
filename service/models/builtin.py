"""Offline models for development, tests and benchmarks: no network, no keys.

`builtin/echo` streams back the text of the last user message word by word, then its Usage and
Finished("stop"). It costs next to nothing, so benchmarks measure the service, not a model.

`builtin/script:<path>` plays turns from a JSON file; plain `builtin/script` reads the file named by
the service's THREADLINE_SCRIPT setting. The file is read on every call,
so a script can be edited between runs. Its format:

    {"turns": [
        {"text": "Let me check.", "delay": 0, "chunk_delay": 0.01},
        {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                        {"name": "get_time", "arguments": "{\\"tz\\": \\"CET\\"}"}]},
        {"text": "It is sunny in Paris.", "finish_reason": "stop"},
        {"error": {"code": "server_error", "message": "the model fell over"}}
    ]}

Every turn may have:
  - "text": streamed in several chunks (word by word);
  - "tool_calls": each with a "name" and "arguments" (an object, sent as its JSON, or a string
    sent as it is); ids are generated (`call_` + random). A turn may have both text and calls;
  - "error": {"code": "server_error" | "rate_limit_exceeded" | "invalid_prompt", "message": ...}:
    the call fails with that ModelError (after "delay");
  - "delay": seconds before the first chunk (a slow model); "chunk_delay": seconds between chunks;
  - "finish_reason": overrides the reason ("stop", or "tool_calls" when there are calls; "length"
    simulates a model that ran out of tokens).

Which turn plays: the k-th model call of a run plays turn k (from 0), where k is the number of
assistant messages after the last user message of the request (each tool round the run has done
adds one). Past the last turn, the last turn plays again.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any, AsyncIterator, Literal

import msgspec

from service.models.base import (
    Finished, ModelChunk, ModelError, ModelRequest, TextDelta, ToolCallDelta, Usage,
)
from service.models.tokens import count_text

SCRIPT_ENV = "THREADLINE_SCRIPT"

_WORDS = re.compile(r"\s*\S+\s*|\s+")


def text_chunks(text: str) -> list[str]:
    """text cut into word-sized pieces that join back to exactly text."""
    return _WORDS.findall(text)


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "\n\n".join(part.get("text", "") for part in content or () if part.get("type") == "text")
    return ""


def new_call_id() -> str:
    return "call_" + secrets.token_urlsafe(18).replace("-", "a").replace("_", "b")


class EchoModel:
    def __init__(self, encoding: str = "o200k_base"):
        self.encoding = encoding

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        text = last_user_text(request.messages)
        for piece in text_chunks(text):
            yield TextDelta(piece)
        yield Usage(request.prompt_tokens(self.encoding), count_text(text, self.encoding))
        yield Finished("stop")


# --- scripts -------------------------------------------------------------------------------------

class ScriptToolCall(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    arguments: dict[str, Any] | str = {}


class ScriptError(msgspec.Struct, forbid_unknown_fields=True):
    code: Literal["server_error", "rate_limit_exceeded", "invalid_prompt"]
    message: str = "scripted failure"


class ScriptTurn(msgspec.Struct, forbid_unknown_fields=True):
    text: str | None = None
    tool_calls: list[ScriptToolCall] = []
    error: ScriptError | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    finish_reason: Literal["stop", "tool_calls", "length", "content_filter"] | None = None


class Script(msgspec.Struct, forbid_unknown_fields=True):
    turns: list[ScriptTurn]


def load_script(path: str | os.PathLike[str]) -> Script:
    """The script in the file at path; ModelError("server_error") when it is missing or malformed."""
    try:
        script = msgspec.json.decode(Path(path).read_bytes(), type=Script)
    except (OSError, msgspec.DecodeError) as error:
        raise ModelError("server_error", f"builtin/script cannot use {str(path)!r}: {error}") from None
    if not script.turns:
        raise ModelError("server_error", f"builtin/script {str(path)!r} has no turns")
    return script


def turn_index(messages: list[dict[str, Any]]) -> int:
    """How many model calls this run has made before: assistant messages after the last user one."""
    count = 0
    for message in reversed(messages):
        role = message.get("role")
        if role == "user":
            break
        if role == "assistant":
            count += 1
    return count


class ScriptModel:
    def __init__(self, path: str | None = None, encoding: str = "o200k_base"):
        self.path = path  # None: no script given (the router passes THREADLINE_SCRIPT's)
        self.encoding = encoding

    def _script_path(self) -> str:
        path = self.path
        if not path:
            raise ModelError("server_error", f"builtin/script needs a path: builtin/script:<path> or ${SCRIPT_ENV}")
        return path

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        script = load_script(self._script_path())
        turn = script.turns[min(turn_index(request.messages), len(script.turns) - 1)]
        if turn.delay > 0:
            await asyncio.sleep(turn.delay)
        if turn.error is not None:
            raise ModelError(turn.error.code, turn.error.message)

        produced: list[str] = []
        first = True

        async def pace() -> None:
            nonlocal first
            if not first and turn.chunk_delay > 0:
                await asyncio.sleep(turn.chunk_delay)
            first = False

        for piece in text_chunks(turn.text or ""):
            await pace()
            produced.append(piece)
            yield TextDelta(piece)
        for index, call in enumerate(turn.tool_calls):
            arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
            await pace()
            yield ToolCallDelta(index, id=new_call_id(), name=call.name)
            produced.append(call.name)
            for piece in _halves(arguments):
                await pace()
                produced.append(piece)
                yield ToolCallDelta(index, arguments=piece)

        yield Usage(request.prompt_tokens(self.encoding), count_text("".join(produced), self.encoding))
        yield Finished(turn.finish_reason or ("tool_calls" if turn.tool_calls else "stop"))


def _halves(text: str) -> list[str]:
    """Arguments arrive in more than one piece, as they do from real providers."""
    middle = len(text) // 2
    return [piece for piece in (text[:middle], text[middle:]) if piece]
