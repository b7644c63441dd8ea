"""The command line and the system routes, as a user meets them."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from conftest import ROOT, fresh_database, free_port
from service.api.routes import PREFIXES, ROUTES


def run_cli(*args: str, env: dict, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


class Serve:
    """`threadline serve`, keeping stdout to read the printed key."""

    def __init__(self, env: dict):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = tempfile.NamedTemporaryFile("w+", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "service", "serve", "--port", str(self.port)], cwd=ROOT,
                                     env=env, stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            assert self.proc.poll() is None, "service exited"
            assert time.monotonic() < deadline, "service did not start"
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)

    def stdout(self) -> str:
        return Path(self.out.name).read_text()

    def printed_key(self, timeout: float = 30) -> str:
        """The key a first start prints: after /healthz answers (it listens before it makes the key)."""
        deadline = time.monotonic() + timeout
        while not (lines := self.stdout().strip().splitlines()) or not lines[-1].startswith("tl-"):
            assert time.monotonic() < deadline, f"no key printed: {self.stdout()[-2000:]}"
            time.sleep(0.05)
        return lines[-1]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        self.out.close()
        os.unlink(self.out.name)


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")}
    env.update(THREADLINE_LOG_FORMAT="json", **extra)
    return env


async def get_json(url: str, key: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_first_start_prints_a_working_key_once_and_keys_create_prints_one_last(server_url):
    url = await fresh_database(server_url)
    env = clean_env(DATABASE_URL=url)
    first = await asyncio.to_thread(Serve, env)
    try:
        # The key is the last thing start-up prints (log lines included), under a label saying what it is.
        key = first.printed_key()
        assert "API key" in first.stdout().strip().splitlines()[-2]
        assert (await get_json(first.url + "/v1/threads", key))[0] == 200
        assert (await get_json(first.url + "/v1/threads", key + "x"))[0] == 401
    finally:
        first.stop()
    second = await asyncio.to_thread(Serve, env)
    try:
        assert key not in second.stdout() and "default" not in second.stdout()
        made = await asyncio.to_thread(run_cli, "keys", "create", "--project", "team-a", env=env)
        assert made.returncode == 0, made.stderr
        team_key = made.stdout.strip().splitlines()[-1]
        assert team_key.startswith("tl-")
        status, page = await get_json(second.url + "/api/projects/team-a/assistants", team_key)
        assert status == 200 and page["data"] == []
        migrated = await asyncio.to_thread(run_cli, "migrate", env=env)
        assert migrated.returncode == 0 and "schema is up to date" in migrated.stdout
        # Keys are stored only as digests: no column holds the key itself.
        import asyncpg
        import hashlib
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT id, project, digest FROM api_keys")
        finally:
            await conn.close()
        assert hashlib.sha256(team_key.encode()).digest() in {r["digest"] for r in rows}
        assert not any(team_key in f"{r['id']}{r['project']}" for r in rows)
    finally:
        second.stop()


async def test_a_second_server_on_a_port_in_use_fails_and_says_why(service):
    """With reuse_port two servers shared a port silently and split its traffic between databases."""
    second = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "service", "serve", "--port", str(service.port)], cwd=ROOT,
        env={**os.environ, "DATABASE_URL": os.environ.get("TEST_DATABASE_URL") or service_database(service)},
        capture_output=True, text=True, timeout=120)
    assert second.returncode != 0
    assert "address already in use" in (second.stdout + second.stderr).lower()


def service_database(service) -> str:
    return service.database_url


async def test_replay_of_an_unknown_thread_fails_with_a_message(database_url):
    done = await asyncio.to_thread(run_cli, "replay", "thread_doesnotexist", env=clean_env(DATABASE_URL=database_url))
    assert done.returncode != 0 and "no thread thread_doesnotexist" in done.stderr


@pytest.mark.parametrize("name, value, expected", [
    ("THREADLINE_MAX_BODY_BYTES", "8MB", "expected a whole number"),
    ("THREADLINE_RUN_LEASE_SECONDS", "-5", "expected a number of zero or more"),
    ("THREADLINE_WEBHOOK_ALLOW_HTTP", "yes please", "expected one of 1, true"),
    ("THREADLINE_LOG_FORMAT", "xml", "expected one of auto, json, console"),
])
def test_a_setting_that_does_not_parse_stops_the_start_naming_its_variable(database_url, name, value, expected):
    done = run_cli("serve", "--port", "0", env={**clean_env(DATABASE_URL=database_url), name: value})
    assert done.returncode != 0, done.stdout
    assert f"{name}={value!r}" in done.stderr and expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_every_setting_is_read_from_the_variable_the_readme_names():
    """The variable names come from the field names: each one must be in the README's table."""
    from service.config import Config, env_name
    from dataclasses import fields
    readme = (ROOT / "README.md").read_text()
    missing = [env_name(f.name) for f in fields(Config) if f"`{env_name(f.name)}`" not in readme]
    assert missing == [], f"settings the README does not list: {missing}"
    overridden = Config.from_env({"THREADLINE_MAX_TOOL_ROUNDS": "3", "THREADLINE_WEBHOOK_ALLOW_HTTP": "off",
                                  "THREADLINE_POLL_WAIT_SECONDS": "0.5", "THREADLINE_OIDC_ISSUERS": "/x.json"})
    assert (overridden.max_tool_rounds, overridden.webhook_allow_http, overridden.poll_wait_seconds,
            overridden.token_issuers_file) == (3, False, 0.5, "/x.json")
    assert Config.from_env({"THREADLINE_MAX_TOOL_ROUNDS": ""}).max_tool_rounds == 20    # empty: the default


