"""The embedded Postgres across crashes.

- The machine died with the server running, so the next start first recovers (fsync of the whole
  data directory, WAL replay), which on a large data directory takes longer than the 10 s pgserver
  gives pg_ctl: the start must wait for it and keep the data.
- A service that was killed stays listed as a user of the server: the server must still stop when
  the last living user exits, or it would run on, and die uncleanly with the machine."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import psutil
import pytest

from conftest import EMBEDDED_TEST_POSTGRES, ROOT, until
from service import database

USER = """
import asyncio, sys, time
import asyncpg
from pathlib import Path
from service.database import embedded_database_url

async def write(url):
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('written before the crash')")
    await conn.close()

url = embedded_database_url(Path(sys.argv[1]))
if "write" in sys.argv:
    asyncio.run(write(url))
print("postmaster", open(Path(sys.argv[1]) / "pgdata" / "postmaster.pid").readline().strip(), flush=True)
if "stay" in sys.argv:
    time.sleep(3600)
"""


def use_embedded(data_dir: Path, *what: str) -> tuple[subprocess.Popen, int]:
    """A process of its own that starts (or joins) the embedded Postgres in data_dir, as the service
    does: (the process, the postmaster's pid)."""
    user = subprocess.Popen([sys.executable, "-c", USER, str(data_dir), *what], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    line = ""
    while not line.startswith("postmaster "):   # after the service's own log lines
        line = user.stdout.readline()
        assert line, "the process ended before the server was up"
    return user, int(line.split()[1])


def crash(pid: int) -> None:
    """Kill a process and all its children at once, as a power cut would."""
    postmaster = psutil.Process(pid)
    processes = [postmaster, *postmaster.children(recursive=True)]
    for process in processes:
        process.send_signal(signal.SIGKILL)
    psutil.wait_procs(processes, timeout=10)


@pytest.fixture
def data_dir():
    runtime = EMBEDDED_TEST_POSTGRES / "run"   # as conftest's
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir = Path(tempfile.mkdtemp(prefix="tl-embedded-"))
    yield data_dir
    for process in psutil.process_iter(["cmdline"]):    # a failed test's server: do not leave it running
        if str(data_dir / "pgdata") in (process.info["cmdline"] or []):
            crash(process.pid)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def crashed_data_dir(data_dir):
    """A data directory whose embedded Postgres died while running, with one table written."""
    user, postmaster = use_embedded(data_dir, "write", "stay")
    try:
        crash(postmaster)
    finally:
        user.kill()
        user.wait()
    return data_dir


async def test_the_server_stops_with_its_last_user_though_an_earlier_one_was_killed(data_dir):
    killed, postmaster = use_embedded(data_dir, "stay")
    crash(killed.pid)               # the service killed: its server goes on, and lists it as a user
    killed.wait()
    last, joined = use_embedded(data_dir)
    assert joined == postmaster
    assert last.wait(timeout=60) == 0
    await until(lambda: not psutil.pid_exists(postmaster), "the server to stop with its last user", timeout=30)
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()    # stopped cleanly: no recovery next time


async def test_a_recovery_longer_than_pg_ctl_waits_is_waited_for(crashed_data_dir, monkeypatch):
    import pgserver.postgres_server

    real_pg_ctl = pgserver.postgres_server.pg_ctl
    gave_up = []

    def impatient_pg_ctl(args, **kwargs):
        """pg_ctl giving up while the postmaster goes on recovering, as it does at 10 s on a large data
        directory: the server is launched without waiting, then the wait 'times out'."""
        if args[-1] != "start":
            return real_pg_ctl(args, **kwargs)
        real_pg_ctl(["-W" if arg == "-w" else arg for arg in args], **kwargs)
        gave_up.append(True)
        raise subprocess.TimeoutExpired(["pg_ctl", *args], kwargs.get("timeout", 10))

    monkeypatch.setattr(pgserver.postgres_server, "pg_ctl", impatient_pg_ctl)
    url = database.embedded_database_url(crashed_data_dir)
    try:
        assert gave_up, "the start did not go through pg_ctl giving up"
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT string_agg(note, '|') FROM kept") == "written before the crash"
        finally:
            await conn.close()
        log = (crashed_data_dir / "pgdata" / "log").read_text()
        assert "not properly shut down; automatic recovery in progress" in log
    finally:
        pgserver.get_server(crashed_data_dir / "pgdata").cleanup()   # stops it: this process holds the last handle

