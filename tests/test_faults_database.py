"""Postgres stopped for 10 s under load, then started again, under a real `threadline serve`:
requests during the outage answer 503 with the error envelope within a few seconds (none hangs,
none is a 500), the service recovers by itself, every acknowledged write is there afterwards, the
runs that were in flight end (completed, or failed with an error) instead of staying active, and
a client following a thread's stream through the outage gets every frame once, reconnecting with
Last-Event-ID when its stream breaks.

The test needs a Postgres it may stop, so it starts its own embedded one in a data directory of
its own (the session's server stays up for every other test)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from conftest import EMBEDDED_TEST_POSTGRES, ServiceProcess, fresh_database, new_key, until
from faults import (
    Api, check_no_leases, check_threads, delta_text, follow_resuming, script_model, start_assistant_and_thread,
)
from service import database

OUTAGE_SECONDS = 10.0
FAIL_FAST_SECONDS = 5.0      # the longest any request may take while the database is away
ENV = {"THREADLINE_RUN_LEASE_SECONDS": "2", "THREADLINE_RUN_SWEEP_SECONDS": "0.2",
       "THREADLINE_SHUTDOWN_GRACE_SECONDS": "0.3", "THREADLINE_DB_POOL_SIZE": "8",
       # idle streams look at the log every 4th keep-alive: so they do while the database is away
       "THREADLINE_STREAM_KEEPALIVE_SECONDS": "0.5"}
ANSWER = " ".join(f"w{i}" for i in range(30))


class StoppablePostgres:
    """An embedded PostgreSQL of this test's own, stopped and started with its pg_ctl."""

    def __init__(self, pgdata: Path):
        import pgserver
        from pgserver._commands import pg_ctl

        self._pg_ctl = pg_ctl
        self.server = pgserver.get_server(pgdata, cleanup_mode=None)
        self.pgdata = pgdata
        self.socket_dir = self.server.get_postmaster_info().socket_dir
        self.url = self.server.get_uri()

    def stop(self) -> None:
        # fast: sessions are ended at once and clients see their connections go, as in a failover
        self._pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.server.system_user, timeout=30)

    def start(self) -> None:
        # the same socket directory pgserver chose, so the service's DATABASE_URL still points here
        self._pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.server.log), "start"],
                     pgdata=self.pgdata, user=self.server.system_user, timeout=30)