def test_only_the_configuration_reads_the_environment():
    """Settings are read in one place (service/config.py), so each is listed, typed and checked at start."""
    import re
    reads = re.compile(r"os\.environ|os\.getenv|getenv\(")
    offenders = [str(p.relative_to(ROOT)) for top in ("service", "events", "projections") for p in (ROOT / top).rglob("*.py")
                 if p.name != "config.py" and reads.search(p.read_text())]
    assert offenders == []


def test_tracing_is_on_only_when_the_standard_variables_send_spans_somewhere():
    from service.config import Config, ConfigError
    assert not Config.from_env({}).tracing
    assert Config.from_env({"OTEL_TRACES_EXPORTER": "console"}).tracing
    assert Config.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}).tracing
    assert not Config.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}).tracing
    with pytest.raises(ConfigError, match="OTEL_SDK_DISABLED='maybe'"):
        Config.from_env({"OTEL_SDK_DISABLED": "maybe"})


async def test_without_database_url_an_embedded_postgres_keeps_data_across_restarts():
    data_dir = tempfile.mkdtemp(prefix="tl-embedded-")   # not tmp_path: its Unix socket's path must be short
    try:
        await _embedded_postgres_keeps_data_across_restarts(data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def _embedded_postgres_keeps_data_across_restarts(data_dir: str):
    env = clean_env(THREADLINE_DATA_DIR=data_dir)
    svc = await asyncio.to_thread(Serve, env)
    try:
        key = svc.printed_key()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
            async with http.post(svc.url + "/v1/threads", json={"metadata": {"keep": "me"}}) as r:
                thread_id = (await r.json())["id"]
    finally:
        svc.stop()
    assert (Path(data_dir) / "pgdata" / "PG_VERSION").read_text().strip() == "18"
    again = await asyncio.to_thread(Serve, env)
    try:
        status, thread = await get_json(f"{again.url}/v1/threads/{thread_id}", key)
        assert status == 200 and thread["metadata"] == {"keep": "me"}
    finally:
        again.stop()


def test_the_default_data_directory_is_the_checkouts_wherever_the_command_runs(tmp_path, monkeypatch):
    from service.config import Config

    monkeypatch.delenv("THREADLINE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert Config.from_env().data_dir == ROOT / ".threadline"


async def test_commands_other_than_serve_never_create_a_database_and_say_where_they_looked(tmp_path):
    """Run from another directory against a data directory with no database: each command fails,
    naming the directory and the two ways to point it elsewhere; nothing is created."""
    missing = tmp_path / "no-service-here"
    env = clean_env(THREADLINE_DATA_DIR=str(missing), HOME=str(tmp_path))
    for command in (["keys", "create", "--project", "team-a"], ["migrate"], ["replay", "thread_x"],
                    ["erase", "thread_x"], ["audit", "verify", "--all"], ["projections", "rebuild"], ["database-url"]):
        done = await asyncio.to_thread(run_cli, *command, env=env, cwd=tmp_path)
        assert done.returncode != 0, (command, done.stdout)
        assert f"no Threadline database in {missing}" in done.stderr, (command, done.stderr)
        assert "DATABASE_URL" in done.stderr and "THREADLINE_DATA_DIR" in done.stderr
        assert "tl-" not in done.stdout                                  # no key for an empty database
        assert not missing.exists() and not (tmp_path / ".threadline").exists(), command


async def test_audit_progress_rewrites_a_line_only_on_a_terminal(server_url):
    import pty

    env = clean_env(DATABASE_URL=await fresh_database(server_url))
    logged = await asyncio.to_thread(run_cli, "audit", "verify", "--all", env=env)
    assert logged.returncode == 0 and "every hash chain verifies" in logged.stderr, logged.stderr
    assert "\r" not in logged.stderr and logged.stderr.startswith("verified 0 events")

    def on_a_terminal() -> str:
        leader, follower = pty.openpty()
        try:
            proc = subprocess.run([sys.executable, "-m", "service", "audit", "verify", "--all"], cwd=ROOT,
                                  env=env, stdout=subprocess.DEVNULL, stderr=follower, timeout=120)
            assert proc.returncode == 0
            os.close(follower)
            follower = -1
            out = b""
            while True:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:      # the terminal's other end is closed: all read
                    break
                if not chunk:
                    break
                out += chunk
            return out.decode()
        finally:
            os.close(leader)
            if follower >= 0:
                os.close(follower)

    shown = await asyncio.to_thread(on_a_terminal)
    assert "\rverified 0 events" in shown and "every hash chain verifies" in shown, shown


async def test_health_openapi_and_reference_page(app_client):
    assert (await app_client.get("/healthz")).status == 200
    resp = await app_client.get("/openapi.json")
    spec = await resp.json()
    assert spec["openapi"].startswith("3.1")
    for route in ROUTES:
        assert route.method.lower() in spec["paths"][route.path]
    # Every operation has its own id (clients generated from the document name methods by them).
    ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)) and "getAssistant" in ids and "listThreads" in ids
    # Every schema reference resolves.
    text = await resp.text()
    import re
    for name in set(re.findall(r'"#/components/schemas/([^"]+)"', text)):
        assert name in spec["components"]["schemas"], name
    page = await app_client.get("/docs")
    assert page.status == 200 and "openapi.json" in await page.text()
    js = await app_client.get("/static/reference.js")
    assert js.status == 200
    assert len(PREFIXES) == 4


