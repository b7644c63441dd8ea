"""The `threadline` command: serve, keys create, migrate, replay, audit verify."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys

import structlog

from service.config import Config, ConfigError
from service.observability import configure_logging, configure_tracing

log = structlog.get_logger("threadline")


def _database_url(config: Config) -> str:
    if config.database_url:
        return config.database_url
    from service.database import embedded_database_url
    return embedded_database_url(config.data_dir)


def _existing_database_url(config: Config) -> str:
    """The service's database for every command but `serve`: only `serve` may create the embedded one,
    so a command run against the wrong directory says where it looked instead of printing a key for a
    new, empty database."""
    if config.database_url:
        return config.database_url
    _require_embedded_database(config)
    return _database_url(config)


def _require_embedded_database(config: Config) -> None:
    if not (config.data_dir / "pgdata" / "PG_VERSION").is_file():
        sys.exit(f"threadline: no Threadline database in {config.data_dir} (looked for {config.data_dir / 'pgdata'}); "
                 "nothing was created.\nPoint this command at the service's database with DATABASE_URL=postgresql://... "
                 "or THREADLINE_DATA_DIR=<the data directory `threadline serve` uses>, "
                 "or run `threadline serve` once to create it there.")


def _running_database_url(config: Config) -> str:
    """The URL of the service's database as it runs now, for pg_dump and psql: DATABASE_URL, or the
    embedded Postgres's while it runs (it runs while `threadline serve` does; this never starts it)."""
    if config.database_url:
        return config.database_url
    _require_embedded_database(config)
    from pgserver.utils import PostmasterInfo

    pgdata = (config.data_dir / "pgdata").resolve()
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        sys.exit(f"threadline database-url: the embedded PostgreSQL in {pgdata} is not running; it runs while "
                 "`threadline serve` does, so start the service first.")
    return info.get_uri()


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _tls_context(cert: str | None, key: str | None) -> "ssl.SSLContext | None":
    """The server's TLS context from --tls-cert/--tls-key (PEM), or None for plain http."""
    import ssl

    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise SystemExit("threadline serve: give both --tls-cert and --tls-key, or neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise SystemExit(f"threadline serve: cannot load the TLS certificate {cert!r} with key {key!r}: {error}")
    return context


def _startup_checks(config: Config) -> None:
    """Fail at once with a plain message on configuration that the service would fail on later."""
    from service.config import load_token_issuers

    try:
        load_token_issuers(config.token_issuers_file)
    except ValueError as error:
        raise SystemExit(f"threadline serve: {error}")


async def _listen(runner, host: str, port: int, tls) -> None:
    import errno

    from aiohttp import web

    # No reuse_port: with it a second server on the same port would start and take half the traffic.
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        if error.errno == errno.EADDRINUSE:
            raise SystemExit(f"threadline serve: cannot listen on {host}:{port}: address already in use "
                             "(another server is listening there; choose another --port)")
        raise SystemExit(f"threadline serve: cannot listen on {host}:{port}: {error.strerror or error}")


async def _serve(config: Config, host: str, port: int, tls_cert: str | None = None,
                 tls_key: str | None = None) -> None:
    from aiohttp import web

    from service.api.http import SERVICES
    from service.app import create_app
    from service.auth import bootstrap_default_project
    from service.observability import flush_logs

    tls = _tls_context(tls_cert, tls_key)
    _startup_checks(config)
    url = _database_url(config)
    app = create_app(config, url)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    await _listen(runner, host, port, tls)      # before the first key is made: a failed start loses no key
    async with app[SERVICES].db.acquire() as conn:
        key = await bootstrap_default_project(conn)
    # What start-up allocated lives for the whole process: keep the collector from rescanning it.
    gc.collect()
    gc.freeze()
    scheme = "https" if tls else "http"
    log.info("listening", url=f"{scheme}://{host}:{port}", docs=f"{scheme}://{host}:{port}/docs")
    if key is not None:
        flush_logs()        # the key is the last thing start-up prints, where it is easy to find
        print("\nCreated project 'default'. Its API key, shown only this once (keep it safe):", key,
              sep="\n", flush=True)
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
    pool = await database.connect(_existing_database_url(config), 2)
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

    pool = await database.connect(_existing_database_url(config), 2)
    try:
        applied = await database.prepare(pool)
    finally:
        await pool.close()
    print("\n".join(applied) if applied else "schema is up to date")


async def _with_database(config: Config, work):
    """Run `work(pool)` against the migrated database; returns what it returns."""
    from service import database

    pool = await database.connect(_existing_database_url(config), 4)
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
    serve.add_argument("--tls-cert", metavar="PATH", help="serve https with this PEM certificate (chain)")
    serve.add_argument("--tls-key", metavar="PATH", help="the PEM private key of --tls-cert")
    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create an API key (the last line printed is the key)")
    create.add_argument("--project", required=True)
    sub.add_parser("migrate", help="apply pending schema migrations")
    sub.add_parser("database-url", help="print the URL of the service's database (for pg_dump, psql); "
                                        "the embedded one only while the service runs")
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

    try:
        config = Config.from_env()
    except ConfigError as error:
        raise SystemExit(f"threadline {args.command}: {error}") from None
    configure_logging(config.log_format)
    _install_uvloop()
    if args.command == "serve":
        configure_tracing(config)
        asyncio.run(_serve(config, args.host, args.port, args.tls_cert, args.tls_key))
    elif args.command == "keys":
        asyncio.run(_create_key(config, args.project))
    elif args.command == "migrate":
        asyncio.run(_migrate(config))
    elif args.command == "database-url":
        print(_running_database_url(config))
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
        sys.exit(asyncio.run(rebuilding.rebuild_from_cli(_existing_database_url(config), args.batch_size)))


if __name__ == "__main__":
    main()
