"""Schema migrations and functions, as message-db keeps them.

Migrations are ordered SQL files of tables and indexes, applied once each and recorded in
schema_migrations. Functions (and the triggers that call them) live one per file in a folder's
`functions/`, each defined once with CREATE OR REPLACE; on every migrate, after the migrations,
each file whose text changed since it was last applied is applied again (recorded by digest in
schema_functions), so the database always runs the code in the repository and an unchanged one
takes no lock.

A squash replaces a folder's first migrations by one baseline: a database that had every replaced
migration is adopted (the baseline recorded as applied, not run); one that had only some of them
is refused, naming what it lacks, since no file here can bring it forward.

An advisory lock serialises concurrent starters, so two processes may migrate at the same time
and running twice changes nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple, Sequence

import asyncpg

_LOCK = 7_246_120_001  # any constant; names the migration lock for every Threadline process


class Squash(NamedTuple):
    baseline: str                   # e.g. "events/0001_baseline.sql"
    replaced: tuple[str, ...]       # the migrations it stands for, oldest first
    release: str                    # the last release (commit) that had them, to upgrade through


class MigrationRefused(RuntimeError):
    """The database is at a version this release cannot bring forward."""


def migration_files(*folders: tuple[str, Path]) -> list[tuple[str, str]]:
    """(name, sql) pairs: each folder's files in name order, folders in the order given."""
    return [(f"{namespace}/{path.name}", path.read_text())
            for namespace, folder in folders for path in sorted(folder.glob("*.sql"))]


def function_files(*folders: tuple[str, Path]) -> list[tuple[str, str]]:
    """(name, sql) pairs of every folder's functions/, in name order."""
    return [(f"{namespace}/functions/{path.name}", path.read_text())
            for namespace, folder in folders for path in sorted((folder / "functions").glob("*.sql"))]


async def migrate(conn: asyncpg.Connection, files: list[tuple[str, str]],
                  functions: Sequence[tuple[str, str]] = (), squashes: Sequence[Squash] = ()) -> list[str]:
    """Apply the migrations not applied yet, then the functions that changed; returns the names
    of the migrations applied now."""
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
               CREATE TABLE IF NOT EXISTS schema_functions (
                   name text PRIMARY KEY, digest text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())""")
        done = {r[0] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for squash in squashes:
            if await _adopt(conn, squash, done):
                done.add(squash.baseline)
        for name, sql in files:
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied_now.append(name)
        current = dict(await conn.fetch("SELECT name, digest FROM schema_functions"))
        for name, sql in functions:
            digest = hashlib.sha256(sql.encode()).hexdigest()
            if current.get(name) == digest:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    """INSERT INTO schema_functions (name, digest) VALUES ($1, $2)
                       ON CONFLICT (name) DO UPDATE SET digest = excluded.digest, applied_at = now()""", name, digest)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
    return applied_now


async def _adopt(conn: asyncpg.Connection, squash: Squash, done: set[str]) -> bool:
    """True when a database made before the squash is at its last replaced migration: the
    baseline is recorded as applied. A fresh database runs the baseline instead."""
    if squash.baseline in done:
        return False
    had = [name for name in squash.replaced if name in done]
    if not had:
        return False
    if squash.replaced[-1] not in done:
        raise MigrationRefused(
            f"This database was made by an older Threadline: it has {had[-1]} but not {squash.replaced[-1]}. "
            f"Start the Threadline release that ends with {squash.replaced[-1]} (commit {squash.release}) on it once, then this one.")
    await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", squash.baseline)
    return True