@pytest.fixture(scope="module")
async def stoppable(server_url):
    """(url of a fresh migrated database, StoppablePostgres). Depends on server_url so the embedded
    server's runtime directory is set up the same way."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(EMBEDDED_TEST_POSTGRES / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    pgdata = Path(tempfile.mkdtemp(prefix="tl-faults-pg-"))
    pg = await asyncio.to_thread(StoppablePostgres, pgdata)
    try:
        url = await fresh_database(pg.url)
        pool = await database.connect(url, 2)
        await database.prepare(pool)
        await pool.close()
        yield url, pg
    finally:
        try:
            await asyncio.to_thread(pg.stop)
        except Exception:  # noqa: BLE001 - already stopped by a failed test
            pass
        shutil.rmtree(pgdata, ignore_errors=True)


@dataclass
class Answer:
    what: str
    started: float
    took: float
    status: int | None          # None: no HTTP answer at all (the client's own timeout)
    body: object


async def timed(http: aiohttp.ClientSession, what: str, method: str, url: str, key: str, body=None) -> Answer:
    started = time.monotonic()
    try:
        async with http.request(method, url, json=body, headers={"Authorization": f"Bearer {key}"},
                                timeout=aiohttp.ClientTimeout(total=3 * FAIL_FAST_SECONDS)) as r:
            raw = await r.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw[:300]
            return Answer(what, started, time.monotonic() - started, r.status, parsed)
    except asyncio.TimeoutError:
        return Answer(what, started, time.monotonic() - started, None, "no answer")


def is_503_envelope(a: Answer) -> bool:
    if a.status != 503 or not isinstance(a.body, dict):
        return False
    error = a.body.get("error") or {}
    return error.get("type") == "server_error" and error.get("code") == "service_unavailable" \
        and isinstance(error.get("message"), str) and set(error) == {"message", "type", "param", "code"}


async def test_postgres_stopped_for_10_s_under_load(stoppable, tmp_path):
    url, pg = stoppable
    pool = await database.connect(url, 2)
    key = await new_key(pool, "outage")
    await pool.close()
    service = await asyncio.to_thread(ServiceProcess, url, ENV)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, key, service.url)
            base = f"{service.url}/v1"
            slow = script_model(tmp_path, {"text": ANSWER, "chunk_delay": 0.1})
            in_flight = []
            for _ in range(3):
                assistant_id, thread_id = await start_assistant_and_thread(api, slow)
                run = await api.ok("POST", f"/threads/{thread_id}/runs", {"assistant_id": assistant_id})
                in_flight.append((thread_id, run["id"]))
            for thread_id, run_id in in_flight:
                await api.until(f"/threads/{thread_id}/messages",
                                lambda b: any(m["role"] == "assistant" for m in b["data"]), what="replies started")
            # A client following one of them on the thread's stream, reconnecting as EventSource does.
            followed_thread, followed_run = in_flight[0]
            following = asyncio.create_task(follow_resuming(
                api, f"/threads/{followed_thread}/stream",
                lambda f: f.event == "thread.run.completed" and f.json["id"] == followed_run))
            echo = (await api.ok("POST", "/assistants", {"model": "builtin/echo"}))["id"]
            threads = [(await api.ok("POST", "/threads", {}))["id"] for _ in range(4)]

            answers: list[Answer] = []
            acked: dict[str, tuple[str, str]] = {}        # message id -> (thread, text)
            stop_load = asyncio.Event()

            async def load(c: int) -> None:
                thread_id = threads[c % len(threads)]
                n = 0
                while not stop_load.is_set():
                    n += 1
                    text = f"client {c} message {n}"
                    a = await timed(http, "append", "POST", f"{base}/threads/{thread_id}/messages", key,
                                    {"role": "user", "content": text})
                    if a.status == 200:
                        acked[a.body["id"]] = (thread_id, text)
                    answers.append(a)
                    answers.append(await timed(http, "list", "GET", f"{base}/threads/{thread_id}/messages", key))
                    answers.append(await timed(http, "run", "POST", f"{base}/threads/runs", key,
                                               {"assistant_id": echo,
                                                "thread": {"messages": [{"role": "user", "content": "hi"}]}}))
                    answers.append(await timed(http, "healthz", "GET", f"{service.url}/healthz", key))
                    await asyncio.sleep(0.02)       # pacing of a client, not a wait for state

            clients = [asyncio.create_task(load(c)) for c in range(8)]
            await until(lambda: len(acked) >= 20, "load under way", timeout=20)
            stopping = time.monotonic()
            await asyncio.to_thread(pg.stop)
            stopped = time.monotonic()
            await asyncio.sleep(OUTAGE_SECONDS)        # the fault's duration: the load goes on meanwhile
            starting = time.monotonic()
            await asyncio.to_thread(pg.start)
            started = time.monotonic()

            # Recovery without a restart: the same process answers again, by itself.
            await until(lambda: any(a.status == 200 and a.started > started and a.what == "append" for a in answers),
                        "writes succeed again", timeout=30)
            stop_load.set()
            await asyncio.gather(*clients)

            bad = [a for a in answers if a.status not in (200, 503) or (a.status == 503 and not is_503_envelope(a))]
            assert not bad, f"neither a success nor the 503 envelope: {bad[:5]}"
            hung = [a for a in answers if a.took > FAIL_FAST_SECONDS]
            assert not hung, f"requests hung while the database was away: {hung[:5]}"
            during = [a for a in answers if a.started > stopped and a.started + a.took < starting]
            assert len(during) >= 50 and all(a.status == 503 for a in during), [a for a in during if a.status != 503][:5]
            assert {a.what for a in during} == {"append", "list", "run", "healthz"}
            assert any(a.status == 200 for a in answers if a.started < stopping)

            # Every acknowledged write is there; the runs that were in flight ended.
            for message_id, (thread_id, text) in acked.items():
                got = await api.ok("GET", f"/threads/{thread_id}/messages/{message_id}")
                assert got["content"][0]["text"]["value"] == text
            for thread_id, run_id in in_flight:
                run = await api.run_ended(thread_id, run_id)
                # Finished its answer, or failed with a reason; never left active.
                assert run["status"] == "completed" or (run["status"] == "failed" and run["last_error"]["message"]), run
                if run["status"] == "completed":
                    replies = [m for m in await api.all_messages(thread_id) if m["role"] == "assistant"]
                    assert [m["content"][0]["text"]["value"] for m in replies] == [ANSWER]
            run_threads = [a.body["thread_id"] for a in answers if a.what == "run" and a.status == 200]
            for thread_id in run_threads:
                (run,) = (await api.ok("GET", f"/threads/{thread_id}/runs"))["data"]
                await api.run_ended(thread_id, run["id"])
            # The follower got every frame of the thread exactly once, across however many connections.
            followed, connections = await following
            replay, _ = await follow_resuming(api, f"/threads/{followed_thread}/stream",
                                              lambda f: f.event == "thread.run.completed" and f.json["id"] == followed_run)
            assert [(f.id, f.event) for f in followed] == [(f.id, f.event) for f in replay], connections
            assert delta_text(followed) == delta_text(replay)

            # And new work runs as before.
            assistant_id, thread_id = await start_assistant_and_thread(api, "builtin/echo", "back again")
            run = await api.ok("POST", f"/threads/{thread_id}/runs", {"assistant_id": assistant_id})
            assert (await api.run_ended(thread_id, run["id"]))["status"] == "completed"
            in_flight.append((thread_id, run["id"]))

            pool = await database.connect(url, 2)
            try:
                every = threads + [t for t, _ in in_flight] + run_threads
                await check_threads(pool, every)
                # Leases the process could not let go while the database was away are cleared.
                await check_no_leases(pool, every)
            finally:
                await pool.close()
    finally:
        service.stop()
    assert service.proc.returncode == 0, service.output[-3000:]
