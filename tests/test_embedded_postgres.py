"""The embedded Postgres after a crash: the machine died with the server running, so the next start
first recovers (fsync of the whole data directory, WAL replay), which on a large data directory takes
longer than the 10 s pgserver gives pg_ctl. The service must wait for it and keep the data."""

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

from conftest import ROOT
from service import database

MAKE_AND_CRASH = """
import asyncio, os, sys, time
import asyncpg
from pathlib import Path
from service.database import embedded_database_url

async def main(url):
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('written before the crash')")
    await conn.close()

url = embedded_database_url(Path(sys.argv[1]))
asyncio.run(main(url))
print("postmaster", open(Path(sys.argv[1]) / "pgdata" / "postmaster.pid").readline().strip(), flush=True)
time.sleep(3600)
"""


def crash(pid: int) -> None:
    """Kill the postmaster and all its processes at once, as a power cut would."""
    postmaster = psutil.Process(pid)
    processes = [postmaster, *postmaster.children(recursive=True)]
    for process in processes:
        process.send_signal(signal.SIGKILL)
    psutil.wait_procs(processes, timeout=10)


@pytest.fixture
def crashed_data_dir():
    """A data directory whose embedded Postgres died while running, with one table written."""
    runtime = Path(tempfile.gettempdir()) / f"threadline-tests-{os.getuid()}" / "run"   # as conftest's
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir = Path(tempfile.mkdtemp(prefix="tl-crashed-"))
    owner = subprocess.Popen([sys.executable, "-c", MAKE_AND_CRASH, str(data_dir)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while not line.startswith("postmaster "):   # after the service's own log lines
            line = owner.stdout.readline()
            assert line, "the first start ended early"
        crash(int(line.split()[1]))
    finally:
        owner.kill()
        owner.wait()
    yield data_dir
    for process in psutil.process_iter(["cmdline"]):    # a failed test's server: do not leave it running
        if str(data_dir / "pgdata") in (process.info["cmdline"] or []):
            crash(process.pid)
    shutil.rmtree(data_dir, ignore_errors=True)


def test_a_recovery_longer_than_pg_ctl_waits_is_waited_for(crashed_data_dir, monkeypatch):
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
        notes = asyncpg_fetch(url, "SELECT note FROM kept")
        assert notes == ["written before the crash"]
        log = (crashed_data_dir / "pgdata" / "log").read_text()
        assert "not properly shut down; automatic recovery in progress" in log
    finally:
        pgserver.get_server(crashed_data_dir / "pgdata").cleanup()   # stops it: this process holds the last handle


def asyncpg_fetch(url: str, query: str) -> list:
    import asyncio

    async def fetch():
        conn = await asyncpg.connect(url)
        try:
            return [row[0] for row in await conn.fetch(query)]
        finally:
            await conn.close()

    return asyncio.run(fetch())
