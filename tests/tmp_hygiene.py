"""A test run leaves nothing in $TMPDIR but the embedded test Postgres (reused from run to run).

Every run gets a directory of its own in $TMPDIR and points TMPDIR (this process's and so every
subprocess's) and pytest's basetemp into it. When the run ends, after the session fixtures are torn down,
anything in it other than pytest's basetemp (tmp_path, scratch_dir: the run's own, removed with it) is
something a test made and did not remove: the run fails naming it. Then the directory is removed; one a
killed run left is removed by the next."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REAL_TMP = Path(tempfile.gettempdir())
EMBEDDED_TEST_POSTGRES = REAL_TMP / f"threadline-tests-{os.getuid()}"
ALLOWED = {"pytest", EMBEDDED_TEST_POSTGRES.name}
_PREFIX = "threadline-run-"
_run: dict[str, Path | str | None] = {}


def scratch_dir() -> Path:
    """For files a test reads after the process writing them ended (a service's log): inside the run's
    basetemp, removed with it."""
    path = Path(_run.get("basetemp") or REAL_TMP) / "scratch"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _remove_runs_killed_before() -> None:
    for entry in REAL_TMP.glob(f"{_PREFIX}*"):
        pid = entry.name[len(_PREFIX):].split("-")[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.hookimpl(tryfirst=True)   # before pytest's tmp_path plugin reads the basetemp
def pytest_configure(config: pytest.Config) -> None:
    _remove_runs_killed_before()
    run = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=REAL_TMP))
    _run["tmpdir_before"] = os.environ.get("TMPDIR")
    _run["dir"] = run
    os.environ["TMPDIR"] = tempfile.tempdir = str(run)
    if config.option.basetemp is None:
        config.option.basetemp = str(run / "pytest")
    _run["basetemp"] = Path(config.option.basetemp)


@pytest.hookimpl(wrapper=True)   # after the session fixtures' teardown (pytest's own sessionfinish)
def pytest_sessionfinish(session: pytest.Session, exitstatus):
    result = yield
    run = _run.get("dir")
    if run is None:
        return result
    left = sorted(p.name for p in run.iterdir() if p.name not in ALLOWED)
    shutil.rmtree(run, ignore_errors=True)
    # What still runs at exit (the embedded Postgres's atexit stop makes temporary files) uses $TMPDIR again.
    os.environ["TMPDIR"] = _run["tmpdir_before"] if _run["tmpdir_before"] is not None else str(REAL_TMP)
    tempfile.tempdir = None
    if left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"tests left these in $TMPDIR (remove them, or use tmp_path): {', '.join(left)}"
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(message, red=True, bold=True)
        else:
            print(message)
    return result
