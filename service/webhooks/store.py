"""The webhooks tables: subscriptions and deliveries. Each webhook consumes the log through its
durable subscription `webhook:<id>` (events/subscriptions.py: its lease and checkpoint).

Plain SQL, one function per statement. The API reads and writes subscriptions and deliveries
here; the dispatcher claims subscriptions, moves checkpoints and records attempts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import msgspec

from events import subscriptions
from events.store import Checkpoint
from events.subscriptions import ADVANCE, LeaseLost, advance_args
from projections.queries import Page, PageRequest, _page
from service.webhooks.payloads import Outgoing

CHANNEL = "threadline_webhooks"      # NOTIFY payloads: "changed:<webhook id>", "erased:<thread id>"
SECRET_GRACE_SECONDS = 86_400        # a rotated-out secret still signs for a day

_WEBHOOK_JSON = """jsonb_build_object('id', id, 'object', 'webhook', 'url', url, 'events', to_jsonb(event_types),
    'description', description, 'enabled', enabled, 'created_at', created_at)"""
_DELIVERY_JSON = """jsonb_build_object('id', id, 'object', 'webhook.delivery', 'webhook_id', webhook_id,
    'event_id', event_id, 'event_type', event_type, 'thread_id', thread_id, 'status', status,
    'attempt_count', attempt_count, 'created_at', floor(created_at)::bigint,
    'next_attempt_at', CASE WHEN status = 'pending' THEN ceil(next_attempt_at)::bigint END,
    'delivered_at', floor(delivered_at)::bigint, 'attempts', attempts)"""


def subscription(webhook_id: str) -> str:
    """The name of a webhook's durable subscription."""
    return f"webhook:{webhook_id}"


class Subscription(msgspec.Struct, frozen=True):
    id: str
    project: str
    url: str
    event_types: tuple[str, ...]
    secrets: tuple[str, ...]          # the current one first


# -- the API's side -------------------------------------------------------------------------------

async def create(db, webhook_id: str, project: str, url: str, event_types: list[str], description: str | None,
                 enabled: bool, secret: str, created_at: int) -> str:
    async with db.acquire() as conn, conn.transaction():
        row = await conn.fetchval(
            f"""INSERT INTO webhooks (id, project, url, event_types, description, enabled, secret, created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_WEBHOOK_JSON}::text""",
            webhook_id, project, url, event_types, description, enabled, secret, created_at)
        await subscriptions.create(conn, subscription(webhook_id))      # from now on
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"changed:{webhook_id}")
    return row


async def get(db, project: str, webhook_id: str) -> str | None:
    return await db.fetchval(f"SELECT {_WEBHOOK_JSON}::text FROM webhooks WHERE id = $1 AND project = $2",
                             webhook_id, project)


async def list_page(db, project: str, page: PageRequest) -> Page:
    return await _page(db, f"(SELECT id, project, {_WEBHOOK_JSON} AS data FROM webhooks) w", "project = $1",
                       [project], page)


async def update(db, project: str, webhook_id: str, changes: dict, new_secret: str | None) -> str | None:
    """Apply `changes` (url, event_types, description, enabled) and maybe a new secret; tell the
    dispatchers. None if there is no such webhook."""
    sets, args = [], [webhook_id, project]
    for column, value in changes.items():
        args.append(value)
        sets.append(f"{column} = ${len(args)}")
    if new_secret is not None:
        args.append(new_secret)
        sets.append(f"previous_secret = secret, previous_until = now() + make_interval(secs => {SECRET_GRACE_SECONDS}),"
                    f" secret = ${len(args)}")
    if not sets:
        return await get(db, project, webhook_id)
    async with db.acquire() as conn, conn.transaction():
        row = await conn.fetchval(
            f"UPDATE webhooks SET {', '.join(sets)} WHERE id = $1 AND project = $2 RETURNING {_WEBHOOK_JSON}::text",
            *args)
        if row is not None:
            if changes.get("enabled") is False:     # its deliverer stops at its next sweep
                await conn.execute("UPDATE subscriptions SET lease_owner = NULL, lease_until = NULL WHERE name = $1",
                                   subscription(webhook_id))
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"changed:{webhook_id}")
    return row


async def delete(db, project: str, webhook_id: str) -> bool:
    async with db.acquire() as conn, conn.transaction():
        gone = await conn.fetchval("DELETE FROM webhooks WHERE id = $1 AND project = $2 RETURNING true",
                                   webhook_id, project)
        if gone:
            await subscriptions.drop(conn, subscription(webhook_id))
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"changed:{webhook_id}")
    return bool(gone)


