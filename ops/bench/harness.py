"""The benchmarks' shared harness: starting and stopping processes (Threadline, its embedded
PostgreSQL, load generators), CPU accounting per process group, waiting for a quiet machine,
choosing the least noisy of several windows, statistics, profiling, and the facts about the
machine every report states. Each benchmark subclasses `Bench` with its own phases
(ops/bench/appends.py is the fullest example)."""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
PYTHON = sys.executable

CONTENT = "Benchmark message: the quick brown fox jumps over the lazy dog, then appends another line."
BODY = json.dumps({"role": "user", "content": CONTENT}, separators=(",", ":"))


def _install_uvloop() -> str:
    import asyncio
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def _pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def pct_ms(seconds: list[float], p: float) -> float:
    """The p-th percentile of durations in seconds, in milliseconds (any order)."""
    return _pct(sorted(seconds), p) * 1000


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="threadline-bench-"))
        self.children: list[subprocess.Popen] = []
        self.pg_server = None          # our handle on the embedded PostgreSQL (keeps it up for (b))
        self.dsn: str | None = os.environ.get("DATABASE_URL") or None
        self.loadgen = args.loadgen
        self.notes: list[str] = []
        # Registered before pgserver registers its own exit hook (which touches its lock file in
        # our temp directory), so that this one runs after it: exit hooks run last-in, first-out.
        atexit.register(self.remove_tmp)

    # -- reporting ----------------------------------------------------------------------------------

    def notes_text(self) -> str:
        """The notes a run collected, as lines of its setup list."""
        return "".join(f"- Note: {n}\n" for n in self.notes)

    @staticmethod
    def machine_line(m: dict) -> str:
        return (f"Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}; {m['date']}; "
                f"code: {m['code']}.")

    @staticmethod
    def history_row(m: dict, cells: str) -> str:
        """A row of a section's history: when, which code, which machine, then the benchmark's cells."""
        return f"| {m['date']} | {m['code']} | {m['nproc']} × {m['cpu']} | {cells} |\n"

    def remove_tmp(self) -> None:
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------------------

    def start_profiler(self, server: subprocess.Popen, name: str, seconds: float | None = None):
        """py-spy on the server into <--profile>/<name>.txt (raw stacks), or None without --profile."""
        if not self.args.profile:
            return None
        self.args.profile.mkdir(parents=True, exist_ok=True)
        out = self.args.profile / f"{name}.txt"
        cmd = [self.args.py_spy, "record", "-p", str(server.pid), "-r", "100", "-f", "raw", "-o", str(out),
               *self.args.py_spy_args.split()]
        if seconds is not None:
            cmd += ["-d", f"{seconds:g}"]
        self.log(f"py-spy → {out}")
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def log(self, msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    @staticmethod
    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def spawn(self, cmd: list[str], name: str, env: dict | None = None) -> subprocess.Popen:
        with open(self.tmp / f"{name}.stdout", "wb") as out, open(self.tmp / f"{name}.stderr", "wb") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, env=env or os.environ.copy())
        self.children.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 30) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.children:
            self.children.remove(proc)

    def wait_healthy(self, proc: subprocess.Popen, base: str, name: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}; see {self.tmp}/{name}.stderr:\n"
                                 + (self.tmp / f"{name}.stderr").read_text()[-3000:])
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise SystemExit(f"{name} did not become healthy within {timeout:.0f} s")

    def http_json(self, method: str, url: str, key: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(url, method=method, data=json.dumps(body or {}).encode(),
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    # -- CPU accounting (what each party burnt during a measured window) -------------------------

    @staticmethod
    def _cpu_of(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    @staticmethod
    def _postgres_pids() -> list[int]:
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if (d / "comm").read_text().strip() == "postgres":
                        pids.append(int(d.name))
                except OSError:
                    pass
        return pids

    @staticmethod
    def _machine_busy() -> tuple[float, float, float, float]:
        """(busy, total, irq + softirq, steal) jiffies of all CPUs since boot."""
        vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        vals = vals[:8]   # user nice system idle iowait irq softirq steal (guest is inside user)
        idle = vals[3] + vals[4]
        return sum(vals) - idle, float(sum(vals)), vals[5] + vals[6], vals[7]

    def _our_postgres_pids(self) -> list[int]:
        """The embedded server's postmaster and its children; any `postgres` with DATABASE_URL."""
        pidfile = self.tmp / "data" / "pgdata" / "postmaster.pid"
        try:
            postmaster = int(pidfile.read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return self._postgres_pids()
        pids = [postmaster]
        for pid in self._postgres_pids():
            try:
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == postmaster:
                pids.append(pid)
        return pids

    def cpu_snapshot(self, groups: dict[str, list[int] | str]) -> dict:
        snap = {}
        for name, pids in groups.items():
            if pids == "postgres":
                pids = self._our_postgres_pids()
            snap[name] = {pid: self._cpu_of(pid) for pid in pids}
        snap["_machine"] = self._machine_busy()
        snap["_t"] = time.monotonic()
        return snap

    def cpu_delta(self, before: dict, after_groups: dict[str, list[int] | str]) -> dict:
        after = self.cpu_snapshot(after_groups)
        wall = after["_t"] - before["_t"]
        out = {}
        for name in after_groups:
            used = sum(c - before[name].get(pid, 0.0) for pid, c in after[name].items())
            out[name] = round(100 * used / wall)
            if after_groups[name] == "postgres":
                # Client backends vs. the server's own processes (WAL writer, checkpointer, autovacuum…).
                background = 0.0
                for pid, c in after[name].items():
                    try:
                        title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                    except OSError:
                        title = ""
                    if "[local]" not in title and "(" not in title:   # client backends name their peer
                        background += c - before[name].get(pid, 0.0)
                out["pg-background"] = round(100 * background / wall)
        busy, total, irq, steal = (a - b for a, b in zip(after["_machine"], before["_machine"]))
        scale = 100 * (os.cpu_count() or 1) / total if total else 0
        out["machine"] = round(busy * scale)
        out["irq"] = round(irq * scale)       # network softirqs of the loopback traffic, mostly
        if steal:
            out["steal"] = round(steal * scale)
        # Anything else running on the machine meanwhile (other jobs): noise.
        out["other"] = max(0, out["machine"] - out["irq"] - out.get("steal", 0)
                           - sum(out[name] for name in after_groups))
        if "pg-background" in out:   # shown inside the postgres figure; keep it last
            out["pg-background"] = out.pop("pg-background")
        return out   # percent of one core (machine: of all cores, i.e. 200 = both busy)

    def wait_quiet(self, what: str) -> None:
        """The machine is shared: wait (a while) until other work leaves it mostly idle."""
        deadline = time.monotonic() + self.args.quiet_timeout
        while True:
            b0, t0, _, _ = self._machine_busy()
            time.sleep(1.0)
            b1, t1, _, _ = self._machine_busy()
            busy = 100 * (os.cpu_count() or 1) * (b1 - b0) / max(1.0, t1 - t0)
            if busy <= self.args.quiet_percent:
                return
            if time.monotonic() > deadline:
                self.log(f"{what}: the machine is still {busy:.0f}% busy with other work; measuring anyway")
                self.notes.append(f"{what} started while other work kept the machine {busy:.0f}% busy "
                                  f"(see `other` in the CPU column).")
                return
            self.log(f"{what}: machine {busy:.0f}% busy with other work; waiting for it to settle")

    def least_noisy(self, attempt, what: str) -> dict:
        """Measure; while other work on the (shared) machine took more than --max-other % CPU during
        the window, measure again (at most --attempts times) and keep the quietest window."""
        def noise(res: dict) -> int:   # other processes, plus CPU the hypervisor took away
            cpu = res.get("cpu") or {}
            return cpu.get("other", 0) + cpu.get("steal", 0)

        best = None
        for n in range(1, self.args.attempts + 1):
            res = attempt()
            if best is None or noise(res) < noise(best):
                best = res
            if noise(res) <= self.args.max_other:
                break
            self.log(f"{what}: other work and steal took {noise(res)}% CPU during the window"
                     + (f"; measuring again ({n + 1}/{self.args.attempts})" if n < self.args.attempts else ""))
        best["attempts"] = n
        if noise(best) > self.args.max_other:
            self.notes.append(f"{what}: even the quietest of {n} windows had other work and steal "
                              f"taking {noise(best)}% CPU; its figures are depressed by that.")
        return best

    def start_threadline(self) -> tuple[subprocess.Popen, str, str]:
        port = self.free_port()
        base = f"http://127.0.0.1:{port}"
        env = os.environ.copy()
        env["THREADLINE_DATA_DIR"] = str(self.tmp / "data")
        for item in self.args.env:
            name, _, value = item.partition("=")
            env[name] = value
        # The embedded PostgreSQL's lock and socket directory; set here so that this process
        # (which joins the same server for phase (b)) agrees with the service.
        env.setdefault("XDG_RUNTIME_DIR", str(self.tmp / "data" / "run"))
        os.environ["XDG_RUNTIME_DIR"] = env["XDG_RUNTIME_DIR"]
        self.log(f"Threadline: starting on {base} ({'DATABASE_URL' if self.dsn else 'embedded PostgreSQL in ' + str(self.tmp / 'data')})")
        proc = self.spawn([PYTHON, "-m", "service", "serve", "--port", str(port)], "threadline", env)
        self.wait_healthy(proc, base, "threadline")
        lines = (self.tmp / "threadline.stdout").read_text().split()
        key = lines[-1] if lines and lines[-1].startswith("tl-") else ""
        if not key:   # an existing database: make a key of our own
            out = subprocess.run([PYTHON, "-m", "service", "keys", "create", "--project", "bench"],
                                 cwd=ROOT, env=env, capture_output=True, text=True, check=True)
            key = out.stdout.split()[-1]
        if self.dsn is None:
            Path(env["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
            import pgserver   # join the server the service started; our handle keeps it up for (b)
            self.pg_server = pgserver.get_server(self.tmp / "data" / "pgdata", cleanup_mode="stop")
            self.dsn = self.pg_server.get_uri()
        return proc, base, key

    def db_fetchrow(self, sql: str, *params):
        rows = self.db_fetch_all(sql, *params)
        return rows[0] if rows else None

    def db_fetchval(self, sql: str, *params):
        return self.db_fetchrow(sql, *params)[0]

    def db_fetch_all(self, sql: str, *params) -> list:
        import asyncio

        import asyncpg

        async def fetch():
            conn = await asyncpg.connect(self.dsn)
            try:
                return await conn.fetch(sql, *params)
            finally:
                await conn.close()
        return asyncio.run(fetch())

    def pg_facts(self) -> dict:
        import asyncio

        import asyncpg

        async def facts() -> dict:
            conn = await asyncpg.connect(self.dsn)
            try:
                out = {"version": (await conn.fetchval("SHOW server_version")).split()[0]}
                for name in ("synchronous_commit", "fsync", "shared_buffers", "wal_level", "max_connections"):
                    out[name] = await conn.fetchval(f"SHOW {name}")
                return out
            finally:
                await conn.close()
        return asyncio.run(facts())

    def cleanup(self) -> None:
        for proc in list(self.children):
            self.stop(proc)
        if self.pg_server is not None:
            self.pg_server.cleanup()   # our handle is the last one: stops the embedded PostgreSQL
            self.pg_server = None
        if self.args.keep:
            self.log(f"kept {self.tmp}")
        else:
            self.remove_tmp()

    @staticmethod
    def machine() -> dict:
        model = platform.processor() or "unknown"
        try:
            for ln in Path("/proc/cpuinfo").read_text().splitlines():
                if ln.startswith("model name"):
                    model = ln.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        try:
            head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                  text=True, check=True).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                   capture_output=True, text=True, check=True).stdout.strip()
            code = head + (" + uncommitted changes" if dirty else "")
        except (OSError, subprocess.CalledProcessError):
            code = "unknown"
        return {"nproc": os.cpu_count(), "cpu": model, "code": code,
                "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "python": platform.python_version(), "kernel": platform.release()}

def bench_options(p: argparse.ArgumentParser, *, quiet_timeout: float = 60, attempts: int = 3) -> None:
    """The options every server benchmark shares: quiet-machine wait, windows measured again,
    profiling, experiments, and what is kept."""
    p.add_argument("--quiet-percent", type=float, default=15,
                   help="before each window wait until other work uses at most this much CPU (default 15%%)")
    p.add_argument("--quiet-timeout", type=float, default=quiet_timeout,
                   help=f"how long to wait for that (default {quiet_timeout:g} s)")
    p.add_argument("--max-other", type=float, default=30,
                   help="measure a window again when other work plus steal took more than this %% CPU "
                        "(of one core) during it (default 30)")
    p.add_argument("--attempts", type=int, default=attempts,
                   help=f"at most this many windows per phase (default {attempts})")
    p.add_argument("--profile", type=Path, help="attach py-spy to the Threadline server during each measured "
                   "window and write raw (collapsed) stacks into this directory; does not update RESULTS.md")
    p.add_argument("--py-spy-args", default="--full-filenames",
                   help="py-spy record arguments for --profile (e.g. '--full-filenames --native')")
    p.add_argument("--py-spy", default=shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy"))
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the Threadline server (repeatable), e.g. OTEL_SDK_DISABLED=true; "
                        "such runs do not update RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    p.add_argument("--keep", action="store_true", help="keep the temp directory (logs, pgdata)")


def client_bench(p: argparse.ArgumentParser) -> tuple[argparse.Namespace, "Bench"]:
    """For benchmarks whose client is Python (no wrk): the shared options, parsed, and a Bench."""
    p.add_argument("--loadgen", default="python")
    bench_options(p)
    args = parse_bench_args(p)
    return args, Bench(args)


def parse_bench_args(p: argparse.ArgumentParser) -> argparse.Namespace:
    args = p.parse_args()
    if args.profile:
        args.profile = args.profile.resolve()
    return args
