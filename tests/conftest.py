"""Shared fixtures: a real Postgres (embedded PostgreSQL 18 unless TEST_DATABASE_URL is given),
a fresh database per test session, the app in-process, and the real service in a subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import json as _json

import asyncpg
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from service import database
from service.app import create_app
from service.auth import create_key
from service.config import Config

from tmp_hygiene import EMBEDDED_TEST_POSTGRES, pytest_configure, pytest_sessionfinish, scratch_dir  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


TEST_DATABASE = re.compile(r"tl_test_(?:(\d+)_(\d+)_)?[0-9a-f]+")
STALE_AFTER_SECONDS = 6 * 3600   # far longer than any test run: such a database's run is gone


@pytest.fixture(scope="session")
def server_url():
    """A Postgres server for the whole run: TEST_DATABASE_URL, or the embedded one. The databases a run
    makes are dropped when it ends, and those that killed runs left behind when the next starts, so the
    server's data does not grow from run to run."""
    if os.environ.get("TEST_DATABASE_URL"):
        url = os.environ["TEST_DATABASE_URL"]
    else:
        url = database.embedded_database_url(EMBEDDED_TEST_POSTGRES)
    asyncio.run(drop_test_databases(url, lambda made, pid: made is None or made < time.time() - STALE_AFTER_SECONDS))
    yield url
    asyncio.run(drop_test_databases(url, lambda made, pid: pid == os.getpid()))


async def fresh_database(server_url: str) -> str:
    name = f"tl_test_{int(time.time())}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_database(server_url, name)


async def drop_test_databases(server_url: str, chosen) -> None:
    """Drop the test databases that chosen(made: epoch seconds or None, pid: int or None) picks."""
    conn = await asyncpg.connect(server_url)
    try:
        for (name,) in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'tl_test_%'"):
            match = TEST_DATABASE.fullmatch(name)
            if match is None:
                continue
            made, pid = (int(match[1]), int(match[2])) if match[1] else (None, None)
            if chosen(made, pid):
                try:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                except asyncpg.PostgresError as error:   # tidying up: never a reason to fail the run
                    warnings.warn(f"test database {name} left: {error}")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def database_url(server_url) -> str:
    """A new database, migrated, for this test session."""
    url = await fresh_database(server_url)
    pool = await database.connect(url, 2)
    try:
        await database.prepare(pool)
    finally:
        await pool.close()
    return url


@pytest.fixture(scope="module")
async def own_database(server_url):
    """(url, pool) of a database for one test module alone: for tests that tamper with or erase data."""
    url = await fresh_database(server_url)
    pool = await database.connect(url, 4)
    await database.prepare(pool)
    yield url, pool
    await pool.close()


@pytest.fixture(scope="session")
async def db(database_url):
    pool = await database.connect(database_url, 8)
    yield pool
    await pool.close()


def test_config(**overrides) -> Config:
    base = dict(database_url=None, data_dir=Path(tempfile.gettempdir()), max_body_bytes=8 * 1024 * 1024,
                max_file_bytes=512 * 1024 * 1024, actor_idle_seconds=300.0, max_actors=10_000,
                db_pool_size=8, upload_connections=2, log_format="json")
    base.update(overrides)
    return Config(**base)


@pytest.fixture(scope="session")
async def app_client(database_url):
    """The app in this process, over real HTTP on a loopback port."""
    app = create_app(test_config(), database_url)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def lenient_app_client(database_url):
    """The app with THREADLINE_ALLOW_UNEXECUTED_TOOLS on: tool types it does not run are stored as given."""
    app = create_app(test_config(allow_unexecuted_tools=True), database_url)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


async def new_key(db, project: str | None = None) -> str:
    async with db.acquire() as conn:
        _, key = await create_key(conn, project or f"p-{uuid.uuid4().hex[:10]}")
    return key


class Client:
    """HTTP calls to the app under one mount prefix, authenticated with one key."""

    def __init__(self, http, key: str | None, prefix: str = "/v1", api_version: str | None = None):
        self.http, self.key, self.prefix, self.api_version = http, key, prefix, api_version

    async def raw(self, method: str, path: str, *, json=None, data=None, params=None, headers=None, auth=True):
        """(status, body bytes, headers)"""
        params = dict(params or {})
        if self.api_version:
            params["api-version"] = self.api_version
        h = {"Authorization": f"Bearer {self.key}"} if auth and self.key else {}
        resp = await self.http.request(method, self.prefix + path, json=json, data=data, params=params,
                                       headers={**h, **(headers or {})})
        return resp.status, await resp.read(), resp.headers

    async def call(self, method: str, path: str, json=None, **kw):
        """(status, parsed JSON); never a 5xx, always JSON."""
        status, body, headers = await self.raw(method, path, json=json, **kw)
        assert status < 500, (status, body)
        assert headers["Content-Type"].startswith("application/json"), (status, headers, body)
        return status, _json.loads(body)

    async def ok(self, method: str, path: str, json=None, **kw):
        status, body = await self.call(method, path, json, **kw)
        assert status == 200, (status, body)
        return body

    async def upload(self, data: bytes, filename: str = "f.txt", purpose: str = "assistants",
                     content_type: str | None = None):
        form = FormData()
        form.add_field("purpose", purpose)
        form.add_field("file", data, filename=filename, content_type=content_type)
        return await self.ok("POST", "/files", data=form)


@pytest.fixture
async def project(db):
    """A fresh project: (name, key), so tests never see each other's objects."""
    name = f"proj-{uuid.uuid4().hex[:10]}"
    return name, await new_key(db, name)


@pytest.fixture
def client(app_client, project):
    return Client(app_client, project[1])


@pytest.fixture
def lenient_client(lenient_app_client, project):
    return Client(lenient_app_client, project[1])


async def until(check, what: str = "condition", timeout: float = 15.0, interval: float = 0.02):
    """Poll `check` (a function, or a coroutine function) until it returns something truthy, and
    return that; fail after `timeout` seconds. Tests wait on state this way, never by sleeping."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what} ({timeout} s)"
        await asyncio.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    """`threadline serve` in a subprocess, exactly as a user runs it."""

    def __init__(self, database_url: str, env: dict | None = None, args: tuple[str, ...] = (),
                 tls_ca: str | None = None):
        """`args` are added to the command line; with `tls_ca` (the certificate that --tls-cert
        names, trusted for the health check) the service is reached over https."""
        self.port = free_port()
        self.url = f"{'https' if tls_ca else 'http'}://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.log = tempfile.NamedTemporaryFile(prefix="threadline-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--port", str(self.port), *args],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "DATABASE_URL": database_url, "THREADLINE_LOG_FORMAT": "json", **(env or {})})
        trust = ssl.create_default_context(cafile=tls_ca) if tls_ca else None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited: {Path(self.log.name).read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1, context=trust) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("service did not become healthy in 60 s")

    def stop(self):
        """Stop it (a process already killed or stopped is fine): its log is read, then removed."""
        if hasattr(self, "output"):
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        self.output = Path(self.log.name).read_text(errors="replace")   # what it logged, for tests to read after
        Path(self.log.name).unlink(missing_ok=True)     # tests leave nothing behind in $TMPDIR


@pytest.fixture(scope="session")
async def service(database_url):
    proc = await asyncio.to_thread(ServiceProcess, database_url)
    yield proc
    proc.stop()
