"""Executing one run: read the tail of the thread it needs, ask the model, record what happens.

Every step is a command to the thread's actor, so every transition and every piece of text is an
event in the thread's log before anyone sees it. A command that no longer applies (the run was
cancelled, expired or its thread deleted meanwhile) decides nothing, and execution stops there.
A turn asks the model once. When the model calls tools, the tool runtime says who answers each call:
the server runs its own tools and the run takes another turn; calls for the client park the run in
requires_action. Execution ends when the run ends or waits for the client; submitting the outputs
starts it again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import asyncpg
import msgspec
import structlog

from events.store import EventMetadata
from events.types import (
    MessageCompleted, MessageCreated, MessageDeleted, MessageIncomplete, MessageUpdated, TextPart, TextValue,
    ThreadDeleted, ThreadErased,
)
from projections import queries
from service.actors import ActorRegistry
from service.config import Config
from service.domain import run as runs
from service.domain.errors import DomainError
from service.ids import new_id, now
from service.models.base import Finished, ModelError, ModelInfo, ModelRequest, TextDelta, ToolCallDelta, Usage
from service.models.context import fit_counted, history_messages
from service.models.router import ModelRouter
from service.models.tokens import count_message, count_text, count_tools
from service.runs.model_input import image_urls, offered_tool_choice, tail_entry, tool_rounds
from service.runs.tail import Tail, TailCache, merge, pages, prepend_older, read_from, tail_length
from service.tools.base import ModelCall, ToolFailed
from service.tools.runtime import Offer, ToolRuntime, default_runtime

log = structlog.get_logger("threadline.runs")

FLUSH_TEXT_EVERY = 0.05      # seconds: tokens are gathered this long into one MessageTextAppended
MAX_CATCH_UP_EVENTS = 1000   # more events than this since a cached tail: read the tail afresh
# The events that write a message's row. MessageTextAppended does not: the row gets the text when
# the message is completed or incomplete.
MESSAGE_ROW_EVENTS = (MessageCreated, MessageCompleted, MessageIncomplete, MessageUpdated, MessageDeleted)
META = EventMetadata(causation="run_engine")
_chat = attrgetter("chat")
_tokens = attrgetter("tokens")
_message = attrgetter("message")


class Stop(Exception):
    """The run moved on without us (cancelled, expired, deleted): nothing more to do."""


@dataclass
class Deps:
    actors: ActorRegistry
    db: asyncpg.Pool
    router: ModelRouter
    config: Config
    tools: ToolRuntime = field(default_factory=default_runtime)
    tails: TailCache = field(default_factory=TailCache)

    def __post_init__(self) -> None:
        # A cached tail goes when its thread's actor does, or when the thread is deleted or
        # erased: erased words do not linger in memory.
        self.actors.on_forget(self.tails.drop)


class Execution:
    def __init__(self, deps: Deps, thread_id: str, run_id: str):
        self.deps = deps
        self.thread_id = thread_id
        self.run_id = run_id
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}
        self.message_id: str | None = None
        self.text = ""
        self.tool_step: str | None = None   # the tool_calls step opened while the model writes its calls
        self.thread_version = 0             # the thread's stream version as of our last command

    # -- talking to the thread's actor ---------------------------------------------------------

    async def ask(self, cmd: Any) -> runs.ActiveRun:
        """Send an engine command; the run as it now stands, or Stop if it is no longer ours to run."""
        try:
            state, _ = await self.deps.actors.ask(self.thread_id, cmd, META)
        except DomainError as exc:       # the thread was deleted
            raise Stop() from exc
        self.thread_version = state.version
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
            while await self._turn():
                pass
        except Stop:
            return
        except (ModelError, ToolFailed) as exc:
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

    async def _turn(self) -> bool:
        """One model call and what follows from it; True when the run takes another turn."""
        db = self.deps.db
        run = msgspec.json.decode(await queries.run_data(db, self.run_id) or b"{}")
        if not run:
            raise Stop()
        steps = [msgspec.json.decode(s) for s in await queries.run_steps_of(db, self.run_id)]
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}     # what the steps so far used
        for step in steps:
            for k in self.usage:
                self.usage[k] += (step.get("usage") or {}).get(k, 0)
        rounds = sum(1 for s in steps if s["type"] == "tool_calls")
        try:
            provider, info = self.deps.router.resolve(run["model"])
        except Exception as exc:  # noqa: BLE001 - an unusable model name is the run's failure, not ours
            raise ModelError("invalid_prompt", f"The model '{run['model']}' is not available: {exc}") from exc

        system = [{"role": "system", "content": run["instructions"]}] if run.get("instructions") else []
        history, history_tokens = await self._history(run, info)
        replayed = tool_rounds(steps, self.deps.tools)
        history += replayed
        history_tokens += [count_message(m, info.encoding) for m in replayed]
        offer = self.deps.tools.offer(run.get("tools") or [])
        tools = offer.chat_tools
        tool_tokens = count_tools(tools, info.encoding) if tools else 0
        max_completion = run.get("max_completion_tokens")
        remaining = None if max_completion is None else max_completion - self.usage["completion_tokens"]
        if remaining is not None and remaining <= 0:
            await self._incomplete("max_completion_tokens")
            return False
        # Room for the answer: what the budget allows, at most 4096 tokens or a quarter of the window.
        reserve = tool_tokens + min(remaining or 4096, 4096, info.context_window // 4)
        messages, message_tokens = fit_counted(
            system, history, [count_message(m, info.encoding) for m in system], history_tokens,
            context_window=info.context_window, max_prompt_tokens=run.get("max_prompt_tokens"), reserve=reserve,
            strategy=run.get("truncation_strategy") or {"type": "auto"}, plain=len(history) - len(replayed))
        prompt_tokens = message_tokens + tool_tokens
        if run.get("max_prompt_tokens") is not None and prompt_tokens > run["max_prompt_tokens"]:
            await self._incomplete("max_prompt_tokens")
            return False

        request = ModelRequest(
            model=run["model"], messages=messages, tools=tools,
            tool_choice=offered_tool_choice(run.get("tool_choice"), tools),
            parallel_tool_calls=run.get("parallel_tool_calls") if tools else None,
            response_format=run["response_format"] if isinstance(run.get("response_format"), dict) else None,
            temperature=run.get("temperature"), top_p=run.get("top_p"), max_tokens=remaining,
            reasoning_effort=run.get("reasoning_effort"),
            counted=(info.encoding, message_tokens))
        calls, finished, usage = await self._stream(provider.stream(request), run, offer)
        if usage is None:
            usage = {"prompt_tokens": prompt_tokens,
                     "completion_tokens": count_text(self.text, info.encoding) + sum(
                         count_text(c["function"]["name"] + c["function"]["arguments"], info.encoding) for c in calls)}
        turn_usage = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
        for k in self.usage:
            self.usage[k] += usage[k]

        if calls:
            await self._close_message()
            if rounds >= self.deps.config.max_tool_rounds:
                raise ModelError("server_error", f"The run stopped after {rounds} rounds of tool calls without a "
                                 "final answer (THREADLINE_MAX_TOOL_ROUNDS).")
            return await self._answer_calls(run, offer, calls, turn_usage)
        if self.message_id is None:
            await self._open_message(run)
        content = [TextPart(TextValue(self.text))]
        if finished == "length" and remaining is not None:
            await self.finish(runs.FinishRun(self.run_id, now(), "incomplete", self.total_usage(),
                                             reason="max_completion_tokens", content=content))
            return False
        await self.ask(runs.CloseMessage(self.run_id, content, now(), turn_usage))
        self.message_id = None
        await self.finish(runs.FinishRun(self.run_id, now(), "completed", self.total_usage()))
        return False

    async def _answer_calls(self, run: dict, offer: Offer, calls: list[dict], usage: dict) -> bool:
        """The server runs the calls for its own tools; the others wait for the client. True when
        nothing waits, so the model sees the results in another turn."""
        tools = self.deps.tools
        context: dict | None = None
        recorded, waiting = [], []
        for c in calls:
            call = ModelCall(c["id"], c["function"]["name"], c["function"]["arguments"])
            if tools.on_server(offer, call.name):
                if context is None:
                    project = await queries.thread_project(self.deps.db, self.thread_id)
                    if project is None:
                        raise Stop()        # the thread is gone
                    context = {"project": project, "thread_id": self.thread_id, "run_id": self.run_id,
                               "tool_resources": run.get("tool_resources") or {}}
                recorded.append(await tools.execute(offer, call, context))
            else:
                recorded.append(tools.pending(offer, call))
                waiting.append(call.id)
        step_id = self.tool_step or new_id("step_")
        self.tool_step = None
        await self.ask(runs.RequestToolCalls(self.run_id, step_id, recorded, now(), usage,
                                             waiting=None if len(waiting) == len(calls) else waiting))
        if waiting:
            return False
        self.text = ""
        return True

    async def _close_message(self) -> None:
        if self.message_id is not None:
            await self.ask(runs.CloseMessage(self.run_id, [TextPart(TextValue(self.text))], now()))
            self.message_id = None

    async def _open_tool_calls(self) -> None:
        """The model began a tool call: what it wrote before is its message, and the calls get their step."""
        await self._close_message()
        step_id = new_id("step_")
        active = await self.ask(runs.OpenToolCalls(self.run_id, step_id, now()))
        if active.step_id != step_id:
            raise Stop()
        self.tool_step = step_id

    async def _incomplete(self, reason: str) -> None:
        await self.finish(runs.FinishRun(self.run_id, now(), "incomplete", self.total_usage(), reason=reason))

    async def _open_message(self, run: dict) -> None:
        message_id = new_id("msg_")
        active = await self.ask(runs.OpenMessage(self.run_id, new_id("step_"), message_id, now(), run["assistant_id"]))
        if active.message_id != message_id:
            raise Stop()
        self.message_id = message_id

    async def _stream(self, chunks, run: dict, offer: Offer) -> tuple[list[dict], str | None, dict | None]:
        """Record the model's text as it comes; gather its tool calls. The pieces of a call the
        client answers are recorded as they come; a call the server runs shows once it is done."""
        calls: dict[int, dict] = {}
        server_run: set[int] = set()
        finished: str | None = None
        usage: dict | None = None
        pending = ""
        pieces: list[dict] = []             # tool-call pieces not yet recorded
        flushed_at = time.monotonic()
        async for chunk in chunks:
            match chunk:
                case TextDelta(text=text) if text and self.tool_step is None:
                    if self.message_id is None:
                        await self._open_message(run)
                    pending += text
                    if time.monotonic() - flushed_at >= FLUSH_TEXT_EVERY:
                        await self._append(pending)
                        pending, flushed_at = "", time.monotonic()
                case ToolCallDelta(index=index, id=call_id, name=name, arguments=arguments):
                    if self.tool_step is None:
                        if pending:
                            await self._append(pending)
                            pending = ""
                        await self._open_tool_calls()
                    new_call = index not in calls
                    call = calls.setdefault(index, {"id": None, "type": "function",
                                                    "function": {"name": "", "arguments": ""}})
                    call["id"] = call["id"] or call_id or (new_id("call_") if new_call else None)
                    if name:
                        call["function"]["name"] += name
                    call["function"]["arguments"] += arguments
                    if new_call and self.deps.tools.on_server(offer, call["function"]["name"]):
                        server_run.add(index)
                    if index in server_run:
                        continue
                    if new_call:
                        pieces.append({"index": index, "call_id": call["id"], "name": call["function"]["name"],
                                       "arguments": arguments})
                    elif pieces and pieces[-1]["index"] == index:
                        pieces[-1]["arguments"] += arguments
                    elif arguments:
                        pieces.append({"index": index, "arguments": arguments})
                    if time.monotonic() - flushed_at >= FLUSH_TEXT_EVERY:
                        await self.ask(runs.AppendToolCallArguments(self.run_id, self.tool_step, pieces))
                        pieces, flushed_at = [], time.monotonic()
                case Usage(prompt_tokens=p, completion_tokens=c):
                    usage = {"prompt_tokens": p, "completion_tokens": c}
                case Finished(reason=reason):
                    finished = reason
        if pending:
            await self._append(pending)
        if pieces:
            await self.ask(runs.AppendToolCallArguments(self.run_id, self.tool_step, pieces))
        ordered = [calls[i] for i in sorted(calls)]
        for call in ordered:
            call["id"] = call["id"] or new_id("call_")
        return ordered, finished, usage

    async def _append(self, text: str) -> None:
        self.text += text
        await self.ask(runs.AppendText(self.run_id, self.message_id or "", 0, text))

    async def _history(self, run: dict, info: ModelInfo) -> tuple[list[dict], list[int]]:
        """The thread's messages as chat messages, oldest first, and their tokens: the tail
        `tail_length` says a run reads, from this process's cache brought up to date, or from Postgres."""
        strategy = run.get("truncation_strategy") or {}
        keep = strategy.get("last_messages") if strategy.get("type") == "last_messages" else None
        budget = info.context_window
        if run.get("max_prompt_tokens") is not None:
            budget = min(budget, run["max_prompt_tokens"])
        tails = self.deps.tails
        tail = await self._current_tail(tails.take(self.thread_id), info.encoding)
        sizes = pages()
        while (length := tail_length(tail, budget, keep)) is None:
            await self._read_older(tail, next(sizes), info.encoding)
        entries = read_from(tail, length)
        tails.put(self.thread_id, tail)
        chats, tokens = list(map(_chat, entries)), list(map(_tokens, entries))
        stored = list(map(_message, entries))
        shown = [i for i, m in enumerate(stored) if m is not None] if stored.count(None) < len(stored) else []
        images = await image_urls(self.deps.db, [stored[i] for i in shown]) if shown else {}
        if images:
            for i in shown:
                chats[i] = history_messages([stored[i]], images.get)[0]
                tokens[i] = count_message(chats[i], info.encoding)
        return chats, tokens

    async def _current_tail(self, tail: Tail | None, encoding: str) -> Tail:
        """The cached tail with what the log says changed since, or an empty one to read afresh."""
        if tail is None or tail.encoding != encoding:
            return Tail(encoding, self.thread_version)
        events = await self.deps.actors.store.read_stream(f"thread-{self.thread_id}", tail.version,
                                                          limit=MAX_CATCH_UP_EVENTS + 1)
        if len(events) > MAX_CATCH_UP_EVENTS:
            return Tail(encoding, self.thread_version)      # reading afresh costs less
        touched: set[str] = set()
        deleted: set[str] = set()
        for r in events:
            if isinstance(r.event, (ThreadDeleted, ThreadErased)):
                return Tail(encoding, self.thread_version)
            if isinstance(r.event, MESSAGE_ROW_EVENTS):
                touched.add(r.event.message_id)
            if isinstance(r.event, MessageDeleted):
                deleted.add(r.event.message_id)
        if not events:
            return tail
        changed = list(touched - deleted)     # a deleted message is gone for good: no need to look
        current = await queries.messages_of_thread(self.deps.db, self.thread_id, changed) if changed else []
        merge(tail, touched, [tail_entry(m, encoding) for m in current], events[-1].version)
        return tail

    async def _read_older(self, tail: Tail, size: int, encoding: str) -> None:
        page = await queries.recent_messages(self.deps.db, self.thread_id, tail.floor, size)
        prepend_older(tail, [tail_entry(m, encoding) for m in page], size)
