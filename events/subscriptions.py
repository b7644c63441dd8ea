"""Durable catch-up subscriptions: a consumer of the whole log that resumes where it left off.

A subscription is a row (table `subscriptions`): its checkpoint in the log and the lease of the
process that consumes it. A consumer claims its subscriptions (a lapsed lease means the holder
died), follows the log from the checkpoint with `CatchUp`, and records what it did with a page in
the same statement that moves the checkpoint (`advance_subscription`, fenced by the lease and the
old checkpoint), so a crash replays what was not recorded: at least once, never lost. Reading is
gap-safe (`read_all`): an event committed late by an older transaction is never skipped.
NOTIFY only wakes the reader; the log and the checkpoint decide what it reads.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, NamedTuple, Protocol, Sequence

import asyncpg
import structlog

from events.store import Checkpoint, RecordedEvent

log = structlog.get_logger("threadline.subscriptions")



class Page(Protocol):
    """A read of the log: its events, and the checkpoint after them."""
    events: Sequence[RecordedEvent]
    after: Checkpoint


class LogPage(NamedTuple):
    events: Sequence[RecordedEvent]
    after: Checkpoint


def pages_of(store: Any, page_size: int) -> Callable[[Checkpoint], Awaitable[LogPage]]:
    """A CatchUp reader over an EventStore's gap-safe read_all."""
    async def read(after: Checkpoint) -> LogPage:
        return LogPage(*await store.read_all(after, page_size))
    return read

ADVANCE = "advance_subscription($1, $2, $3::text::xid8, $4, $5::text::xid8, $6)"


class LeaseLost(Exception):
    """Another process holds the subscription now (our lease lapsed): stop consuming it."""


async def create(conn, name: str, *, from_start: bool = False) -> None:
    """The subscription, if it does not exist yet: at the log's present, or at its start."""
    if from_start:
        await conn.execute("INSERT INTO subscriptions (name, checkpoint_xid) VALUES ($1, '0'::xid8) "
                           "ON CONFLICT (name) DO NOTHING", name)
    else:
        await conn.execute("INSERT INTO subscriptions (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", name)


async def drop(conn, name: str) -> None:
    await conn.execute("DELETE FROM subscriptions WHERE name = $1", name)


async def claim(db, names: Sequence[str], owner: str, lease_seconds: float) -> list[str]:
    """The named subscriptions this owner holds now (taken or renewed)."""
    return [r[0] for r in await db.fetch("SELECT claim_subscriptions($1::text[], $2, $3)",
                                         list(names), owner, lease_seconds)]


async def release(db, names: Sequence[str], owner: str) -> None:
    await db.execute("UPDATE subscriptions SET lease_owner = NULL, lease_until = NULL "
                     "WHERE lease_owner = $1 AND name = ANY($2::text[])", owner, list(names))


async def checkpoint(db, name: str) -> Checkpoint:
    row = await db.fetchrow(
        "SELECT checkpoint_xid::text::bigint, checkpoint_position FROM subscriptions WHERE name = $1", name)
    return Checkpoint(row[0], row[1]) if row else Checkpoint()


async def advance(db, name: str, owner: str, old: Checkpoint, new: Checkpoint) -> None:
    """Move the checkpoint (a consumer with nothing else to record); LeaseLost if it is not ours."""
    if not await db.fetchval(f"SELECT {ADVANCE}", *advance_args(name, owner, old, new)):
        raise LeaseLost(name)


def advance_args(name: str, owner: str, old: Checkpoint, new: Checkpoint) -> tuple:
    """The arguments of ADVANCE ($1–$6), for a consumer's own statement that records its work."""
    return name, owner, str(old.xid), old.position, str(new.xid), new.position


async def wait_for_wake(event: asyncio.Event, timeout: float | None) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        pass
    event.clear()


class CatchUp:
    """Follows the log from a checkpoint: every page `read` gives to `handle`, in order, as it comes.

    Caught up, it waits for `wake` (set by NOTIFY of an append) or `idle` seconds. Told of an
    append by a transaction the gap-safe read cannot show yet (`notified_xid` is past the
    checkpoint: an older transaction is still open), it looks again shortly, backing off while it
    stays open. A database error is logged and retried after a second; LeaseLost ends it.
    """

    def __init__(self, read: Callable[[Checkpoint], Awaitable[Page]], handle: Callable[[Any], Awaitable[None]], *,
                 page_size: int, idle: float,
                 notified_xid: Callable[[], int] = lambda: 0, gather: float = 0.0, name: str = ""):
        self.read, self.handle = read, handle
        self.page_size, self.idle, self.gather = page_size, idle, gather
        self.notified_xid = notified_xid
        self.name = name
        self.checkpoint = Checkpoint()

    async def follow(self, checkpoint: Checkpoint, wake: asyncio.Event) -> None:
        self.checkpoint = checkpoint
        behind_for = 0.0
        while True:
            try:
                await self.catch_up()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("subscription_read_failed", subscription=self.name, error=str(exc))
                await asyncio.sleep(1.0)
                continue
            if self.checkpoint.xid < self.notified_xid():
                behind_for = min(0.2, max(0.002, behind_for * 2))
                await wait_for_wake(wake, behind_for)
                continue
            behind_for = 0.0
            await wait_for_wake(wake, self.idle)
            if self.gather:
                await asyncio.sleep(self.gather)     # appends gather: read and handled together

    async def catch_up(self) -> None:
        """Read and handle pages until the log has no more (for now)."""
        while True:
            page = await self.read(self.checkpoint)
            if not page.events:
                return
            await self.handle(page)
            self.checkpoint = page.after
            if len(page.events) < self.page_size:
                return
