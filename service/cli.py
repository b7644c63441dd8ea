"""The `threadline` command: serve, keys create, migrate, replay, audit verify."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys

import structlog

from service.config import Config
from service.observability import configure_logging, configure_tracing

log = structlog.get_logger("threadline")


def _database_url(config: Config) -> str:
    if config.database_url:
        return config.database_url
    from service.database import embedded_database_url
    return embedded_database_url(config.data_dir)


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve(config: Config, host: str, port: int) -> None:
    from aiohttp import web

    from service.api.http import SERVICES
    from service.app import create_app
    from service.auth import bootstrap_default_project

    url = _database_url(config)
    app = create_app(config, url)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    # No reuse_port: a second server on a port in use must fail, not silently share its traffic.
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise SystemExit(f"threadline serve: cannot listen on {host}:{port}: {error.strerror or error}") from None
    async with app[SERVICES].db.acquire() as conn:
        key = await bootstrap_default_project(conn)
    # What start-up allocated lives for the whole process: keep the collector from rescanning it.
    gc.collect()
    gc.freeze()
    log.info("listening", url=f"http://{host}:{port}", docs=f"http://{host}:{port}/docs")
    if key is not None:     # the last thing start-up prints, so it is easy to find
        print("\nCreated project 'default'. Its API key, shown this once:", flush=True)
        print(key, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


async def _create_key(config: Config, project: str) -> None:
    import re

    from service import database
    from service.auth import PROJECT_NAME_PATTERN, create_key

    if not re.match(PROJECT_NAME_PATTERN, project):
        sys.exit(f"invalid project name {project!r}: letters, digits, '.', '_' and '-', at most 64")
    pool = await database.connect(_database_url(config), 2)
    try:
        await database.prepare(pool)
        async with pool.acquire() as conn:
            key_id, key = await create_key(conn, project)
    finally:
        await pool.close()
    print(f"Created key {key_id} for project '{project}'. The key is shown once:")
    print(key)


async def _migrate(config: Config) -> None:
    from service import database

    pool = await database.connect(_database_url(config), 2)
    try:
        applied = await database.prepare(pool)
    finally:
        await pool.close()
    print("\n".join(applied) if applied else "schema is up to date")


async def _with_database(config: Config, work):
    """Run `work(pool)` against the migrated database; returns what it returns."""
    from service import database

    pool = await database.connect(_database_url(config), 4)
    try:
        await database.prepare(pool)
        return await work(pool)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="threadline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create an API key (the last line printed is the key)")
    create.add_argument("--project", required=True)
    sub.add_parser("migrate", help="apply pending schema migrations")
    replay = sub.add_parser("replay", help="print a thread's timeline from its log")
    replay.add_argument("thread_id")
    replay.add_argument("--format", choices=("text", "full", "jsonl"), default="text",
                        help="text: one line per event (model text pieces folded away); full: every event; "
                             "jsonl: one JSON object per event")
    replay.add_argument("--as-of", help="stop at this event version or RFC 3339 time")
    erase = sub.add_parser("erase", help="erase a thread's content for good (crypto-shredding)")
    erase.add_argument("thread_id")
    audit_cmd = sub.add_parser("audit", help="verify the log's hash chains")
    audit_sub = audit_cmd.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="recompute hash chains; exit 1 at a broken link")
    verify.add_argument("thread_id", nargs="?")
    verify.add_argument("--all", action="store_true", help="every stream in the log")
    projections_cmd = sub.add_parser("projections", help="manage the read models")
    projections_sub = projections_cmd.add_subparsers(dest="projections_command", required=True)
    rebuild_cmd = projections_sub.add_parser(
        "rebuild", help="rebuild every read model from the log into fresh tables and switch to them "
                        "atomically while the service keeps answering")
    rebuild_cmd.add_argument("--batch-size", type=int, default=10_000, help="events per batch (default 10000)")
    args = parser.parse_args(argv)

    config = Config.from_env()
    configure_logging(config.log_format)
    _install_uvloop()
    if args.command == "serve":
        configure_tracing()
        asyncio.run(_serve(config, args.host, args.port))
    elif args.command == "keys":
        asyncio.run(_create_key(config, args.project))
    elif args.command == "migrate":
        asyncio.run(_migrate(config))
    elif args.command == "replay":
        from service import replay as replaying
        asyncio.run(_with_database(config, lambda db: replaying.replay(db, args.thread_id, args.format, args.as_of)))
    elif args.command == "erase":
        from service import erasure
        print(asyncio.run(_with_database(config, lambda db: erasure.erase_from_cli(db, args.thread_id))))
    elif args.command == "audit":
        from service import replay as replaying
        if not args.thread_id and not args.all:
            parser.error("audit verify: give a THREAD_ID or --all")
        ok = asyncio.run(_with_database(config, lambda db: replaying.verify(db, None if args.all else args.thread_id)))
        sys.exit(0 if ok else 1)
    elif args.command == "projections":
        from projections import rebuild as rebuilding
        sys.exit(asyncio.run(rebuilding.rebuild_from_cli(_database_url(config), args.batch_size)))


if __name__ == "__main__":
    main()
