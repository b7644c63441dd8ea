"""What the model sees of a thread: API messages mapped to chat messages, then fitted into the
model's context window. Pure functions, no I/O.

History is the thread's messages (user and assistant text) followed, during a run, by the run's
own tool rounds that the engine appends: an assistant message with `tool_calls` and the `tool`
messages answering it. A round is kept or dropped whole, since a chat-completions provider rejects
a tool message whose call is missing and a call whose answers are missing.
"""

from __future__ import annotations

from typing import Callable, Literal, NotRequired, TypedDict

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
    units = _units(history)
    if strategy.get("type") == "last_messages" and strategy.get("last_messages") is not None:
        units = _last_conversation_messages(units, max(0, int(strategy["last_messages"])))

    budget = context_window - reserve
    if max_prompt_tokens is not None:
        budget = min(budget, max_prompt_tokens)
    count = count or (lambda message: count_message(message, encoding))    # a caller may have counted already
    used = TOKENS_REPLY_PRIMING + sum(count(message) for message in system)
    unit_tokens = [sum(count(message) for message in unit) for unit in units]
    first = 0
    total = used + sum(unit_tokens)
    while total > budget and first < len(units) - 1:
        total -= unit_tokens[first]
        first += 1
    return system + [message for unit in units[first:] for message in unit]


def _units(history: list[JSON]) -> list[list[JSON]]:
    """History cut into the pieces that are kept or dropped whole: a single message, or a tool
    round (an assistant message with tool_calls and the tool messages after it)."""
    units: list[list[JSON]] = []
    for message in history:
        if message.get("role") == "tool" and units and _is_tool_round(units[-1]):
            units[-1].append(message)
        else:
            units.append([message])
    return units


def _is_tool_round(unit: list[JSON]) -> bool:
    return bool(unit[0].get("role") == "assistant" and unit[0].get("tool_calls"))


def _is_conversation_message(unit: list[JSON]) -> bool:
    return unit[0].get("role") in ("user", "assistant") and not _is_tool_round(unit)


def _last_conversation_messages(units: list[list[JSON]], count: int) -> list[list[JSON]]:
    kept = 0
    first = len(units)
    while first > 0:
        if _is_conversation_message(units[first - 1]):
            if kept == count:
                break
            kept += 1
        first -= 1
    if first == len(units) and units:
        first = len(units) - 1  # N = 0 still keeps the last message
    return units[first:]
