"""One subscription's worker: the reader, the sender and the flusher that service/webhooks/dispatcher.py
describes, while this process holds the subscription's lease. Its state is all in memory; the log and
the webhook tables are the truth it is rebuilt from after a crash."""

from __future__ import annotations

import asyncio
import bisect
import heapq
import random
import time
from collections import deque
from typing import TYPE_CHECKING

import asyncpg
import msgspec
import structlog

from events.store import Checkpoint
from events.subscriptions import CatchUp, LeaseLost, wait_for_wake
from service.ids import new_id
from service.webhooks import store
from service.webhooks.payloads import matches
from service.webhooks.retry import next_attempt_at
from service.webhooks.store import Delivery

if TYPE_CHECKING:
    from service.webhooks.dispatcher import WebhookDispatcher

log = structlog.get_logger("threadline.webhooks")

READ_PAGE = 500
CHECKPOINT_EVERY = 1.0      # seconds: how often a checkpoint that recorded nothing is still saved
FLUSH_WINDOW = 0.02         # seconds attempts gather before they are written together
RECORD_WITHIN = 1.0         # seconds a delivery read from the log waits for its first attempt before it is
                            # written as pending (normally it is written once, with that attempt)
READ_GATHER = 0.01          # seconds appends gather after a wake-up: read and recorded together, and the
                            # workers, woken together, read the log once


