"""What the model sees of a thread: API messages mapped to chat messages, then fitted into the
model's context window. Pure functions, no I/O.

History is the thread's messages (user and assistant text) followed, during a run, by the run's
own tool rounds that the engine appends: an assistant message with `tool_calls` and the `tool`
messages answering it. A round is kept or dropped whole, since a chat-completions provider rejects
a tool message whose call is missing and a call whose answers are missing.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from typing import Callable, Literal, NamedTuple, NotRequired, TypedDict

from service.models.base import JSON
from service.models.tokens import TOKENS_REPLY_PRIMING, count_message


class TruncationStrategy(TypedDict):
    type: Literal["auto", "last_messages"]
    last_messages: NotRequired[int | None]


# --- API messages -> chat messages ---------------------------------------------------------------

def to_chat_messages(instructions: str | None, messages: list[JSON],
                     image_data_url: Callable[[str], str | None]) -> list[JSON]:
    """The system message (when there are instructions) followed by `history_messages`."""
    system = [{"role": "system", "content": instructions}] if instructions else []
    return system + history_messages(messages, image_data_url)


def history_messages(messages: list[JSON], image_data_url: Callable[[str], str | None]) -> list[JSON]:
    """Thread messages as the API returns them, oldest first, as chat messages.

    `image_data_url(file_id)` gives an image file's data URL, or None when it cannot be shown (the
    part is then left out). Assistant messages are plain strings: providers accept no images there.
    """
    return [_chat_message(message, image_data_url) for message in messages]


def _chat_message(message: JSON, image_data_url: Callable[[str], str | None]) -> JSON:
    role = message["role"]
    texts: list[str] = []
    images: list[JSON] = []
    for part in message.get("content") or ():
        kind = part.get("type")
        if kind == "text":
            texts.append(part["text"]["value"])
        elif kind == "image_url":
            images.append(_image_part(part["image_url"]["url"], part["image_url"].get("detail")))
        elif kind == "image_file":
            url = image_data_url(part["image_file"]["file_id"])
            if url is not None:
                images.append(_image_part(url, part["image_file"].get("detail")))
    if role != "user" or not images:
        # A plain string is what every OpenAI-compatible server understands.
        return {"role": role, "content": "\n\n".join(texts)}
    return {"role": role, "content": [{"type": "text", "text": text} for text in texts] + images}


def _image_part(url: str, detail: str | None) -> JSON:
    image: JSON = {"url": url}
    if detail:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


# --- fitting into the context window -------------------------------------------------------------

class Fitted(NamedTuple):
    messages: list[JSON]        # system + the history kept
    tokens: int                 # their prompt tokens, with the reply priming


def fit_messages(system: list[JSON], history: list[JSON], *, context_window: int,
                 max_prompt_tokens: int | None, reserve: int, strategy: TruncationStrategy,
                 encoding: str, count: Callable[[JSON], int] | None = None) -> list[JSON]:
    """system + the most recent part of history that the strategy and the token budget allow.

    `last_messages: N` keeps the N most recent conversation messages (user and assistant text);
    tool rounds are not counted and stay with the messages they follow. Either strategy then drops
    the oldest history until the prompt fits min(context_window - reserve, max_prompt_tokens);
    `reserve` is what the completion (and tool definitions) need. The last message (and the tool
    round it belongs to) is always kept, even when it alone does not fit.
    """
    count = count or (lambda message: count_message(message, encoding))    # a caller may have counted already
    return fit_counted(system, history, [count(m) for m in system], [count(m) for m in history],
                       context_window=context_window, max_prompt_tokens=max_prompt_tokens, reserve=reserve,
                       strategy=strategy).messages


def fit_counted(system: list[JSON], history: list[JSON], system_tokens: list[int], history_tokens: list[int], *,
                context_window: int, max_prompt_tokens: int | None, reserve: int,
                strategy: TruncationStrategy, plain: int = 0) -> Fitted:
    """`fit_messages` for a caller that has counted every message (`*_tokens[i]` is message i's
    tokens), and the prompt's tokens. The first `plain` messages of history are known to be
    user or assistant text (a thread's messages), each a unit of its own: on a thread of
    thousands, this is a few C-level passes over lists, not a look at every message."""
    starts = _unit_starts(history, plain)
    unit_tokens = history_tokens if len(starts) == len(history) else [
        sum(history_tokens[a:b]) for a, b in zip(starts, [*starts[1:], len(history)])]
    first = 0
    if strategy.get("type") == "last_messages" and strategy.get("last_messages") is not None:
        first = _last_conversation_messages(history, starts, max(0, int(strategy["last_messages"])))

    budget = context_window - reserve
    if max_prompt_tokens is not None:
        budget = min(budget, max_prompt_tokens)
    used = TOKENS_REPLY_PRIMING + sum(system_tokens)
    # newest[k - 1]: tokens of the newest k units. Keep as many as fit, and at least the last one.
    newest = list(accumulate(reversed(unit_tokens[first:])))
    kept = max(bisect_right(newest, budget - used), 1) if newest else 0
    if not kept:
        return Fitted(list(system), used)
    return Fitted(system + history[starts[len(starts) - kept]:], used + newest[kept - 1])


def _unit_starts(history: list[JSON], plain: int = 0) -> list[int]:
    """Where each piece of history that is kept or dropped whole begins: a single message, or a
    tool round (an assistant message with tool_calls and the tool messages after it)."""
    starts = list(range(plain))
    for i in range(plain, len(history)):
        if not (history[i].get("role") == "tool" and starts and _is_tool_round(history[starts[-1]])):
            starts.append(i)
    return starts


def _is_tool_round(first: JSON) -> bool:
    return bool(first.get("role") == "assistant" and first.get("tool_calls"))


def _is_conversation_message(first: JSON) -> bool:
    return first.get("role") in ("user", "assistant") and not _is_tool_round(first)


def _last_conversation_messages(history: list[JSON], starts: list[int], count: int) -> int:
    """The first of the units to keep: those from the count-th last conversation message on."""
    kept = 0
    first = len(starts)
    while first > 0:
        if _is_conversation_message(history[starts[first - 1]]):
            if kept == count:
                break
            kept += 1
        first -= 1
    if first == len(starts) and starts:
        first = len(starts) - 1  # N = 0 still keeps the last message
    return first
