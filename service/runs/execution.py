"""Executing one run: read the tail of the thread it needs, ask the model, record what happens.

Every step is a command to the thread's actor, so every transition and every piece of text is an
event in the thread's log before anyone sees it. A command that no longer applies (the run was
cancelled, expired or its thread deleted meanwhile) decides nothing, and execution stops there.
Execution ends when the run ends or when it waits for tool outputs; submitting them starts it again.
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import structlog

from events.store import EventMetadata
from events.types import MessageCreated, TextPart, TextValue
from projections import queries
from service.actors import ActorRegistry
from service.config import Config
from service.domain import run as runs
from service.domain.errors import DomainError
from service.ids import new_id, now
from service.models.base import Finished, ModelError, ModelInfo, ModelRequest, TextDelta, ToolCallDelta, Usage
from service.models.context import fit_messages, history_messages
from service.models.router import ModelRouter
from service.models.tokens import TOKENS_REPLY_PRIMING, count_message, count_text, count_tools

log = structlog.get_logger("threadline.runs")

FLUSH_TEXT_EVERY = 0.05      # seconds: tokens are gathered this long into one MessageTextAppended
PAGE = 50                    # messages read per query while filling the context
MAX_IMAGE_BYTES = 20 * 1024 * 1024
META = EventMetadata(causation="run_engine")


class Stop(Exception):
    """The run moved on without us (cancelled, expired, deleted): nothing more to do."""


@dataclass
class Deps:
    actors: ActorRegistry
    db: asyncpg.Pool
    router: ModelRouter
    config: Config


class Execution:
    def __init__(self, deps: Deps, thread_id: str, run_id: str):
        self.deps = deps
        self.thread_id = thread_id
        self.run_id = run_id
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}
        self.message_id: str | None = None
        self.text = ""
        self.tokens: dict[int, int] = {}     # id(chat message) -> its token count, for this turn

    # -- talking to the thread's actor ---------------------------------------------------------

    async def ask(self, cmd: Any) -> runs.ActiveRun:
        """Send an engine command; the run as it now stands, or Stop if it is no longer ours to run."""
        try:
            state, _ = await self.deps.actors.ask(self.thread_id, cmd, META)
        except DomainError as exc:       # the thread was deleted
            raise Stop() from exc
        active = state.active_run
        if active is None or active.run_id != self.run_id:
            raise Stop()
        if active.status == "cancelling":       # cancelled while we worked: end it here
            await self.finish(runs.FinishRun(self.run_id, now(), "failed", self.total_usage(),
                                             content=self.partial_content()))
            raise Stop()
        return active

    async def finish(self, cmd: Any) -> None:
        """A final command goes through even if our caller is being cancelled."""
        try:
            await asyncio.shield(self.deps.actors.ask(self.thread_id, cmd, META))
        except DomainError:
            pass

    def total_usage(self) -> dict:
        p, c = self.usage["prompt_tokens"], self.usage["completion_tokens"]
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def partial_content(self) -> list | None:
        return [TextPart(TextValue(self.text))] if self.message_id is not None else None

    # -- the run --------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            active = await self.ask(runs.StartRun(self.run_id, now()))
            if active.status != "in_progress":
                return
            await self._turn()
        except Stop:
            return
        except ModelError as exc:
            await self.finish(runs.FinishRun(self.run_id, now(), "failed", self.total_usage(),
                                             last_error={"code": exc.code, "message": exc.message[:2000]},
                                             content=self.partial_content()))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - no run is left stuck in_progress
            log.exception("run_failed", run_id=self.run_id, thread_id=self.thread_id)
            await self.finish(runs.FinishRun(self.run_id, now(), "failed", self.total_usage(),
                                             last_error={"code": "server_error",
                                                         "message": "The server had an error while running."},
                                             content=self.partial_content()))

    async def _turn(self) -> None:
        db = self.deps.db
        run = msgspec.json.decode(await queries.run_data(db, self.run_id) or b"{}")
        if not run:
            raise Stop()
        steps = [msgspec.json.decode(s) for s in await queries.run_steps_of(db, self.run_id)]
        for step in steps:
            for k in self.usage:
                self.usage[k] += (step.get("usage") or {}).get(k, 0)
        rounds = sum(1 for s in steps if s["type"] == "tool_calls")
        try:
            provider, info = self.deps.router.resolve(run["model"])
        except Exception as exc:  # noqa: BLE001 - an unusable model name is the run's failure, not ours
            raise ModelError("invalid_prompt", f"The model '{run['model']}' is not available: {exc}") from exc

        system = [{"role": "system", "content": run["instructions"]}] if run.get("instructions") else []
        history = await self._history(run, info)
        history += _tool_rounds(steps)
        tools = [{"type": "function", "function": t["function"]} for t in run.get("tools") or []
                 if t.get("type") == "function" and isinstance(t.get("function"), dict)]
        tool_tokens = count_tools(tools, info.encoding) if tools else 0
        max_completion = run.get("max_completion_tokens")
        remaining = None if max_completion is None else max_completion - self.usage["completion_tokens"]
        if remaining is not None and remaining <= 0:
            return await self._incomplete("max_completion_tokens")
        # Room for the answer: what the budget allows, at most 4096 tokens or a quarter of the window.
        reserve = tool_tokens + min(remaining or 4096, 4096, info.context_window // 4)
        messages = fit_messages(system, history, context_window=info.context_window,
                                max_prompt_tokens=run.get("max_prompt_tokens"), reserve=reserve,
                                strategy=run.get("truncation_strategy") or {"type": "auto"}, encoding=info.encoding,
                                count=lambda m: self.count(m, info.encoding))
        prompt_tokens = TOKENS_REPLY_PRIMING + sum(self.count(m, info.encoding) for m in messages) + tool_tokens
        if run.get("max_prompt_tokens") is not None and prompt_tokens > run["max_prompt_tokens"]:
            return await self._incomplete("max_prompt_tokens")

        request = ModelRequest(
            model=run["model"], messages=messages, tools=tools,
            tool_choice=_tool_choice(run.get("tool_choice"), tools),
            parallel_tool_calls=run.get("parallel_tool_calls") if tools else None,
            response_format=run["response_format"] if isinstance(run.get("response_format"), dict) else None,
            temperature=run.get("temperature"), top_p=run.get("top_p"), max_tokens=remaining)
        calls, finished, usage = await self._stream(provider.stream(request), run)
        if usage is None:
            usage = {"prompt_tokens": prompt_tokens,
                     "completion_tokens": count_text(self.text, info.encoding) + sum(
                         count_text(c["function"]["name"] + c["function"]["arguments"], info.encoding) for c in calls)}
        turn_usage = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
        for k in self.usage:
            self.usage[k] += usage[k]

        if calls:
            if self.message_id is not None:
                await self.ask(runs.CloseMessage(self.run_id, [TextPart(TextValue(self.text))], now()))
                self.message_id = None
            if rounds >= self.deps.config.max_tool_rounds:
                raise ModelError("server_error", f"The run stopped after {rounds} rounds of tool calls without a "
                                 "final answer (THREADLINE_MAX_TOOL_ROUNDS).")
            await self.ask(runs.RequestToolCalls(self.run_id, new_id("step_"), calls, now(), turn_usage))
            return
        if self.message_id is None:
            await self._open_message(run)
        content = [TextPart(TextValue(self.text))]
        if finished == "length" and remaining is not None:
            await self.finish(runs.FinishRun(self.run_id, now(), "incomplete", self.total_usage(),
                                             reason="max_completion_tokens", content=content))
            return
        await self.ask(runs.CloseMessage(self.run_id, content, now(), turn_usage))
        self.message_id = None
        await self.finish(runs.FinishRun(self.run_id, now(), "completed", self.total_usage()))

    async def _incomplete(self, reason: str) -> None:
        await self.finish(runs.FinishRun(self.run_id, now(), "incomplete", self.total_usage(), reason=reason))

    async def _open_message(self, run: dict) -> None:
        message = MessageCreated(message_id=new_id("msg_"), thread_id=self.thread_id, created_at=now(),
                                 role="assistant", content=[], assistant_id=run["assistant_id"], run_id=self.run_id,
                                 status="in_progress")
        active = await self.ask(runs.OpenMessage(self.run_id, new_id("step_"), message))
        if active.message_id != message.message_id:
            raise Stop()
        self.message_id = message.message_id

    async def _stream(self, chunks, run: dict) -> tuple[list[dict], str | None, dict | None]:
        """Record the model's text as it comes; gather its tool calls."""
        calls: dict[int, dict] = {}
        finished: str | None = None
        usage: dict | None = None
        pending = ""
        flushed_at = time.monotonic()
        async for chunk in chunks:
            match chunk:
                case TextDelta(text=text) if text:
                    if self.message_id is None:
                        await self._open_message(run)
                    pending += text
                    if time.monotonic() - flushed_at >= FLUSH_TEXT_EVERY:
                        await self._append(pending)
                        pending, flushed_at = "", time.monotonic()
                case ToolCallDelta(index=index, id=call_id, name=name, arguments=arguments):
                    call = calls.setdefault(index, {"id": None, "type": "function",
                                                    "function": {"name": "", "arguments": ""}})
                    call["id"] = call["id"] or call_id
                    if name:
                        call["function"]["name"] += name
                    call["function"]["arguments"] += arguments
                case Usage(prompt_tokens=p, completion_tokens=c):
                    usage = {"prompt_tokens": p, "completion_tokens": c}
                case Finished(reason=reason):
                    finished = reason
        if pending:
            await self._append(pending)
        ordered = [calls[i] for i in sorted(calls)]
        for call in ordered:
            call["id"] = call["id"] or new_id("call_")
        return ordered, finished, usage

    async def _append(self, text: str) -> None:
        self.text += text
        await self.ask(runs.AppendText(self.run_id, self.message_id or "", 0, text))

    async def _history(self, run: dict, info: ModelInfo) -> list[dict]:
        """The thread's messages as chat messages, oldest first, reading back from the newest only as
        far as needed. Each is counted once, here; `self.tokens` keeps the counts for fitting."""
        strategy = run.get("truncation_strategy") or {}
        keep = strategy.get("last_messages") if strategy.get("type") == "last_messages" else None
        budget = info.context_window
        if run.get("max_prompt_tokens") is not None:
            budget = min(budget, run["max_prompt_tokens"])
        collected: list[dict] = []
        tokens = 0
        before = None
        size = PAGE
        while True:
            page = [msgspec.json.decode(m) for m in await queries.recent_messages(self.deps.db, self.thread_id,
                                                                                   before, size)]
            for m in page:
                chat = history_messages([m], lambda _: None)[0]
                tokens += self.count(chat, info.encoding)
                collected.append((m, chat))
            if len(page) < size or tokens >= budget or (keep is not None and len(collected) >= keep):
                break
            before, size = page[-1]["id"], min(size * 4, 2000)    # a long thread: read further in bigger pages
        collected.reverse()
        images = await self._images([m for m, _ in collected])
        if not images:
            return [chat for _, chat in collected]
        return [history_messages([m], images.get)[0] if _shows_image(m) else chat for m, chat in collected]

    def count(self, message: dict, encoding: str) -> int:
        """Tokens of a chat message, counted once per turn (they are counted again to fit and to bill)."""
        known = self.tokens.get(id(message))
        if known is None:
            known = self.tokens[id(message)] = count_message(message, encoding)
        return known

    async def _images(self, messages: list[dict]) -> dict[str, str]:
        """Data URLs of the image files the messages show (files of a few MB, read from the blob store)."""
        wanted = {p["image_file"]["file_id"] for m in messages for p in m.get("content") or ()
                  if p.get("type") == "image_file"}
        out: dict[str, str] = {}
        for file_id in wanted:
            row = await queries.file_name_and_size(self.deps.db, file_id)
            if row is None or row[1] > MAX_IMAGE_BYTES:
                continue
            mime = mimetypes.guess_type(row[0])[0] or "image/png"
            data = b"".join([chunk async for chunk in queries.file_chunks(self.deps.db, file_id)])
            out[file_id] = f"data:{mime};base64,{base64.b64encode(data).decode()}"
        return out


def _shows_image(message: dict) -> bool:
    return any(p.get("type") == "image_file" for p in message.get("content") or ())


def _tool_rounds(steps: list[dict]) -> list[dict]:
    """The run's finished tool rounds, as the chat messages that replay them to the model."""
    out: list[dict] = []
    for step in steps:
        details = step.get("step_details") or {}
        if details.get("type") != "tool_calls" or step.get("status") != "completed":
            continue
        calls = details["tool_calls"]
        out.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["function"]["name"],
                                                             "arguments": c["function"]["arguments"]}}
            for c in calls]})
        out += [{"role": "tool", "tool_call_id": c["id"], "content": c["function"].get("output") or ""}
                for c in calls]
    return out


def _tool_choice(choice: Any, tools: list[dict]) -> Any:
    if not tools:
        return None
    if choice in (None, "auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice["function"]["name"]}}
    return "auto"    # a built-in tool this server does not run
