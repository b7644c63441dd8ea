"""The shell around the pure domain: one runner for every entity, thread actors, their registry.

Every command of every entity (service/domain/decider.py) goes through `Entity.handle`: look up the
facts the decider asks for, decide on the current state, append the events, fold them in, answer.
Another process may write the same stream; the store's version check then refuses one of the two
appends, and the loser catches up from the log and decides again. A ThreadActor keeps one thread's
Entity in this process and handles its commands one at a time, in arrival order; agents and files
are short streams, loaded for each command (`execute`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict, deque
from typing import Any, Callable

import msgspec
import structlog

from events.store import EventMetadata, EventStore, RecordedEvent, VersionConflict
from projections import queries
from service.domain import thread as thread_domain
from service.domain.decider import Decider
from service.domain.errors import Conflict, DomainError
from service.domain.facts import MessageExists, RunStatus

log = structlog.get_logger("threadline.actors")

MAX_ATTEMPTS = 12
SNAPSHOT_EVERY = 500


class TooMuchContention(Conflict):
    def __init__(self, stream: str):
        super().__init__(f"The object {stream.split('-', 1)[1]} is being changed by another request; try again.")


class Entity:
    """One entity's state in this process, and the loop every command of it goes through."""

    def __init__(self, store: EventStore, decider: Decider, entity_id: str):
        self.store, self.decider, self.entity_id = store, decider, entity_id
        self.stream = decider.stream(entity_id)
        self.state: Any = None          # None: not loaded (or unknown after a failed append)

    async def load(self) -> None:
        """The latest snapshot (for deciders that keep them) plus the events after it."""
        state = self.decider.initial(self.entity_id)
        if self.decider.snapshots:
            snap = await self.store.load_snapshot(self.stream, self.decider.snapshot_schema)
            if snap is not None:
                state = msgspec.json.decode(snap[1], type=self.decider.state_type)
        for r in await self.store.read_stream(self.stream, state.version):
            state = self.decider.evolve(state, r.event)
        self.state = state

    async def handle(self, cmd: Any, meta: EventMetadata, facts_of: Callable | None = None) -> list[RecordedEvent]:
        """Decide, append and fold in; `facts_of(entity, needed)` looks up what the decider needs."""
        for attempt in range(MAX_ATTEMPTS):
            if self.state is None:
                await self.load()
            needed = self.decider.needs(self.state, cmd)
            facts = await facts_of(self, cmd, needed) if needed and facts_of is not None else {}
            try:
                events = self.decider.decide(self.state, cmd, facts)
            except DomainError:
                # Refusals are decided on our cached state; another process may have moved the
                # entity on (ended its run, say). Refuse only what the log's latest state refuses.
                if not await self._catch_up():
                    raise
                continue
            if not events:
                if await self._catch_up():
                    continue
                return []
            try:
                recorded = await self.store.append(self.stream, self.state.version, events, meta)
            except VersionConflict:
                await backoff(attempt)
                await self._catch_up()
                continue
            except BaseException:
                self.state = None          # unknown whether it committed: reload from the log
                raise
            before = self.state.version
            for r in recorded:
                self.state = self.decider.evolve(self.state, r.event)
            if self.decider.snapshots and self.state.version // SNAPSHOT_EVERY > before // SNAPSHOT_EVERY:
                await self._snapshot()
            return recorded
        raise TooMuchContention(self.stream)

    async def _catch_up(self) -> bool:
        """Fold in what other writers appended; whether there was anything."""
        newer = await self.store.read_stream(self.stream, self.state.version)
        for r in newer:
            self.state = self.decider.evolve(self.state, r.event)
        return bool(newer)

    async def _snapshot(self) -> None:
        try:
            await self.store.save_snapshot(self.stream, self.state.version, self.decider.snapshot_schema,
                                           msgspec.json.encode(self.state))
        except Exception:  # noqa: BLE001 - a snapshot is an optimisation; the log is the truth
            log.warning("snapshot_failed", stream=self.stream, exc_info=True)