async def list_deliveries(db, webhook_id: str, status: str | None, page: PageRequest) -> Page:
    scope, args = "webhook_id = $1", [webhook_id]
    if status is not None:
        args.append(status)
        scope += " AND status = $2"
    return await _page(db, f"(SELECT id, webhook_id, status, {_DELIVERY_JSON} AS data FROM webhook_deliveries) d",
                       scope, args, page)


async def get_delivery(db, webhook_id: str, delivery_id: str) -> str | None:
    return await db.fetchval(f"SELECT {_DELIVERY_JSON}::text FROM webhook_deliveries WHERE id = $1 AND webhook_id = $2",
                             delivery_id, webhook_id)


async def retry_delivery(db, webhook_id: str, delivery_id: str) -> str | None:
    """Send a delivery again (a dead one, or a delivered one the receiver lost): pending now, with
    a new retry window; its earlier attempts stay listed."""
    async with db.acquire() as conn, conn.transaction():
        row = await conn.fetchval(
            f"""UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $3, first_attempt_at = NULL
                WHERE id = $1 AND webhook_id = $2 AND payload IS NOT NULL RETURNING {_DELIVERY_JSON}::text""",
            delivery_id, webhook_id, time.time())
        if row is not None:
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"changed:{webhook_id}")
    return row


# Erasure's rewrite of deliveries: no content kept (`thread.erased` itself stays), nothing waiting sent.
_SCRUB = """UPDATE webhook_deliveries SET payload = NULL,
                status = CASE WHEN status = 'pending' THEN 'dead' ELSE status END
            WHERE event_type <> 'thread.erased' AND payload IS NOT NULL AND """


async def erase_thread(db, thread_id: str) -> int:
    """A thread's content goes from every delivery (the `thread.erased` events themselves stay);
    what was still waiting to go is dead-lettered."""
    async with db.acquire() as conn, conn.transaction():
        n = await conn.fetchval(
            f"WITH scrubbed AS ({_SCRUB} thread_id = $1 RETURNING 1) SELECT count(*) FROM scrubbed", thread_id)
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"erased:{thread_id}")
    return n


# -- the dispatcher's side ------------------------------------------------------------------------

async def claim(db, owner: str, lease_seconds: float) -> list[Subscription]:
    """Take every enabled webhook's subscription nobody else holds; renew the ones we hold."""
    rows = await db.fetch(
        """SELECT w.id, w.project, w.url, w.event_types, w.secret,
                  CASE WHEN w.previous_until > now() THEN w.previous_secret END
           FROM claim_subscriptions(ARRAY(SELECT 'webhook:' || id FROM webhooks WHERE enabled), $1, $2) AS c(name)
           JOIN webhooks w ON 'webhook:' || w.id = c.name""", owner, lease_seconds)
    return [Subscription(r[0], r[1], r[2], tuple(r[3]), (r[4],) + ((r[5],) if r[5] else ())) for r in rows]


async def release(db, owner: str, webhook_ids: list[str]) -> None:
    await subscriptions.release(db, [subscription(w) for w in webhook_ids], owner)


async def checkpoint(db, webhook_id: str) -> Checkpoint:
    return await subscriptions.checkpoint(db, subscription(webhook_id))


@dataclass(slots=True)
class Delivery:
    """A delivery waiting to be sent, as a worker holds it (mutable: attempts update it)."""
    id: str
    event_id: str
    event_type: str
    thread_id: str
    seq: int
    body: bytes
    attempt_count: int = 0
    failures: int = 0                    # since the current retry window began
    first_attempt_at: float | None = None
    next_attempt_at: float = 0.0
    created_at: float = 0.0
    read: int = 0                        # which read of the log it came from (see Worker.reads)
    dropped: bool = False                # its thread was erased before it was sent


async def pending(db, webhook_id: str) -> list[Delivery]:
    rows = await db.fetch(
        """SELECT id, event_id, event_type, thread_id, seq, payload, attempt_count, first_attempt_at,
                  next_attempt_at
           FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'pending' AND payload IS NOT NULL
           ORDER BY seq""", webhook_id)
    # Failures in the current window: all attempts, unless a retry through the API opened a new one.
    return [Delivery(r[0], r[1], r[2], r[3], r[4], r[5].encode(), r[6], r[6] if r[7] else 0, r[7], r[8])
            for r in rows]


class Outcome(msgspec.Struct, frozen=True):
    """A delivery after one or more attempts, to be written."""
    id: str
    status: str
    attempt_count: int
    attempts: list[dict]              # the new attempts, oldest first
    first_attempt_at: float | None
    next_attempt_at: float
    delivered_at: float | None


