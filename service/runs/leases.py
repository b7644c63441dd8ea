"""Run leases in Postgres: at most one process executes a run, and a dead one is noticed."""

from __future__ import annotations

import asyncpg

ACTIVE = ("queued", "in_progress", "cancelling")   # statuses that need an executing process


async def claim(db: asyncpg.Pool, run_id: str, thread_id: str, owner: str, seconds: float) -> bool:
    """Take the run if nobody holds it, its lease lapsed, or we hold it already."""
    row = await db.fetchval(
        """INSERT INTO run_leases (run_id, thread_id, owner, expires_at)
           VALUES ($1, $2, $3, now() + make_interval(secs => $4))
           ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
           WHERE run_leases.expires_at < now() OR run_leases.owner = excluded.owner
           RETURNING true""", run_id, thread_id, owner, seconds)
    return bool(row)


async def release(db: asyncpg.Pool, run_id: str, owner: str) -> None:
    await db.execute("DELETE FROM run_leases WHERE run_id = $1 AND owner = $2", run_id, owner)


async def renew(db: asyncpg.Pool, owner: str, run_ids: list[str], seconds: float) -> dict[str, str | None]:
    """Extend our leases; returns each run's status now (None: the run is gone)."""
    rows = await db.fetch(
        """WITH renewed AS (
               UPDATE run_leases SET expires_at = now() + make_interval(secs => $3)
               WHERE owner = $1 AND run_id = ANY($2::text[]) RETURNING run_id)
           SELECT u.id, r.status FROM unnest($2::text[]) AS u(id) LEFT JOIN runs r ON r.id = u.id""",
        owner, run_ids, seconds)
    return {r[0]: r[1] for r in rows}


async def forget_ended(db: asyncpg.Pool) -> int:
    """Delete lapsed leases of runs that no longer need a process: their holder lost the database
    or died after the run ended, before it could let go. (A lease renewed or claimed meanwhile is
    no longer lapsed when the DELETE rechecks the row, so it stays.)"""
    result = await db.execute(
        """DELETE FROM run_leases l WHERE l.expires_at < now() AND NOT EXISTS (
               SELECT 1 FROM runs r WHERE r.id = l.run_id AND r.status IN ('queued', 'in_progress', 'cancelling'))""")
    return int(result.rsplit(" ", 1)[-1])


async def orphans(db: asyncpg.Pool, grace_seconds: float, limit: int = 100) -> list[tuple[str, str, str]]:
    """Runs that need a process and have none: (run_id, thread_id, status). A run just queued has
    no lease for a moment, until the process that queued it claims it: it is an orphan only once
    its thread has been quiet for `grace_seconds`."""
    rows = await db.fetch(
        """SELECT r.id, r.thread_id, r.status FROM runs r
           LEFT JOIN run_leases l ON l.run_id = r.id
           WHERE r.status IN ('queued', 'in_progress', 'cancelling')
             AND (l.run_id IS NULL OR l.expires_at < now())
             AND (r.status <> 'queued' OR (
                  SELECT e.recorded_at FROM events e WHERE e.stream = 'thread-' || r.thread_id
                  ORDER BY e.version DESC LIMIT 1) < now() - make_interval(secs => $2))
           ORDER BY r.id LIMIT $1""", limit, grace_seconds)
    return [(r[0], r[1], r[2]) for r in rows]


async def expired_runs(db: asyncpg.Pool, at: int, owner: str, limit: int = 100) -> list[tuple[str, str]]:
    """Active runs past expires_at that this process should end: its own, and those nobody holds.
    A run another live process executes is left to that process, which holds the reply's text."""
    rows = await db.fetch(
        """SELECT r.id, r.thread_id FROM runs r
           LEFT JOIN run_leases l ON l.run_id = r.id
           WHERE r.status IN ('queued', 'in_progress', 'requires_action', 'cancelling') AND r.expires_at <= $1
             AND (l.run_id IS NULL OR l.owner = $3 OR l.expires_at < now())
           ORDER BY r.expires_at LIMIT $2""", at, limit, owner)
    return [(r[0], r[1]) for r in rows]
