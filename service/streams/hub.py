"""Live delivery of committed events to the streams that follow them.

Appends committed in this process are handed to their subscribers straight from memory, into a
bounded queue each; a subscriber that falls too far behind is marked overflowed and its response
ends (the client resumes from its last event id). Appends committed by another process arrive as a
NOTIFY naming their streams: a wake-up only — the subscriber then reads the log from where it is.
Correctness always comes from the log's versions: gaps are read from the database, repeats dropped.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from typing import Callable

import asyncpg
import structlog

from events.store import RecordedEvent

log = structlog.get_logger("threadline.streams")

CHANNEL = "threadline_appended"
MAX_QUEUED = 5000          # events a subscriber may have waiting before it is cut loose
PROCESS_TAG = os.urandom(4).hex()


class Subscription:
    def __init__(self, stream: str):
        self.stream = stream
        self.queue: deque[RecordedEvent] = deque()
        self.overflowed = False
        self.closing = False       # the service is stopping: end the response, the client resumes elsewhere
        self.stale = False         # something was appended that only the log can tell
        self.wakeup = asyncio.Event()
        self._timed_out = False

    def push(self, events: list[RecordedEvent]) -> None:
        if self.overflowed:
            return
        if len(self.queue) + len(events) > MAX_QUEUED:
            self.overflowed = True
            self.queue.clear()
        else:
            self.queue.extend(events)
        self.wakeup.set()

    def poke(self) -> None:
        self.stale = True
        self.wakeup.set()

    async def wait(self, timeout: float) -> bool:
        """True when woken, False on timeout (time for a keep-alive). A timer, not wait_for: that
        would make a task per wait, for every idle stream."""
        if not self.wakeup.is_set():
            timer = asyncio.get_running_loop().call_later(timeout, self._time_out)
            try:
                await self.wakeup.wait()
            finally:
                timer.cancel()
        self.wakeup.clear()
        timed_out, self._timed_out = self._timed_out, False
        return not timed_out or bool(self.queue) or self.stale or self.closing or self.overflowed

    def _time_out(self) -> None:
        self._timed_out = True
        self.wakeup.set()

    def take(self) -> tuple[list[RecordedEvent], bool]:
        """(events pushed from memory, whether the log must be read as well)."""
        events = list(self.queue)
        self.queue.clear()
        stale, self.stale = self.stale, False
        return events, stale


class StreamHub:
    def __init__(self):
        self._subs: dict[str, set[Subscription]] = {}
        self._listener: asyncio.Task | None = None
        self._closing = False
        self._append_hooks: list[Callable[[list[str] | None], None]] = []

    def subscribe(self, stream: str) -> Subscription:
        sub = Subscription(stream)
        sub.closing = self._closing
        self._subs.setdefault(stream, set()).add(sub)
        return sub

    def shutdown(self) -> None:
        """End every live stream (the service is stopping); new ones end at once."""
        self._closing = True
        for subs in self._subs.values():
            for sub in subs:
                sub.closing = True
                sub.wakeup.set()

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.stream)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.stream]

    def __len__(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def publish(self, events: list[RecordedEvent]) -> None:
        """Called by the event store after each commit, with what it committed."""
        for hook in self._append_hooks:
            hook([r.stream for r in events])
        if not self._subs:
            return
        by_stream: dict[str, list[RecordedEvent]] = {}
        for r in events:
            if r.stream in self._subs:
                by_stream.setdefault(r.stream, []).append(r)
        for stream, batch in by_stream.items():
            for sub in self._subs.get(stream, ()):
                sub.push(batch)

    def poke(self, streams: list[str] | None) -> None:
        """Another process appended to these streams (None: to any)."""
        targets = self._subs.keys() if streams is None else [s for s in streams if s in self._subs]
        for stream in list(targets):
            for sub in self._subs.get(stream, ()):
                sub.poke()

    # -- other processes ------------------------------------------------------------------------

    def on_append(self, hook: Callable[[list[str] | None], None]) -> None:
        """Call hook(streams) when this process or another appended to these streams (None: to any,
        or announcements may have been missed: the LISTEN connection was opened again). Caches of
        read models register here."""
        self._append_hooks.append(hook)

    def _remote_append(self, streams: list[str] | None) -> None:
        self.poke(streams)
        for hook in self._append_hooks:
            hook(streams)

    def listen(self, database_url: str) -> None:
        self._listener = asyncio.create_task(self._listen(database_url))

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)

    async def _listen(self, database_url: str) -> None:
        """One LISTEN connection per process, reopened after a database outage."""
        def on_notify(_conn, _pid, _channel, payload: str) -> None:
            tag, _, rest = payload.partition("|")
            streams = rest.rpartition("|")[0]         # after the streams: the writer's transaction id
            if tag != PROCESS_TAG:
                self._remote_append(None if streams == "*" else streams.split(","))

        # Whatever happened while we were not listening: every subscriber reads the log.
        await listen_forever(database_url, {CHANNEL: on_notify}, lambda: self._remote_append(None))


async def listen_forever(database_url: str, listeners: dict[str, Callable[..., None]],
                         on_connected: Callable[[], None]) -> None:
    """LISTEN on the channels with one connection, reopened (and `on_connected` called again)
    after a database outage, until cancelled. NOTIFY only wakes: readers still poll on their own."""
    while True:
        conn = None
        try:
            conn = await asyncpg.connect(database_url)
            for channel, callback in listeners.items():
                await conn.add_listener(channel, callback)
            on_connected()
            closed = asyncio.Event()
            conn.add_termination_listener(lambda _c: closed.set())
            await closed.wait()
        except asyncio.CancelledError:
            if conn is not None:
                await conn.close()
            raise
        except Exception:  # noqa: BLE001 - keep trying
            log.warning("listen_failed", channels=list(listeners), exc_info=True)
        await asyncio.sleep(1.0)


def notify_payload(streams: list[str]) -> str:
    """The NOTIFY payload for an append: our tag and the thread and agent streams written (or '*'
    if too long); the statement adds the transaction id."""
    named = sorted({s for s in streams if s.startswith(("thread-", "agent-"))})
    joined = ",".join(named)
    return f"{PROCESS_TAG}|{joined if len(joined) < 7000 else '*'}"