async def test_openapi_schema_is_the_one_that_validates(app_client):
    """The request limits in /openapi.json are the ones the API enforces (same types)."""
    spec = await (await app_client.get("/openapi.json")).json()
    name = spec["components"]["schemas"]["CreateAssistantRequest"]["properties"]["name"]
    limits = [alt.get("maxLength") for alt in name.get("anyOf", [name]) if alt.get("type") == "string"]
    assert limits == [256]


async def test_traces_are_exported_over_otlp_when_an_endpoint_is_configured(database_url):
    """Spans for requests and appends reach an OTLP/HTTP collector (a tiny local one here)."""
    received: list[bytes] = []
    got = asyncio.Event()

    async def collect(request: web.Request):
        received.append(await request.read())
        if any(b"events.append" in b for b in received):
            got.set()
        return web.Response(status=200)

    collector = web.Application()
    collector.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(collector)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    from conftest import ServiceProcess, new_key
    import asyncpg
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    key = await new_key(pool, "otel")
    await pool.close()
    svc = await asyncio.to_thread(ServiceProcess, database_url, {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_BSP_SCHEDULE_DELAY": "50"})
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
            async with http.post(svc.url + "/v1/threads", json={}) as r:
                assert r.status == 200
                thread_id = (await r.json())["id"]
        await asyncio.wait_for(got.wait(), 30)
        conn = await asyncpg.connect(database_url)
        try:
            meta = await conn.fetchval("SELECT metadata FROM events WHERE stream = $1", f"thread-{thread_id}")
        finally:
            await conn.close()
        import json
        trace_id = json.loads(meta)["trace_id"]
        assert len(trace_id) == 32 and trace_id.encode() not in (b"0" * 32,)
        blob = b"".join(received)
        assert b"events.append" in blob and b"threadline" in blob
    finally:
        svc.stop()
        await runner.cleanup()


async def test_logs_are_json_lines_bound_to_request_project_and_thread(service, db):
    from conftest import new_key

    key = await new_key(db, "log-binding")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        async with http.post(service.url + "/v1/threads", json={}) as r:
            thread_id = (await r.json())["id"]
        async with http.post(f"{service.url}/v1/threads/{thread_id}/messages", json={"role": "user", "content": "x"},
                             headers={"x-request-id": "req-log-test"}) as r:
            # the server names the request itself; the client's name for it is kept beside it
            assert r.status == 200 and r.headers["x-request-id"].startswith("req_")
            server_id = r.headers["x-request-id"]
    import json
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in Path(service.log.name).read_text().splitlines() if line.startswith("{")]
        mine = [e for e in lines if e.get("request_id") == server_id]
        if mine or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert mine, "no log line for the request"
    assert mine[-1]["project"] == "log-binding" and mine[-1]["thread_id"] == thread_id
    assert mine[-1]["status"] == 200 and mine[-1]["level"] == "info"
    assert mine[-1]["client_request_id"] == "req-log-test"


PG_BIN = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" \
    / "pgserver" / "pginstall" / "bin"


async def test_the_readme_backup_hot_dump_and_restore_into_a_new_service(tmp_path):
    """README, Production: `pg_dump "$(threadline database-url)"` while the service runs, restored with
    pg_restore into another service's database, which then answers with the same thread and key."""
    first, second = (tempfile.mkdtemp(prefix="tl-backup-") for _ in range(2))   # short paths: Unix sockets
    dump = tmp_path / "threadline.dump"
    try:
        env = clean_env(THREADLINE_DATA_DIR=first)
        svc = await asyncio.to_thread(Serve, env)
        try:
            key = svc.printed_key()
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
                async with http.post(svc.url + "/v1/threads", json={"messages": [
                        {"role": "user", "content": "back me up"}]}) as r:
                    thread_id = (await r.json())["id"]
            url = await asyncio.to_thread(run_cli, "database-url", env=env)
            assert url.returncode == 0, url.stderr
            done = await asyncio.to_thread(subprocess.run, [str(PG_BIN / "pg_dump"), "-Fc", "-f", str(dump),
                                                            url.stdout.strip()], capture_output=True, text=True)
            assert done.returncode == 0 and dump.stat().st_size > 0, done.stderr
        finally:
            svc.stop()
        stopped = await asyncio.to_thread(run_cli, "database-url", env=env)
        assert stopped.returncode != 0 and "not running" in stopped.stderr and "threadline serve" in stopped.stderr

        env = clean_env(THREADLINE_DATA_DIR=second)
        target = await asyncio.to_thread(Serve, env)
        try:
            url = (await asyncio.to_thread(run_cli, "database-url", env=env)).stdout.strip()
            done = await asyncio.to_thread(subprocess.run, [str(PG_BIN / "pg_restore"), "--clean", "--if-exists",
                                                            "-d", url, str(dump)], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        finally:
            target.stop()
        restored = await asyncio.to_thread(Serve, env)
        try:
            status, messages = await get_json(f"{restored.url}/v1/threads/{thread_id}/messages", key)
            assert status == 200 and messages["data"][0]["content"][0]["text"]["value"] == "back me up"
        finally:
            restored.stop()
    finally:
        for d in (first, second):
            shutil.rmtree(d, ignore_errors=True)


def test_database_url_prints_database_url_when_it_is_set():
    done = run_cli("database-url", env=clean_env(DATABASE_URL="postgresql://u@db.example:5432/tl"))
    assert done.returncode == 0 and done.stdout.strip() == "postgresql://u@db.example:5432/tl"
