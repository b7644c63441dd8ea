#!/usr/bin/env python3
"""Runs benchmark: single-turn runs with the zero-latency model `builtin/echo`, end to end.

    .venv/bin/python ops/bench/runs.py [--seconds 15] [--warmup 5] [--sequential-runs 200]

`python -m service serve` runs as a subprocess on a fresh embedded PostgreSQL in a temp directory
(or on $DATABASE_URL when set), started exactly as ops/bench/appends.py starts it (this script
reuses its `Bench` helpers: server start, quiet-machine wait, CPU accounting, machine facts). An
assistant with model `builtin/echo` (streams back the last user message, no latency) runs every run.

Phases:

  (1) Throughput: 50 threads of 10 user messages; 50 concurrent clients (one per thread) each loop
      create a run (POST /v1/threads/{id}/runs) → wait until it is completed → GET it once (the
      client's view). Warm-up, then a measured window, on new threads for every measurement (each
      run adds its reply, so the threads grow). Reported: runs completed per second end to end
      (client view) and the service's own latency per run.
  (2) Deep vs shallow: sequential single-turn runs (each completes before the next starts), on a
      100,000-message thread and on 10-message threads, interleaved round by round. The 100,000
      messages are written in-process through the thread actor (as ops/bench/activation.py does:
      the API takes at most 1,000 messages per request and appending 100,000 one by one would
      take minutes); each shallow run gets a fresh 10-message thread made through the API, so it
      really is a 10-message thread. The reply of each deep run is deleted after it (outside the
      measured time): every deep run starts on exactly 100,000 messages, the most a thread may hold
      when a run is created. A third, diagnostic variant runs on the deep thread with
      `truncation_strategy: last_messages 10`, which separates "long thread" from "full context".

The service's own latency per run is read from the log: `recorded_at` of the run's `RunCompleted`
event minus that of its `RunCreated` event (both in the thread's stream). Completion is noticed by
one watcher task that polls the `runs` read model directly in PostgreSQL every --poll-ms for all
the runs being waited on (one indexed query; cheaper for the server than clients polling GET), so
the client's waiting does not load the service.

Any error (non-200 response, a run ending other than `completed`, a run not done within --timeout)
makes the run invalid: the script says so, exits 1 and does not touch RESULTS.md. Otherwise it
prints a table with the targets and rewrites the `runs` section of ops/bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from harness import CONTENT, Bench, _install_uvloop, _pct, bench_options, parse_bench_args, pct_ms  # noqa: E402
from results import RESULTS, write_report  # noqa: E402

MODEL = "builtin/echo"
CONCURRENCY = 50              # threads and concurrent clients in phase (1)
SHALLOW_MESSAGES = 10
DEEP_MESSAGES = 100_000

TARGET_P50_MS = 10.0          # service time per single-turn run
TARGET_P99_MS = 40.0
TARGET_DEEP_RATIO = 1.5       # 100,000-message thread vs 10-message thread

ACTIVE = ["queued", "in_progress", "requires_action", "cancelling"]
LOG_TYPES = ["RunCreated", "RunStarted", "RunStepCreated", "RunCompleted", "RunFailed", "RunIncomplete",
             "RunCancelled", "RunExpired"]
ENDINGS = {"RunCompleted", "RunFailed", "RunIncomplete", "RunCancelled", "RunExpired"}
LAST10 = {"truncation_strategy": {"type": "last_messages", "last_messages": 10}}


class BenchError(Exception):
    pass


# ================================================================================================
# The client side (asyncio, in this process)
# ================================================================================================

class Client:
    """HTTP calls to the service plus a watcher that notices run endings in the read model."""

    def __init__(self, base: str, key: str, dsn: str, poll: float, timeout: float, connections: int = 64):
        self.base, self.key, self.dsn, self.poll, self.timeout = base, key, dsn, poll, timeout
        self.connections = connections
        self.pending: dict[str, asyncio.Future] = {}
        self.errors: list[str] = []
        self.polls = 0

    async def __aenter__(self) -> "Client":
        import aiohttp
        import asyncpg
        self.session = aiohttp.ClientSession(
            self.base, connector=aiohttp.TCPConnector(limit=self.connections),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
        self.conn = await asyncpg.connect(self.dsn)
        self.watcher = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc) -> None:
        self.watcher.cancel()
        await asyncio.gather(self.watcher, return_exceptions=True)
        await self.conn.close()
        await self.session.close()

    def error(self, what: str) -> None:
        self.errors.append(what)
        if len(self.errors) <= 5:
            print(f"[bench] ERROR {what}", file=sys.stderr, flush=True)

    async def call(self, method: str, path: str, body: dict | None = None) -> dict:
        async with self.session.request(method, path, data=None if body is None else json.dumps(body)) as r:
            raw = await r.read()
            if r.status != 200:
                raise BenchError(f"{method} {path}: {r.status} {raw[:300]!r}")
            return json.loads(raw)

    async def _watch(self) -> None:
        while True:
            if self.pending:
                self.polls += 1
                rows = await self.conn.fetch("SELECT id, status FROM runs WHERE id = ANY($1::text[]) "
                                             "AND status <> ALL($2::text[])", list(self.pending), ACTIVE)
                for run_id, status in rows:
                    fut = self.pending.pop(run_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(status)
            await asyncio.sleep(self.poll)

    async def run_once(self, thread_id: str, body: dict, confirm: bool) -> tuple[str, float, float]:
        """Create a run and wait for its end: (run id, POST latency, create→seen completed), seconds."""
        t0 = time.perf_counter()
        run = await self.call("POST", f"/v1/threads/{thread_id}/runs", body)
        t_post = time.perf_counter() - t0
        run_id = run["id"]
        fut = asyncio.get_running_loop().create_future()
        self.pending[run_id] = fut
        try:
            status = await asyncio.wait_for(fut, self.timeout)
        except asyncio.TimeoutError:
            self.pending.pop(run_id, None)
            raise BenchError(f"run {run_id} on {thread_id} not done within {self.timeout:g} s") from None
        if status != "completed":
            raise BenchError(f"run {run_id} on {thread_id} ended {status}")
        if confirm:   # what a client does: read the finished run through the API
            seen = await self.call("GET", f"/v1/threads/{thread_id}/runs/{run_id}")
            if seen.get("status") != "completed":
                raise BenchError(f"GET run {run_id}: status {seen.get('status')} after the read model said completed")
        return run_id, t_post, time.perf_counter() - t0


async def log_timings(dsn: str, after_position: int) -> dict[str, dict[str, float]]:
    """Per run: epoch seconds of its RunCreated, RunStarted, first RunStepCreated and its ending."""
    import asyncpg
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT type, data->>'run_id' AS run_id, extract(epoch FROM recorded_at)::float8 AS t FROM events "
            "WHERE position > $1 AND type = ANY($2::text[]) ORDER BY position", after_position, LOG_TYPES)
    finally:
        await conn.close()
    out: dict[str, dict[str, float]] = {}
    for kind, run_id, t in rows:
        rec = out.setdefault(run_id, {})
        key = "ended" if kind in ENDINGS else kind
        rec.setdefault(key, t)
        if kind in ENDINGS:
            rec["ending"] = kind
    return out


def summarize(run_ids: list[str], log: dict[str, dict[str, float]]) -> dict:
    """Service latency (RunCreated → RunCompleted, from the log) and its parts, in ms."""
    total, queued, model, finish = [], [], [], []
    missing = 0
    for run_id in run_ids:
        rec = log.get(run_id)
        if not rec or rec.get("ending") != "RunCompleted" or "RunCreated" not in rec:
            missing += 1
            continue
        total.append((rec["ended"] - rec["RunCreated"]) * 1000)
        if "RunStarted" in rec:
            queued.append((rec["RunStarted"] - rec["RunCreated"]) * 1000)
            if "RunStepCreated" in rec:
                model.append((rec["RunStepCreated"] - rec["RunStarted"]) * 1000)
                finish.append((rec["ended"] - rec["RunStepCreated"]) * 1000)
    for xs in (total, queued, model, finish):
        xs.sort()
    return {"runs": len(total), "missing": missing,
            "p50_ms": _pct(total, 50), "p90_ms": _pct(total, 90), "p99_ms": _pct(total, 99),
            "max_ms": total[-1] if total else float("nan"),
            "queued_p50": _pct(queued, 50), "reply_p50": _pct(model, 50), "finish_p50": _pct(finish, 50)}


async def shallow_threads(c: Client, n: int) -> list[str]:
    """n new threads of SHALLOW_MESSAGES user messages, made through the API."""
    sem = asyncio.Semaphore(8)
    body = {"messages": [{"role": "user", "content": f"{CONTENT} ({k})"} for k in range(SHALLOW_MESSAGES)]}

    async def one() -> str:
        async with sem:
            return (await c.call("POST", "/v1/threads", body))["id"]
    return list(await asyncio.gather(*(one() for _ in range(n))))


# ================================================================================================
# The orchestrator
# ================================================================================================

class RunsBench(Bench):
    def __init__(self, args: argparse.Namespace):
        args.loadgen = "python"          # Bench's load generators are not used here
        super().__init__(args)
        self.throughput_errors: list[str] = []

    # -- setup -------------------------------------------------------------------------------------

    async def _setup(self, base: str, key: str) -> dict:
        async with Client(base, key, self.dsn, self.args.poll_ms / 1000, self.args.timeout) as c:
            assistant = await c.call("POST", "/v1/assistants", {"model": MODEL, "name": "bench"})
            ids = await shallow_threads(c, self.args.sequential_runs + self.args.sequential_warmup)
        project = await self._fetchval_async(
            "SELECT data->>'project' FROM events WHERE stream = $1 AND version = 1", f"thread-{ids[0]}")
        return {"assistant": assistant["id"], "shallow_threads": ids, "project": project}

    async def _fetchval_async(self, sql: str, *params):
        import asyncpg
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetchval(sql, *params)
        finally:
            await conn.close()

    async def _make_deep(self, project: str, n: int) -> str:
        """A thread with n user messages, written through a thread actor in this process."""
        from events.store import EventStore
        from events.types import TextPart, TextValue
        from projections.projector import SERVICE_PROJECTIONS
        from service import database
        from service.actors import ActorRegistry
        from service.domain import thread
        from service.domain.messages import NewMessage
        from service.ids import new_id, now

        pool = await database.connect(self.dsn, 4)
        store = EventStore(pool, SERVICE_PROJECTIONS)
        registry = ActorRegistry(store, pool)
        try:
            tid = new_id("thread_")
            at = now()
            msgs = [NewMessage(message_id=new_id("msg_"), role="user", content=[TextPart(TextValue(f"{CONTENT} ({i})"))])
                    for i in range(n)]
            await registry.ask(tid, thread.CreateThread(project=project, at=at, messages=msgs))
            return tid
        finally:
            await registry.close()
            await store.close()
            await pool.close()

    # -- phase (1): throughput ---------------------------------------------------------------------

    def phase_throughput(self, server: subprocess.Popen, base: str, key: str, setup: dict) -> dict:
        def attempt() -> dict:
            self.wait_quiet("(1) throughput")
            return asyncio.run(self._throughput(server, base, key, setup))
        return self.least_noisy(attempt, "(1) throughput")

    async def _throughput(self, server: subprocess.Popen, base: str, key: str, setup: dict) -> dict:
        a = self.args
        p0 = await self._fetchval_async("SELECT coalesce(max(position), 0) FROM events")
        body = {"assistant_id": setup["assistant"]}
        done: list[tuple[float, float, float, str, float]] = []   # (start, end, post, run id, e2e)
        stop = False
        self.log(f"(1) throughput: {CONCURRENCY} clients, warm-up {a.warmup:g} s, measuring {a.seconds:g} s")
        async with Client(base, key, self.dsn, a.poll_ms / 1000, a.timeout) as c:
            async def worker(tid: str) -> None:
                while not stop:
                    t0 = time.perf_counter()
                    try:
                        run_id, t_post, e2e = await c.run_once(tid, body, confirm=True)
                    except BenchError as exc:
                        c.error(str(exc))
                        await asyncio.sleep(0.1)
                        continue
                    except Exception as exc:  # noqa: BLE001 - socket errors and the like
                        c.error(f"{type(exc).__name__}: {exc}")
                        await asyncio.sleep(0.1)
                        continue
                    done.append((t0, time.perf_counter(), t_post, run_id, e2e))

            threads = await shallow_threads(c, CONCURRENCY)     # every attempt starts on 10-message threads
            tasks = [asyncio.create_task(worker(t)) for t in threads]
            await asyncio.sleep(a.warmup)
            errors_in_warmup = len(c.errors)
            groups = {"server": [server.pid], "postgres": "postgres", "client": [os.getpid()]}
            before = self.cpu_snapshot(groups)
            polls0 = c.polls
            profiler = self.start_profiler(server, "throughput", a.seconds)
            w0 = time.perf_counter()
            await asyncio.sleep(a.seconds)
            w1 = time.perf_counter()
            cpu = self.cpu_delta(before, groups)
            polls = c.polls - polls0
            stop = True
            await asyncio.gather(*tasks)     # in-flight runs finish: none is left active
            errors = list(c.errors)
        self.throughput_errors.extend(errors)    # an error in any attempt invalidates the run
        if profiler is not None:
            profiler.wait(60)
        completed = [d for d in done if w0 <= d[1] <= w1]
        inside = [d for d in done if d[0] >= w0 and d[1] <= w1]
        log = await log_timings(self.dsn, p0)
        svc = summarize([d[3] for d in inside], log)
        sizes = await self._fetchval_async(
            "SELECT array[min(n), max(n)] FROM (SELECT count(*) AS n FROM messages WHERE thread_id = ANY($1::text[]) "
            "GROUP BY thread_id) t", threads)
        res = {"rate": len(completed) / (w1 - w0), "seconds": w1 - w0, "completed": len(completed),
               "total_runs": len(done), "errors": errors, "warmup_errors": errors_in_warmup, "cpu": cpu,
               "e2e_p50_ms": pct_ms([d[4] for d in inside], 50), "e2e_p99_ms": pct_ms([d[4] for d in inside], 99),
               "post_p50_ms": pct_ms([d[2] for d in inside], 50), "post_p99_ms": pct_ms([d[2] for d in inside], 99),
               "polls_per_s": polls / (w1 - w0), "service": svc, "thread_sizes": list(sizes)}
        self.log(f"(1) throughput: {res['rate']:.1f} runs/s, service p50 {svc['p50_ms']:.1f} ms, "
                 f"p99 {svc['p99_ms']:.1f} ms ({svc['runs']} runs), errors {len(errors)}")
        return res

    # -- phase (2): sequential runs, deep vs shallow -----------------------------------------------

    def phase_sequential(self, server: subprocess.Popen, base: str, key: str, setup: dict, deep: str) -> dict:
        self.wait_quiet("(2) deep vs shallow")
        return asyncio.run(self._sequential(server, base, key, setup, deep))

    async def _sequential(self, server: subprocess.Popen, base: str, key: str, setup: dict, deep: str) -> dict:
        a = self.args
        shallow_ids = iter(setup["shallow_threads"])
        base_body = {"assistant_id": setup["assistant"]}
        variants = [("shallow", lambda: next(shallow_ids), base_body),
                    ("deep", lambda: deep, base_body),
                    ("deep, last_messages 10", lambda: deep, {**base_body, **LAST10})]
        per: dict[str, list[tuple[str, float, float]]] = {name: [] for name, _, _ in variants}
        p0 = await self._fetchval_async("SELECT coalesce(max(position), 0) FROM events")
        rounds = a.sequential_warmup + a.sequential_runs
        self.log(f"(2) deep vs shallow: {a.sequential_warmup} warm-up + {a.sequential_runs} measured rounds of "
                 f"{len(variants)} sequential runs")
        groups = {"server": [server.pid], "postgres": "postgres", "client": [os.getpid()]}
        profiler = None
        t_start = time.perf_counter()
        async with Client(base, key, self.dsn, a.poll_ms / 1000, a.timeout) as c:
            for r in range(rounds):
                if r == a.sequential_warmup:
                    before = self.cpu_snapshot(groups)
                    profiler = self.start_profiler(server, "sequential", None)
                    t_start = time.perf_counter()
                k = r % len(variants)          # rotate the order: no variant always follows another
                for name, thread_of, body in variants[k:] + variants[:k]:
                    try:
                        run_id, t_post, e2e = await c.run_once(thread_of(), body, confirm=False)
                    except BenchError as exc:
                        c.error(str(exc))
                        continue
                    if r >= a.sequential_warmup:
                        per[name].append((run_id, t_post, e2e))
                    if name != "shallow":
                        await self._drop_reply(c, deep, run_id)
                if r > 0 and r % 50 == 0:
                    self.log(f"(2) round {r}/{rounds}")
            errors = list(c.errors)
        elapsed = time.perf_counter() - t_start
        cpu = self.cpu_delta(before, groups) if a.sequential_runs else {}
        if profiler is not None:
            profiler.send_signal(2)       # SIGINT: py-spy writes what it has
            profiler.wait(60)
        log = await log_timings(self.dsn, p0)
        out = {"errors": errors, "cpu": cpu, "seconds": elapsed, "variants": {}}
        for name, rows in per.items():
            svc = summarize([x[0] for x in rows], log)
            svc["e2e_p50_ms"] = pct_ms([x[2] for x in rows], 50)
            svc["post_p50_ms"] = pct_ms([x[1] for x in rows], 50)
            out["variants"][name] = svc
            self.log(f"(2) {name}: service p50 {svc['p50_ms']:.1f} ms, p99 {svc['p99_ms']:.1f} ms "
                     f"({svc['runs']} runs)")
        out["deep_messages"] = await self._fetchval_async("SELECT count(*) FROM messages WHERE thread_id = $1", deep)
        return out

    async def _drop_reply(self, c: Client, thread_id: str, run_id: str) -> None:
        """Delete the run's reply (outside the measured time): the deep thread stays at exactly its size.

        It has to: a thread holds at most 100,000 messages and a run cannot be created on a thread
        that holds more, which the first reply would make it."""
        try:
            replies = await c.call("GET", f"/v1/threads/{thread_id}/messages?run_id={run_id}")
            for m in replies["data"]:
                await c.call("DELETE", f"/v1/threads/{thread_id}/messages/{m['id']}")
        except BenchError as exc:
            c.error(str(exc))

    # -- the whole run --------------------------------------------------------------------------------

    def run(self) -> int:
        a = self.args
        self.errors: list[str] = []
        try:
            server, base, key = self.start_threadline()
            self.log(f"setup: assistant ({MODEL}), {a.sequential_runs + a.sequential_warmup} threads of "
                     f"{SHALLOW_MESSAGES} messages")
            setup = asyncio.run(self._setup(base, key))
            t0 = time.perf_counter()
            self.log(f"setup: writing a {a.deep_messages:,}-message thread in-process (project {setup['project']})")
            deep = asyncio.run(self._make_deep(setup["project"], a.deep_messages))
            deep_seconds = time.perf_counter() - t0
            self.log(f"setup: deep thread {deep} written in {deep_seconds:.1f} s")
            pg = self.pg_facts()
            tput = self.phase_throughput(server, base, key, setup)
            seq = self.phase_sequential(server, base, key, setup, deep)
            if server.poll() is not None:
                self.errors.append(f"the server exited with {server.returncode}")
        finally:
            self.cleanup()
        for what, errs in (("(1) throughput", self.throughput_errors), ("(2) deep vs shallow", seq["errors"])):
            if errs:
                self.errors.append(f"{what}: {len(errs)} errors (first: {errs[0]})")
        if tput["service"]["missing"]:
            self.errors.append(f"(1): {tput['service']['missing']} completed runs without RunCompleted in the log")
        for name, v in seq["variants"].items():
            if v["missing"] or not v["runs"]:
                self.errors.append(f"(2) {name}: {v['runs']} runs measured, {v['missing']} missing from the log")
        if seq["deep_messages"] != a.deep_messages:
            self.errors.append(f"(2): the deep thread holds {seq['deep_messages']:,} messages, not {a.deep_messages:,}")
        if not tput["completed"]:
            self.errors.append("(1): no run completed in the window")
        report = self.report(tput, seq, pg, deep_seconds)
        print(report["text"])
        if self.errors:
            print("\nINVALID RUN: " + "; ".join(self.errors))
            print("RESULTS.md was not updated.")
            return 1
        if a.env:
            print(f"\nExperiment (Threadline env: {' '.join(a.env)}): RESULTS.md was not updated.")
        elif a.profile:
            print(f"\nProfiled run (py-spy attached to the server): figures are perturbed; RESULTS.md was not "
                  f"updated. Profiles in {a.profile}")
        elif not a.no_write:
            self.write_results(report)
            print(f"\nWrote {RESULTS.relative_to(ROOT)}")
        return 0

    # -- reporting ------------------------------------------------------------------------------------

    def report(self, tput: dict, seq: dict, pg: dict, deep_seconds: float) -> dict:
        a = self.args
        m = self.machine()
        sh, dp, d10 = (seq["variants"][k] for k in ("shallow", "deep", "deep, last_messages 10"))
        r50 = dp["p50_ms"] / sh["p50_ms"]
        r99 = dp["p99_ms"] / sh["p99_ms"]
        ts = tput["service"]

        def yn(ok: bool | None) -> str:
            return "—" if ok is None else ("yes" if ok else "NO")

        rows = [
            (f"runs completed/s end to end ({CONCURRENCY} concurrent threads)", f"{tput['rate']:,.1f}", "—", None),
            (f"service latency p50, {CONCURRENCY} concurrent", f"{ts['p50_ms']:.1f} ms", "— (load: see note)", None),
            (f"service latency p99, {CONCURRENCY} concurrent", f"{ts['p99_ms']:.1f} ms", "—", None),
            ("service latency p50, 10-message thread", f"{sh['p50_ms']:.1f} ms", f"≤ {TARGET_P50_MS:g} ms",
             sh["p50_ms"] <= TARGET_P50_MS),
            ("service latency p99, 10-message thread", f"{sh['p99_ms']:.1f} ms", f"≤ {TARGET_P99_MS:g} ms",
             sh["p99_ms"] <= TARGET_P99_MS),
            (f"service latency p50, {a.deep_messages:,}-message thread", f"{dp['p50_ms']:.1f} ms",
             f"≤ {TARGET_P50_MS:g} ms", dp["p50_ms"] <= TARGET_P50_MS),
            (f"service latency p99, {a.deep_messages:,}-message thread", f"{dp['p99_ms']:.1f} ms",
             f"≤ {TARGET_P99_MS:g} ms", dp["p99_ms"] <= TARGET_P99_MS),
            ("deep ÷ shallow, p50", f"{r50:.2f}", f"≤ {TARGET_DEEP_RATIO:g}", r50 <= TARGET_DEEP_RATIO),
            ("deep ÷ shallow, p99", f"{r99:.2f}", f"≤ {TARGET_DEEP_RATIO:g}", r99 <= TARGET_DEEP_RATIO),
        ]
        table = ("| figure | value | target | met? |\n|---|---|---|---|\n"
                 + "".join(f"| {f} | {v} | {t} | {yn(ok)} |\n" for f, v, t, ok in rows))

        def cpu(c: dict) -> str:
            return ", ".join(f"{k} {v}%" for k, v in (c or {}).items())

        detail = (
            "| phase | runs | service p50 ms | p90 ms | p99 ms | max ms | created→started p50 | started→reply opened p50 "
            "| reply opened→completed p50 | client: POST p50 ms | client: create→seen completed p50 ms |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n")
        lines = [(f"(1) {CONCURRENCY} concurrent, 10-message threads", ts, tput["post_p50_ms"], tput["e2e_p50_ms"])]
        lines += [(f"(2) sequential, {name}", v, v["post_p50_ms"], v["e2e_p50_ms"])
                  for name, v in (("10-message thread", sh), (f"{a.deep_messages:,}-message thread", dp),
                                  (f"{a.deep_messages:,}-message thread, last_messages 10", d10))]
        detail += "".join(
            f"| {name} | {s['runs']:,} | {s['p50_ms']:.1f} | {s['p90_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.1f} | "
            f"{s['queued_p50']:.1f} | {s['reply_p50']:.1f} | {s['finish_p50']:.1f} | {post:.1f} | {e2e:.1f} |\n"
            for name, s, post, e2e in lines)
        pool = os.environ.get("THREADLINE_DB_POOL_SIZE", "16")
        setup = (
            f"- Model: `{MODEL}` (streams the last user message back word by word; no latency). Every run is "
            f"single-turn: one reply message, no tools. Messages are `{CONTENT} (k)`.\n"
            f"- Service latency: `recorded_at` of the run's `RunCompleted` minus that of its `RunCreated`, from the "
            f"`events` table (clock_timestamp() at insert; excludes the HTTP handling before the run is recorded and "
            f"the last commit). Its parts: created→started (engine picks the run up, claims the lease), "
            f"started→reply opened (reads the run and the thread's tail, fits the context, first model token), "
            f"reply opened→completed (text, message completed, run completed).\n"
            f"- (1): {CONCURRENCY} threads of {SHALLOW_MESSAGES} messages, one client each, each looping "
            f"POST /v1/threads/{{id}}/runs → wait → GET the run; {a.warmup:g} s warm-up, then {a.seconds:g} s "
            f"measured, on {CONCURRENCY} new threads per measurement. runs/s counts runs seen completed by their client "
            f"inside the window; latencies are of the {ts['runs']:,} runs created and completed inside it. Each run "
            f"adds its reply, so the threads grow by one message per run: {tput['total_runs']:,} runs over "
            f"{CONCURRENCY} threads, which ended with {tput['thread_sizes'][0]}–{tput['thread_sizes'][1]} messages "
            f"(the run's context read and token count grow with them). With "
            f"{CONCURRENCY} runs always in flight, service latency ≈ {CONCURRENCY} ÷ runs/s by Little's law, so "
            f"the per-run targets are checked on the sequential runs of (2).\n"
            f"- (2): {a.sequential_runs} measured rounds (after {a.sequential_warmup} warm-up rounds) of sequential "
            f"runs, one per variant, order rotated each round: a fresh {SHALLOW_MESSAGES}-message thread (made "
            f"through the API); the {a.deep_messages:,}-message thread (written in-process through a thread actor in "
            f"{deep_seconds:.0f} s; each run's reply is deleted after it, outside the measured time, so every run starts "
            f"on exactly {seq['deep_messages']:,} messages (a thread holds at most 100,000 messages, and no run can be "
            f"created on a thread that holds more, as the first reply would make it)); the "
            f"same thread with `truncation_strategy: last_messages 10` (diagnostic: long thread without a full "
            f"context). Default truncation (`auto`) fills the model's context window (128,000 tokens for builtin "
            f"models) from the newest message back.\n"
            f"- Waiting: one watcher task polls the `runs` read model in PostgreSQL every {a.poll_ms:g} ms for all "
            f"the runs waited on ({tput['polls_per_s']:.0f} queries/s in (1)); clients do not poll the service.\n"
            f"- Threadline: `python -m service serve`, default configuration (pool {pool}; its log goes to a file"
            f"{'; extra env: ' + ' '.join(a.env) if a.env else ''}), "
            f"{'$DATABASE_URL' if os.environ.get('DATABASE_URL') else 'fresh embedded PostgreSQL'}: PostgreSQL "
            f"{pg['version']}, synchronous_commit={pg['synchronous_commit']}, fsync={pg['fsync']}, "
            f"shared_buffers={pg['shared_buffers']}. Client: aiohttp + asyncpg in the benchmark's own process.\n"
            f"- CPU (% of one core), (1) window: {cpu(tput['cpu'])}; (2) measured rounds ({seq['seconds']:.0f} s): "
            f"{cpu(seq['cpu'])}. `other` is anything else on this shared machine (noise); `steal` is taken by the "
            f"hypervisor. Windows used for (1): {tput.get('attempts', 1)} (measured again when other work and steal "
            f"took more than {a.max_other:g}%).\n")
        setup += self.notes_text()
        machine = self.machine_line(m)
        text = ("\n" + table + "\n" + detail + "\n" + setup + "\n" + machine + "\n"
                + f"\nruns/s = {tput['rate']:,.1f}; sequential service latency p50/p99: 10-message "
                  f"{sh['p50_ms']:.1f}/{sh['p99_ms']:.1f} ms, {a.deep_messages:,}-message {dp['p50_ms']:.1f}/"
                  f"{dp['p99_ms']:.1f} ms; deep ÷ shallow = {r50:.2f} (p50), {r99:.2f} (p99)")
        history = self.history_row(m, f"{tput['rate']:,.1f} | {ts['p50_ms']:.1f} | {ts['p99_ms']:.1f} | "
                                      f"{sh['p50_ms']:.1f} | {sh['p99_ms']:.1f} | {dp['p50_ms']:.1f} | "
                                      f"{dp['p99_ms']:.1f} | {r50:.2f} | {a.seconds:g} s, {a.sequential_runs}")
        return {"table": table, "detail": detail, "setup": setup, "machine": machine, "text": text,
                "history": history}

    def write_results(self, report: dict) -> None:
        a = self.args
        write_report(
            "runs", "Runs (`ops/bench/runs.py`)",
            f"Single-turn runs with the zero-latency model `{MODEL}`: runs completed per second with "
            f"{CONCURRENCY} threads running concurrently, and the service's own time per run (from the event log) "
            f"on a 10-message and on a {a.deep_messages:,}-message thread.",
            f".venv/bin/python ops/bench/runs.py --seconds {a.seconds:g}", report,
            ["date", "code", "machine", "runs/s", "(1) p50 ms", "(1) p99 ms", "10-msg p50", "10-msg p99", "deep p50",
             "deep p99", "deep ÷ shallow p50", "window, rounds"],
            per="Per phase (service latencies from the log, in ms; the client columns include the benchmark's "
                "own waiting)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=15, help="measured window of phase (1) (default 15)")
    p.add_argument("--warmup", type=float, default=5, help="warm-up of phase (1) (default 5)")
    p.add_argument("--sequential-runs", type=int, default=200,
                   help="measured rounds of phase (2): runs per variant (default 200)")
    p.add_argument("--sequential-warmup", type=int, default=5, help="warm-up rounds of phase (2) (default 5)")
    p.add_argument("--deep-messages", type=int, default=DEEP_MESSAGES,
                   help=f"messages in the deep thread (default {DEEP_MESSAGES:,})")
    p.add_argument("--poll-ms", type=float, default=2, help="how often the watcher looks for ended runs (default 2)")
    p.add_argument("--timeout", type=float, default=60, help="a run not done after this many seconds is an error")
    bench_options(p)
    args = parse_bench_args(p)
    _install_uvloop()
    return RunsBench(args).run()


if __name__ == "__main__":
    sys.exit(main())
