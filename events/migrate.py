"""Schema migrations: ordered SQL files, applied once each, recorded in schema_migrations.

An advisory lock serialises concurrent starters, so two processes may migrate at the same time
and running twice changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

_LOCK = 7_246_120_001  # any constant; names the migration lock for every Threadline process


def migration_files(*folders: tuple[str, Path]) -> list[tuple[str, str]]:
    """(name, sql) pairs: each folder's files in name order, folders in the order given."""
    out = []
    for namespace, folder in folders:
        for path in sorted(folder.glob("*.sql")):
            out.append((f"{namespace}/{path.name}", path.read_text()))
    return out


async def migrate(conn: asyncpg.Connection, files: list[tuple[str, str]]) -> list[str]:
    """Apply the files not applied yet; returns their names."""
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())""")
        done = {r[0] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in files:
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
    return applied_now