class Worker:
    """Reads, sends and records for one subscription while this process holds its lease."""

    def __init__(self, dispatcher: WebhookDispatcher, sub: store.Subscription):
        self.d, self.sub = dispatcher, sub
        self.read_wake, self.send_wake = asyncio.Event(), asyncio.Event()
        self.reload_wake, self.flush_wake = asyncio.Event(), asyncio.Event()
        self.queues: dict[str, deque[Delivery]] = {}     # per thread, in order; the head is next
        self.known: set[str] = set()                     # delivery ids queued here
        self.ready: deque[str] = deque()                 # threads whose head is due
        self.scheduled: set[str] = set()
        self.timers: list[tuple[float, str]] = []        # (when, thread) heads waiting for a retry
        self.in_flight: dict[str, asyncio.Task] = {}     # thread -> its attempt
        self.outcomes: dict[str, store.Outcome] = {}     # attempts not written yet
        # Deliveries read from the log and not written yet. The saved checkpoint stays behind the
        # first read that still has one, so a crash reads (and sends) them again: at least once.
        self.unrecorded: dict[str, Delivery] = {}
        self.reads: deque[tuple[int, Checkpoint]] = deque()   # (read number, checkpoint after it), not saved yet
        self.read_count = 0
        self.erased: dict[str, None] = {}                    # threads erased while we held their deliveries
        # Erased since our last write began: that write (or one before it, if the erasure's notice
        # came late) may have stored the thread's content after the erasure's scrub ran.
        self.to_scrub: set[str] = set()
        self.flush_lock = asyncio.Lock()
        self._task = asyncio.create_task(self._run())

    def finished(self) -> bool:
        return self._task.done()

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self.in_flight.values()):
            task.cancel()
        await asyncio.gather(*self.in_flight.values(), return_exceptions=True)
        try:
            await self._flush(everything=True)
        except Exception:  # noqa: BLE001 - unwritten attempts mean those deliveries are sent again
            log.warning("webhook_flush_failed", webhook_id=self.sub.id, exc_info=True)

    async def _run(self) -> None:
        try:
            self.checkpoint = self.saved = await store.checkpoint(self.d.db, self.sub.id)
            self.saved_at = time.monotonic()
            await self._reload()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._reader())
                group.create_task(self._sender())
                group.create_task(self._flusher())
                group.create_task(self._reloader())
        except* LeaseLost:
            log.info("webhook_lease_lost", webhook_id=self.sub.id)
        except* Exception:
            log.exception("webhook_worker_failed", webhook_id=self.sub.id)

    # -- reading the log -----------------------------------------------------------------------

    async def _reader(self) -> None:
        reader = CatchUp(self.d.page, self._read, page_size=READ_PAGE, idle=self.d.config.run_sweep_seconds,
                         notified_xid=lambda: self.d.notified_xid, gather=READ_GATHER, name=self.sub.id)
        await reader.follow(self.checkpoint, self.read_wake)

    async def _read(self, page) -> None:
        """A page of the log: its deliveries queued (and, once recorded, the checkpoint past it)."""
        ours = [r for r in page.events if page.projects.get(r.stream) == self.sub.project]
        built = page.built
        if ours and self.sub.project not in page.served:       # a subscription newer than the read
            built = await self.d.builder.build(ours)
        now = time.time()
        self.read_count += 1
        for r in ours:
            if r.type == "ThreadErased":      # what its thread's earlier events said is not sent
                self.drop_thread(r.stream.removeprefix("thread-"))
            for o in built.get(r.position, []):
                if matches(self.sub.event_types, o.type):
                    d = Delivery(new_id("whd_"), o.event_id, o.type, o.thread_id, o.seq, o.body,
                                 next_attempt_at=now, created_at=now, read=self.read_count)
                    self.unrecorded[d.id] = d
                    self._enqueue(d)
        self.reads.append((self.read_count, page.after))
        self.checkpoint = page.after
        self.flush_wake.set()

    # -- the queue of each thread --------------------------------------------------------------

    def _enqueue(self, d: Delivery) -> None:
        if d.id in self.known:
            return
        self.known.add(d.id)
        q = self.queues.setdefault(d.thread_id, deque())
        if not q or q[-1].seq < d.seq:
            q.append(d)
        else:     # an older delivery sent again: it goes in its place, behind an attempt in flight
            items = list(q)
            first = 1 if d.thread_id in self.in_flight else 0
            bisect.insort(items, d, lo=first, key=lambda x: x.seq)
            q.clear()
            q.extend(items)
        if d.thread_id not in self.in_flight:
            self._schedule(d.thread_id)

    def _schedule(self, thread_id: str) -> None:
        head = self.queues[thread_id][0]
        if head.next_attempt_at <= time.time():
            if thread_id not in self.scheduled:
                self.scheduled.add(thread_id)
                self.ready.append(thread_id)
        else:
            heapq.heappush(self.timers, (head.next_attempt_at, thread_id))
        self.send_wake.set()

    def drop_thread(self, thread_id: str) -> None:
        """The thread was erased: what waits here quoting its content is not sent (and what is
        written from now on keeps no content)."""
        self.erased[thread_id] = None
        self.to_scrub.add(thread_id)
        self.flush_wake.set()
        if len(self.erased) > 10_000:
            del self.erased[next(iter(self.erased))]
        q = self.queues.get(thread_id)
        if not q:
            return
        keep = [d for i, d in enumerate(q)
                if d.event_type == "thread.erased" or (i == 0 and thread_id in self.in_flight)]
        kept = {d.id for d in keep}
        for d in q:
            if d.id not in kept:
                d.dropped = True             # an unwritten one is still written (dead), or it would hold the checkpoint
        self.known.difference_update(d.id for d in q if d.id not in kept)
        q.clear()
        q.extend(keep)
        if not q:
            del self.queues[thread_id]

    async def _reloader(self) -> None:
        while True:
            await wait_for_wake(self.reload_wake, None)
            await self._flush()
            await self._reload()

    async def _reload(self) -> None:
        """Deliveries waiting in the table that this worker does not hold: after a restart, a
        takeover, or a delivery sent again through the API."""
        for delivery in await store.pending(self.d.db, self.sub.id):
            if delivery.id not in self.known:
                self._enqueue(delivery)

    # -- sending -------------------------------------------------------------------------------

    async def _sender(self) -> None:
        limit = self.d.config.webhook_concurrency
        while True:
            now = time.time()
            while self.timers and self.timers[0][0] <= now:
                _, thread_id = heapq.heappop(self.timers)
                q = self.queues.get(thread_id)
                if q and thread_id not in self.in_flight and thread_id not in self.scheduled \
                        and q[0].next_attempt_at <= now:
                    self.scheduled.add(thread_id)
                    self.ready.append(thread_id)
            while self.ready and len(self.in_flight) < limit:
                thread_id = self.ready.popleft()
                self.scheduled.discard(thread_id)
                q = self.queues.get(thread_id)
                if q and thread_id not in self.in_flight:
                    self.in_flight[thread_id] = asyncio.create_task(self._attempt(q[0]))
            timeout = min(1.0, max(0.0, self.timers[0][0] - now)) if self.timers else 1.0
            await wait_for_wake(self.send_wake, timeout)

    async def _attempt(self, d: Delivery) -> None:
        try:
            started = time.time()
            status, error, ms = await self.d.send(self.sub, d)
            now = time.time()
            d.attempt_count += 1
            if d.first_attempt_at is None:
                d.first_attempt_at = started
            attempt = {"at": int(started), "status_code": status, "latency_ms": round(ms, 1), "error": error}
            if error is None:
                outcome, done = "delivered", True
            else:
                d.failures += 1
                retry_at = next_attempt_at(self.d.retry, d.failures, d.first_attempt_at, now, random.random())
                if retry_at is None:
                    outcome, done = "dead", True
                    log.warning("webhook_dead_lettered", webhook_id=self.sub.id, delivery_id=d.id,
                                attempts=d.attempt_count, error=error)
                else:
                    outcome, done = "pending", False
                    d.next_attempt_at = retry_at
            self._note(store.Outcome(d.id, outcome, d.attempt_count, [attempt], d.first_attempt_at,
                                     d.next_attempt_at, now if outcome == "delivered" else None))
        finally:
            self.in_flight.pop(d.thread_id, None)
        q = self.queues.get(d.thread_id)
        if q and q[0] is d and done:
            q.popleft()
            self.known.discard(d.id)
        if q:
            self._schedule(d.thread_id)
        else:
            self.queues.pop(d.thread_id, None)
        self.send_wake.set()

    # -- writing attempts ------------------------------------------------------------------------

    def _note(self, outcome: store.Outcome) -> None:
        earlier = self.outcomes.get(outcome.id)
        if earlier is not None:
            outcome = msgspec.structs.replace(outcome, attempts=earlier.attempts + outcome.attempts)
        self.outcomes[outcome.id] = outcome
        self.flush_wake.set()

    async def _flusher(self) -> None:
        while True:
            # Deliveries waiting for a first attempt, or reads not saved, are written in time anyway.
            await wait_for_wake(self.flush_wake, RECORD_WITHIN if self.unrecorded else CHECKPOINT_EVERY if self.reads else None)
            await asyncio.sleep(FLUSH_WINDOW)     # a window for attempts to gather: one write for many
            try:
                await self._flush()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("webhook_record_failed", webhook_id=self.sub.id, error=str(exc))
                await asyncio.sleep(1.0)
                self.flush_wake.set()

    async def _flush(self, everything: bool = False) -> None:
        """Write attempts, the deliveries read since the last write that are due, and the checkpoint
        as far as every delivery before it is written. `everything`: write all (when stopping)."""
        async with self.flush_lock:
            if self.to_scrub:     # after every write that could still hold the content: it has the lock
                threads, self.to_scrub = sorted(self.to_scrub), set()
                try:
                    await store.scrub(self.d.db, self.sub.id, threads)
                except BaseException:
                    self.to_scrub.update(threads)
                    raise
            now = time.time()
            batch, self.outcomes = self.outcomes, {}
            added, waiting = [], None
            for d in self.unrecorded.values():
                if everything or d.dropped or d.id in batch or now - d.created_at >= RECORD_WITHIN:
                    added.append(d)
                elif waiting is None or d.read < waiting:
                    waiting = d.read
            updated = [o for delivery_id, o in batch.items() if delivery_id not in self.unrecorded]
            saved_reads = sum(1 for n, _ in self.reads if waiting is None or n < waiting)
            target = self.reads[saved_reads - 1][1] if saved_reads else self.saved
            if not added and not updated and (target == self.saved or time.monotonic() - self.saved_at < CHECKPOINT_EVERY):
                return
            rows = [(d, batch.get(d.id), None if d.thread_id in self.erased and d.event_type != "thread.erased"
                     else d.body.decode()) for d in added]
            try:
                await store.save(self.d.db, self.sub.id, self.d.owner, self.saved, target, rows, updated, now)
            except BaseException:
                for outcome in batch.values():      # keep them, with anything noted meanwhile after them
                    later = self.outcomes.get(outcome.id)
                    self.outcomes[outcome.id] = outcome if later is None else msgspec.structs.replace(
                        later, attempts=outcome.attempts + later.attempts)
                raise
            for d in added:
                del self.unrecorded[d.id]
            for _ in range(saved_reads):
                self.reads.popleft()
            self.saved, self.saved_at = target, time.monotonic()
