"""Delivering webhooks: each subscription reads the log from its own checkpoint and sends.

One dispatcher per process. It leases enabled subscriptions in Postgres (a lapsed lease means
its process died; another takes over) and runs a worker for each one it holds:

(service/webhooks/worker.py), whose

- the reader reads the log with the gap-safe `read_all` from the subscription's checkpoint and
  turns the project's events into webhook events, queued in memory as deliveries;
- the sender sends each thread's deliveries in order (one at a time per thread, many threads at
  once), retries failures with backoff and dead-letters them after the retry window;
- the flusher writes, every few milliseconds and in one statement, the deliveries that had their
  first attempt (a delivery's row is written once, already delivered, on the common path), those
  that waited RECORD_WITHIN without one (as pending), later attempts, and the checkpoint — moved
  only past reads whose deliveries are all written. A process killed before a write reads those
  events again and sends them again, with the same `webhook-id`: that is what at-least-once means.

Workers share reads of the log (`page`: the subscriptions of a process mostly stand at the same
checkpoint, so one read, decrypt and payload build serves them all) and the HTTP client's kept-alive
connections; nothing they share waits on an endpoint, so a slow or failing one only ever holds up
its own subscription. NOTIFY wakes readers (appends) and workers (subscription changes); the log
and the tables decide what is sent.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import NamedTuple

import asyncpg
import structlog

from events.store import Checkpoint, EventStore, RecordedEvent
from events.subscriptions import wait_for_wake
from service.config import Config
from service.streams.hub import CHANNEL as APPENDED, listen_forever
from service.webhooks import store
from service.webhooks.store import Delivery
from service.outbound.policy import AddressPolicy, AddressRefused
from service.outbound.posts import ConnectFailed, WebhookClient
from service.webhooks.payloads import Outgoing, PayloadBuilder
from service.webhooks.retry import RetryPolicy
from service.webhooks.signing import signature_header
from service.webhooks.worker import READ_PAGE, Worker

log = structlog.get_logger("threadline.webhooks")

USER_AGENT = b"Threadline-Webhooks/1"
PURGE_EVERY = 3600.0


class Page(NamedTuple):
    """A read of the log: its events, where it ends, each stream's project, and the webhook events
    built for the projects `served` when it was read."""
    events: list[RecordedEvent]
    after: Checkpoint
    projects: dict[str, str | None]
    served: frozenset[str]
    built: dict[int, list[Outgoing]]


class WebhookDispatcher:
    def __init__(self, db: asyncpg.Pool, events: EventStore, database_url: str, config: Config):
        self.db, self.events, self.database_url, self.config = db, events, database_url, config
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.policy = AddressPolicy.parse(config.webhook_allow_http, config.webhook_allow_networks)
        self.retry = RetryPolicy(config.webhook_first_retry_seconds, config.webhook_max_retry_delay_seconds,
                                 config.webhook_retry_window_seconds)
        self.builder = PayloadBuilder(db)
        self.workers: dict[str, Worker] = {}
        self.notified_xid = 0            # the newest append we were told of: readers must get past it
        self.client: WebhookClient | None = None
        self._pages: dict[tuple[int, int], asyncio.Future[Page]] = {}
        self._sweep_now = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._purged_at = 0.0

    def new_client(self) -> WebhookClient:
        """The HTTP client deliveries go out with: refused addresses dropped at connect time, the
        configured timeouts, no proxies from the environment."""
        return WebhookClient(self.policy, self.config.webhook_timeout_seconds,
                             self.config.webhook_connect_timeout_seconds)

    def start(self) -> None:
        self.client = self.new_client()
        self._tasks = [asyncio.create_task(self._sweep_loop()), asyncio.create_task(self._listen())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        workers, self.workers = list(self.workers.values()), {}
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        try:
            await store.release(self.db, self.owner, [w.sub.id for w in workers])
        except Exception:  # noqa: BLE001 - the leases lapse by themselves
            log.warning("webhook_release_failed", exc_info=True)
        if self.client is not None:
            await self.client.close()

    # -- which subscriptions this process delivers for --------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self._sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database may be away; try again next sweep
                log.warning("webhook_sweep_failed", exc_info=True)
            # Leases are renewed every third of their time; a change to any subscription (NOTIFY)
            # sweeps at once, so a new or re-enabled webhook starts without waiting.
            await wait_for_wake(self._sweep_now, self.config.run_lease_seconds / 3)
            if self.client is not None:
                self.client.prune()

    async def _sweep(self) -> None:
        held = {s.id: s for s in await store.claim(self.db, self.owner, self.config.run_lease_seconds)}
        for webhook_id, worker in list(self.workers.items()):
            if webhook_id not in held or worker.finished():
                del self.workers[webhook_id]
                await worker.stop()
        for webhook_id, sub in held.items():
            if webhook_id in self.workers:
                self.workers[webhook_id].sub = sub
            else:
                self.workers[webhook_id] = Worker(self, sub)
        if time.monotonic() - self._purged_at > PURGE_EVERY:
            self._purged_at = time.monotonic()
            await store.purge_old(self.db, self.config.webhook_delivery_retention_days)

    # -- wake-ups ------------------------------------------------------------------------------

    def _on_append(self, _conn, _pid, _channel, payload: str) -> None:
        xid = payload.rpartition("|")[2]
        if xid.isdigit():
            self.notified_xid = max(self.notified_xid, int(xid))
        self._pages.clear()       # a read from now on may show more
        for worker in self.workers.values():
            worker.read_wake.set()

    def _on_change(self, _conn, _pid, _channel, payload: str) -> None:
        kind, _, ident = payload.partition(":")
        if kind == "changed":
            self._sweep_now.set()
            if ident in self.workers:
                self.workers[ident].reload_wake.set()
        elif kind == "erased":
            for worker in self.workers.values():
                worker.drop_thread(ident)

    async def _listen(self) -> None:
        def caught_up() -> None:          # whatever happened while we were not listening
            for worker in self.workers.values():
                worker.read_wake.set()
                worker.reload_wake.set()

        await listen_forever(self.database_url, {APPENDED: self._on_append, store.CHANNEL: self._on_change},
                             caught_up)

    # -- reading the log, once for every worker ---------------------------------------------------

    async def page(self, after: Checkpoint) -> Page:
        """The log after a checkpoint: one read for every worker that asks for it until the next
        append is announced (workers wake together, so they mostly stand at the same place)."""
        key = (after.xid, after.position)
        page = self._pages.get(key)
        if page is None or (page.done() and (page.cancelled() or page.exception() is not None)):
            page = self._pages[key] = asyncio.ensure_future(self._read_page(after))
            while len(self._pages) > 64:
                del self._pages[next(iter(self._pages))]
        return await asyncio.shield(page)

    async def _read_page(self, after: Checkpoint) -> Page:
        events, end = await self.events.read_all(after, READ_PAGE)
        if not events:
            return Page(events, end, {}, frozenset(), {})
        projects = await self.builder.project_of(events)
        served = frozenset(w.sub.project for w in self.workers.values())
        built = await self.builder.build([r for r in events if projects.get(r.stream) in served])
        return Page(events, end, projects, served, built)

    # -- sending -------------------------------------------------------------------------------

    async def send(self, sub: store.Subscription, d: Delivery) -> tuple[int | None, str | None, float]:
        """One attempt: (HTTP status, error, latency ms). Success is any 2xx; redirects are not followed."""
        timestamp = int(time.time())
        signature = signature_header(list(sub.secrets), d.event_id, timestamp, d.body)
        headers = b"Content-Type: application/json\r\nUser-Agent: %s\r\nwebhook-id: %s\r\n" \
                  b"webhook-timestamp: %d\r\nwebhook-signature: %s\r\n" % (
                      USER_AGENT, d.event_id.encode(), timestamp, signature.encode())
        started = time.perf_counter()
        status, error = None, None
        try:
            status = await self.client.post(sub.url, headers, d.body)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except AddressRefused as exc:
            error = f"refused: the URL {exc}"
        except TimeoutError:
            error = "timed out"
        except ConnectFailed as exc:
            # Refused, unreachable or silent look alike to the subscriber (no port scanning through
            # webhooks); the operator's log has the detail.
            log.info("webhook_connect_failed", webhook_id=sub.id, reason=str(exc))
            error = "could not connect to the endpoint"
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        except Exception as exc:  # noqa: BLE001 - an attempt that fails in any way is a failed attempt
            log.warning("webhook_send_error", webhook_id=sub.id, exc_info=True)
            error = f"{type(exc).__name__}"
        return status, error, (time.perf_counter() - started) * 1000