class ThreadActor:
    def __init__(self, thread_id: str, registry: "ActorRegistry"):
        self.thread_id = thread_id
        self.registry = registry
        self.entity = Entity(registry.store, thread_domain.DECIDER, thread_id)
        self.mailbox: deque = deque()
        self._mail = asyncio.Event()
        self.busy = False
        self.last_active = time.monotonic()
        self.task = asyncio.create_task(self._run(), name=f"actor:{thread_id}")

    @property
    def state(self) -> thread_domain.ThreadState | None:
        """The thread as this actor last knew it (None: not loaded yet)."""
        return self.entity.state

    @property
    def idle(self) -> bool:
        return not self.busy and not self.mailbox

    def tell(self, cmd: Any, meta: EventMetadata, fut: asyncio.Future) -> None:
        self.mailbox.append((cmd, meta, fut))
        self._mail.set()

    async def _run(self) -> None:
        while True:
            if not self.mailbox:
                self._mail.clear()
                await self._mail.wait()
            cmd, meta, fut = self.mailbox.popleft()
            if fut.done():                 # the caller gave up before we started: nothing to undo
                continue
            self.busy = True
            try:
                recorded = await self.entity.handle(cmd, meta, self._facts)
                fut.set_result((self.entity.state, recorded))
            except Exception as exc:       # noqa: BLE001 - the caller decides what it means
                if not fut.done():
                    fut.set_exception(exc)
            finally:
                self.busy = False
                self.last_active = time.monotonic()
                state = self.entity.state
                if state is not None and self.entity.decider.terminal(state):
                    self.registry.forget(self.thread_id)

    async def _facts(self, entity: Entity, cmd: Any, needed: tuple) -> dict:
        """The read-side facts the decider asks for (the read model is current: we are its writer)."""
        db, facts = self.registry.db, {}
        for fact in needed:
            match fact:
                case MessageExists(message_id=message_id):
                    facts[fact] = await queries.get_message(db, cmd.project, self.thread_id, message_id) is not None
                case RunStatus(run_id=run_id):
                    facts[fact] = await queries.run_status(db, cmd.project, self.thread_id, run_id)
        return facts


async def backoff(attempt: int) -> None:
    """After losing a race, wait a little (jittered, growing) so two writers stop colliding."""
    await asyncio.sleep(random.uniform(0, 0.001 * 2 ** min(attempt, 8)))


async def load_thread(store: EventStore, thread_id: str) -> thread_domain.ThreadState:
    """A thread's state as its actor loads it: the latest snapshot plus the events after it."""
    entity = Entity(store, thread_domain.DECIDER, thread_id)
    await entity.load()
    return entity.state


class ActorRegistry:
    """Activates thread actors on demand; passivates idle ones and keeps their number bounded."""

    def __init__(self, store: EventStore, db, *, idle_timeout: float = 300.0, max_actors: int = 10_000):
        self.store = store
        self.db = db
        self.idle_timeout = idle_timeout
        self.max_actors = max_actors
        self._actors: OrderedDict[str, ThreadActor] = OrderedDict()
        self._forget_hooks: list[Callable[[str], None]] = []
        self._loop = asyncio.get_running_loop()
        self._sweeper = asyncio.create_task(self._passivate_idle())

    def __len__(self) -> int:
        return len(self._actors)

    def _activate(self, thread_id: str) -> ThreadActor:
        actor = self._actors.get(thread_id)
        if actor is not None:
            self._actors.move_to_end(thread_id)
            return actor
        actor = self._actors[thread_id] = ThreadActor(thread_id, self)
        if len(self._actors) > self.max_actors:
            self._evict_idle()
        return actor

    def _evict_idle(self) -> None:
        for tid, actor in self._actors.items():   # least recently used first
            if actor.idle:
                self._passivate(tid)
                return

    def _passivate(self, thread_id: str) -> None:
        # Synchronous with ask(): no command can slip into a mailbox being thrown away.
        self._actors.pop(thread_id).task.cancel()
        self.forget(thread_id)

    def on_forget(self, hook: Callable[[str], None]) -> None:
        """Call hook(thread_id) when this process lets go of a thread: its actor is passivated, or
        the thread turns out deleted or erased. Caches of a thread's content register here."""
        self._forget_hooks.append(hook)

    def forget(self, thread_id: str) -> None:
        for hook in self._forget_hooks:
            hook(thread_id)

    async def _passivate_idle(self) -> None:
        """One timer for all actors, not one per command."""
        while True:
            await asyncio.sleep(min(max(self.idle_timeout / 4, 0.01), 30.0))
            cutoff = time.monotonic() - self.idle_timeout
            for tid in [t for t, a in self._actors.items() if a.idle and a.last_active <= cutoff]:
                self._passivate(tid)

    async def ask(self, thread_id: str, cmd: Any, meta: EventMetadata = EventMetadata()
                  ) -> tuple[thread_domain.ThreadState, list[RecordedEvent]]:
        fut = self._loop.create_future()
        self._activate(thread_id).tell(cmd, meta, fut)
        return await fut

    async def close(self) -> None:
        self._sweeper.cancel()
        actors = list(self._actors.values())
        self._actors.clear()
        for a in actors:
            a.task.cancel()
        await asyncio.gather(*(a.task for a in actors), return_exceptions=True)


async def execute(store: EventStore, decider: Decider, entity_id: str, cmd: Any,
                  meta: EventMetadata = EventMetadata()) -> tuple[Any, list[RecordedEvent]]:
    """One command on a short stream with no actor (agents, files): loaded for this command."""
    entity = Entity(store, decider, entity_id)
    recorded = await entity.handle(cmd, meta)
    return entity.state, recorded
