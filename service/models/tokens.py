"""Offline token counting with quicktok, for usage of models that report none and for fitting
prompts into a context window.

Message counts follow the chat-completions accounting OpenAI documents: every message costs a few
tokens of framing on top of its content, and the reply is primed with a few more. The numbers are
estimates for other providers' tokenizers, exact enough to decide what to truncate.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import quicktok

JSON = dict[str, Any]

TOKENS_PER_MESSAGE = 3      # <|start|>role ... <|end|> framing around each message
TOKENS_PER_NAME = 1         # a message's optional "name"
TOKENS_REPLY_PRIMING = 3    # <|start|>assistant<|message|> that every reply begins with
TOKENS_PER_IMAGE = 85       # flat: a low-detail tile; exact pricing depends on the image's size
TOKENS_PER_TOOL_CALL = 3    # framing of one call beside its name and arguments


def encoding(name: str) -> quicktok.Tokenizer:
    """The quicktok encoding `name` (cached by quicktok); ValueError for an unknown name."""
    try:
        return quicktok.get_encoding(name)
    except RuntimeError as error:
        raise ValueError(f"unknown token encoding {name!r}") from error


def preload(*names: str) -> None:
    """Load encodings now: the first use of one reads its vocabulary (about a second for o200k_base),
    which should not stall the event loop in the middle of a run. Call it in a thread at start-up."""
    for name in names:
        encoding(name).count("warm")


def count_text(text: str, encoding_name: str) -> int:
    # quicktok's count treats special-token strings such as <|endoftext|> as plain text, so user
    # text can never make counting fail.
    return encoding(encoding_name).count(text) if text else 0


def count_message(message: JSON, encoding_name: str) -> int:
    """Tokens one chat message adds to a prompt, without the reply priming."""
    tokens = TOKENS_PER_MESSAGE + count_text(str(message.get("role", "")), encoding_name)
    tokens += _count_content(message.get("content"), encoding_name)
    if message.get("name"):
        tokens += TOKENS_PER_NAME + count_text(str(message["name"]), encoding_name)
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        tokens += TOKENS_PER_TOOL_CALL
        tokens += count_text(str(function.get("name") or ""), encoding_name)
        tokens += count_text(str(function.get("arguments") or ""), encoding_name)
    if message.get("tool_call_id"):
        tokens += count_text(str(message["tool_call_id"]), encoding_name)
    return tokens


def count_messages(messages: Iterable[JSON], encoding_name: str) -> int:
    """Prompt tokens of a chat-completions request with these messages."""
    return TOKENS_REPLY_PRIMING + sum(count_message(message, encoding_name) for message in messages)


def count_tools(tools: Iterable[JSON], encoding_name: str) -> int:
    """Prompt tokens the tool definitions add (counted as their JSON: an over-estimate, which is
    the safe side for fitting a context window)."""
    return sum(count_text(json.dumps(tool, separators=(",", ":")), encoding_name) for tool in tools)


def _count_content(content: Any, encoding_name: str) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count_text(content, encoding_name)
    tokens = 0
    for part in content:
        kind = part.get("type")
        if kind == "text":
            tokens += count_text(str(part.get("text") or ""), encoding_name)
        elif kind in ("image_url", "input_image", "image_file"):
            tokens += TOKENS_PER_IMAGE
    return tokens