MAX_KEPT_ATTEMPTS = 50


async def save(db, webhook_id: str, owner: str, old: Checkpoint, new: Checkpoint,
               added: Sequence[tuple[Delivery, Outcome | None, str | None]], updated: Sequence[Outcome],
               now: float) -> None:
    """One statement, so one transaction: move the checkpoint, write the deliveries read since
    (each with its first attempt, if it had one — a delivery is written once on the common path)
    and the later attempts of deliveries written before. Only while we hold the lease and nobody
    moved the checkpoint meanwhile; otherwise nothing is written and LeaseLost is raised.
    `added`: (delivery, its attempts so far or None, the payload to keep or None once erased)."""
    enc = msgspec.json.encode
    columns: tuple[list, ...] = tuple([] for _ in range(13))
    for d, o, payload in added:
        status = o.status if o is not None else "pending"
        if d.dropped and status == "pending":     # its thread was erased: it is not sent again
            status = "dead"
        row = (d.id, d.event_id, d.event_type, d.thread_id, d.seq, payload, status,
               o.attempt_count if o else 0, enc(o.attempts).decode() if o else "[]", d.created_at,
               o.first_attempt_at if o else None, o.next_attempt_at if o else now, o.delivered_at if o else None)
        for column, value in zip(columns, row):
            column.append(value)
    moved = await db.fetchval(
        f"""WITH moved AS MATERIALIZED (SELECT {ADVANCE} AS ok),
           added AS (
               INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, thread_id, seq, payload, status,
                   attempt_count, attempts, created_at, first_attempt_at, next_attempt_at, delivered_at)
               SELECT d.id, $27, d.event_id, d.type, d.thread_id, d.seq, d.payload, d.status, d.attempt_count,
                      d.attempts::jsonb, d.created_at, d.first_attempt_at, d.next_attempt_at, d.delivered_at
               FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::text[], $13::text[],
                           $14::int[], $15::text[], $16::float8[], $17::float8[], $18::float8[], $19::float8[])
                    AS d(id, event_id, type, thread_id, seq, payload, status, attempt_count, attempts, created_at,
                         first_attempt_at, next_attempt_at, delivered_at)
               WHERE (SELECT ok FROM moved)
               ON CONFLICT (webhook_id, event_id) DO NOTHING RETURNING 1),
           updated AS (
               UPDATE webhook_deliveries d SET status = u.status, attempt_count = u.attempt_count,
                   attempts = CASE WHEN jsonb_array_length(d.attempts) + jsonb_array_length(u.attempts::jsonb)
                                        <= {MAX_KEPT_ATTEMPTS} THEN d.attempts || u.attempts::jsonb
                              ELSE (SELECT jsonb_agg(e ORDER BY i) FROM
                                    jsonb_array_elements(d.attempts || u.attempts::jsonb) WITH ORDINALITY a(e, i)
                                    WHERE i > jsonb_array_length(d.attempts || u.attempts::jsonb) - {MAX_KEPT_ATTEMPTS})
                              END,
                   first_attempt_at = u.first_attempt_at, next_attempt_at = u.next_attempt_at,
                   delivered_at = coalesce(u.delivered_at, d.delivered_at)
               FROM unnest($20::text[], $21::text[], $22::int[], $23::text[], $24::float8[], $25::float8[],
                           $26::float8[])
                    AS u(id, status, attempt_count, attempts, first_attempt_at, next_attempt_at, delivered_at)
               WHERE d.id = u.id AND d.webhook_id = $27 AND (SELECT ok FROM moved)
               RETURNING 1)
           SELECT ok FROM moved""",
        *advance_args(subscription(webhook_id), owner, old, new), *columns,
        [o.id for o in updated], [o.status for o in updated], [o.attempt_count for o in updated],
        [enc(o.attempts).decode() for o in updated], [o.first_attempt_at for o in updated],
        [o.next_attempt_at for o in updated], [o.delivered_at for o in updated], webhook_id)
    if not moved:
        raise LeaseLost(webhook_id)


async def scrub(db, webhook_id: str, thread_ids: Sequence[str]) -> None:
    """erase_thread for deliveries written while the thread was being erased (they missed its UPDATE)."""
    await db.execute(f"{_SCRUB} webhook_id = $1 AND thread_id = ANY($2::text[])", webhook_id, list(thread_ids))


async def purge_old(db, days: float) -> int:
    """Delivered and dead deliveries older than `days` go (attempt history is not kept forever)."""
    result = await db.execute(
        "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1", time.time() - days * 86_400)
    return int(result.split()[-1])

