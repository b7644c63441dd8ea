#!/usr/bin/env python3
"""Message-append benchmark: Threadline against two baselines, measured back to back in one run.

    .venv/bin/python ops/bench/appends.py [--seconds 15] [--warmup 5]

Phases (each: warm-up, then a fixed measured window; nothing else runs meanwhile):

  (a) plain aiohttp: a one-process uvloop aiohttp server (a subprocess of this script) whose
      handler for POST /v1/threads/{id}/messages only parses the JSON body and answers a small
      JSON object. Driven by the same load generator, same concurrency, same requests.
  Threadline: `python -m service serve` as a subprocess on a fresh embedded PostgreSQL in a temp
      directory (or on $DATABASE_URL when set). 100 threads are created first; the load
      generator then sends POST /v1/threads/{id}/messages rotating over them.
  (b) raw INSERTs: one asyncpg process (uvloop) with N concurrent tasks on a pool doing single-row
      INSERTs into a copy of the `events` table, on the same PostgreSQL server as Threadline.

The load generator is wrk (one thread, so it leaves CPU for the server on a 2-core machine) with a
generated Lua script that rotates over the thread ids, counts every non-200 response and reports
p50/p99 from wrk's latency histogram. If wrk is missing the script installs it with apt-get; if it
is still unusable (or --loadgen python) a lean aiohttp client runs in its own process instead.

With DATABASE_URL the run leaves 100 threads and their messages in that database and creates
(then drops) the schema `threadline_bench` there for phase (b).

A phase with any error (non-200, socket error, timeout) makes the run invalid: the script says
so, exits 1 and does not touch RESULTS.md. Otherwise it prints a table, the ratios and the targets
and rewrites ops/bench/RESULTS.md (keeping the history of earlier runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
from harness import (  # noqa: E402
    BODY, CONTENT, PYTHON, Bench, _install_uvloop, _pct, bench_options, parse_bench_args,
)
from results import RESULTS, write_report  # noqa: E402


TARGET_VS_PLAIN = 0.40      # appends/s >= 40% of the plain aiohttp handler
TARGET_VS_RAW = 1.0         # appends/s >= raw single-row INSERTs
TARGET_P99_MS = 25.0        # p99 latency of an append


# ================================================================================================
# Child modes: the plain aiohttp server, the raw-INSERT driver, the Python load generator.
# Each runs in its own process (`appends.py _mode ...`).
# ================================================================================================

def child_plain_server(argv: list[str]) -> None:
    """Baseline (a): parse the JSON body, answer a small JSON. One process, uvloop, like Threadline."""
    import asyncio

    import msgspec
    from aiohttp import web

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    _install_uvloop()
    encoder = msgspec.json.Encoder()

    async def create_message(request: web.Request) -> web.Response:
        body = msgspec.json.decode(await request.read())
        return web.Response(
            body=encoder.encode({"id": "msg_plain", "object": "thread.message",
                                 "thread_id": request.match_info["thread_id"], "role": body.get("role")}),
            content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/threads/{thread_id}/messages", create_message)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port, reuse_port=True).start()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


RAW_SCHEMA = "threadline_bench"
# Baseline (b) inserts into a table made by Threadline's own migration, in a schema of its own.
RAW_DDL = (f"DROP SCHEMA IF EXISTS {RAW_SCHEMA} CASCADE; CREATE SCHEMA {RAW_SCHEMA}; "
           f"SET search_path TO {RAW_SCHEMA};\n" + (ROOT / "events" / "sql" / "0001_baseline.sql").read_text()
           + "\nRESET search_path;\n")


def child_raw_inserts(argv: list[str]) -> None:
    """Baseline (b): single-row INSERTs from one asyncpg process, `concurrency` tasks on a pool."""
    import asyncio

    import asyncpg

    p = argparse.ArgumentParser()
    p.add_argument("--dsn", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--warmup", type=float, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--pool-size", type=int, required=True)
    args = p.parse_args(argv)
    loop_kind = _install_uvloop()

    data = json.dumps({"message_id": "msg_01JD7Y3ZQ4Q6W8W9ZKX0R2N5TB", "thread_id": "thread_01JD7Y3ZPZ6J7",
                       "created_at": 1732170000, "role": "user",
                       "content": [{"type": "text", "text": {"value": CONTENT, "annotations": []}}],
                       "attachments": [], "metadata": {}})
    meta = json.dumps({"request_id": "4f9b2c7e0d3a4e1b9c8d7e6f5a4b3c2d", "project": "default",
                       "api_key_id": "key_01JD7Y3ZQ0000000000000000",
                       "trace_id": "0af7651916cd43dd8448eb211c80319c", "causation": "create_message"})
    sql = (f"INSERT INTO {RAW_SCHEMA}.events (stream, version, type, data, metadata) "
           f"VALUES ($1, $2, $3, $4::jsonb, $5::jsonb)")

    async def no_reset(conn) -> None:   # as Threadline's pool: skip asyncpg's reset round trip
        pass

    async def main() -> dict:
        setup = await asyncpg.connect(args.dsn)
        try:
            await setup.execute(RAW_DDL)
        finally:
            await setup.close()
        pool = await asyncpg.create_pool(args.dsn, min_size=args.pool_size, max_size=args.pool_size,
                                         reset=no_reset)
        state = {"measuring": False, "stop": False}
        latencies: list[float] = []
        errors = 0
        clock = time.perf_counter

        async def worker(i: int) -> None:
            nonlocal errors
            stream, version = f"thread-bench-{i}", 0
            while not state["stop"]:
                version += 1
                t0 = clock()
                try:
                    await pool.execute(sql, stream, version, "MessageCreated", data, meta)
                except Exception:  # noqa: BLE001 - counted and reported; any error invalidates the run
                    errors += 1
                    continue
                if state["measuring"]:
                    latencies.append(clock() - t0)

        tasks = [asyncio.create_task(worker(i)) for i in range(args.concurrency)]
        await asyncio.sleep(args.warmup)
        latencies.clear()
        errors = 0
        state["measuring"] = True
        t_start = clock()
        await asyncio.sleep(args.seconds)
        state["measuring"] = False
        elapsed = clock() - t_start
        done = len(latencies)
        state["stop"] = True
        await asyncio.gather(*tasks)
        async with pool.acquire() as conn:
            rows = await conn.fetchval(f"SELECT count(*) FROM {RAW_SCHEMA}.events")
            await conn.execute(f"DROP SCHEMA {RAW_SCHEMA} CASCADE")
        await pool.close()
        latencies.sort()
        return {"requests": done, "seconds": elapsed, "rate": done / elapsed,
                "p50_ms": _pct(latencies, 50) * 1000, "p90_ms": _pct(latencies, 90) * 1000,
                "p99_ms": _pct(latencies, 99) * 1000, "max_ms": latencies[-1] * 1000 if latencies else 0.0,
                "errors": errors, "rows_in_table": rows, "loop": loop_kind}

    print("BENCHJSON " + json.dumps(asyncio.run(main())), flush=True)


def child_pyload(argv: list[str]) -> None:
    """Fallback load generator (only when wrk is unusable): aiohttp client, one process, uvloop."""
    import asyncio

    import aiohttp

    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--key", default="")
    p.add_argument("--ids", required=True, help="file with one thread id per line")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--connections", type=int, required=True)
    args = p.parse_args(argv)
    _install_uvloop()
    ids = Path(args.ids).read_text().split()
    headers = {"Content-Type": "application/json"}
    if args.key:
        headers["Authorization"] = f"Bearer {args.key}"
    body = BODY.encode()

    async def main() -> dict:
        latencies: list[float] = []
        non200, errors, first_bad = 0, 0, None
        counter = 0
        deadline = time.perf_counter() + args.seconds
        conn = aiohttp.TCPConnector(limit=args.connections)
        async with aiohttp.ClientSession(args.base, connector=conn, headers=headers) as session:
            async def worker() -> None:
                nonlocal counter, non200, errors, first_bad
                while (t0 := time.perf_counter()) < deadline:
                    counter += 1
                    tid = ids[counter % len(ids)]
                    try:
                        async with session.post(f"/v1/threads/{tid}/messages", data=body) as r:
                            text = await r.read()
                            if r.status != 200:
                                non200 += 1
                                first_bad = first_bad or f"{r.status} {text[:200]!r}"
                    except Exception as exc:  # noqa: BLE001
                        errors += 1
                        first_bad = first_bad or repr(exc)
                        continue
                    latencies.append(time.perf_counter() - t0)
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(args.connections)))
            elapsed = time.perf_counter() - started
        latencies.sort()
        return {"requests": len(latencies), "seconds": elapsed, "rate": len(latencies) / elapsed,
                "p50_ms": _pct(latencies, 50) * 1000, "p90_ms": _pct(latencies, 90) * 1000,
                "p99_ms": _pct(latencies, 99) * 1000, "max_ms": latencies[-1] * 1000 if latencies else 0.0,
                "non200": non200, "socket_errors": errors, "first_bad": first_bad}

    print("BENCHJSON " + json.dumps(asyncio.run(main())), flush=True)


# ================================================================================================
# The orchestrator
# ================================================================================================

LUA = r"""
-- Generated by ops/bench/appends.py: rotate over the thread ids, count non-200 responses.
local ids = {%(ids)s}
local n = #ids
local i = math.random(n)
local body = %(body)s
local headers = {["Content-Type"] = "application/json"%(auth)s}
non200 = 0
first_bad = ""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return wrk.format("POST", "/v1/threads/" .. ids[i] .. "/messages", headers, body)
end

function response(status, hdrs, resp_body)
  if status ~= 200 then
    non200 = non200 + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(resp_body or "", 1, 200) end
  end
end

function done(summary, latency, requests)
  local bad, first = 0, ""
  for _, t in ipairs(threads) do
    bad = bad + t:get("non200")
    local f = t:get("first_bad")
    if first == "" and f ~= nil then first = f end
  end
  local e = summary.errors
  first = string.gsub(first, '[%%c"\\]', " ")
  io.write(string.format(
    'BENCHJSON {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d,' ..
    '"non200":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d,"first_bad":"%%s"}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, bad, e.connect, e.read, e.write, e.status, e.timeout, first))
end
"""


class AppendsBench(Bench):
    """The phases of this benchmark: (a) plain aiohttp, Threadline, (b) raw INSERTs."""

    def ensure_wrk(self) -> None:
        if self.loadgen != "wrk":
            return
        if shutil.which("wrk") is None and shutil.which("apt-get") is not None and os.geteuid() == 0:
            self.log("wrk is missing: apt-get install -y wrk")
            cmd = "apt-get install -y -q wrk || (apt-get update -q && apt-get install -y -q wrk)"
            subprocess.run(["sh", "-c", cmd], stdout=subprocess.DEVNULL, check=False)
        if shutil.which("wrk") is None:
            self.loadgen = "python"
            self.notes.append("wrk was unusable: load came from the lean Python generator "
                              "(aiohttp client in its own process), which costs the server more CPU.")
            self.log("wrk unusable; falling back to the Python load generator")

    def load(self, base: str, ids: list[str], key: str, seconds: float, watch: dict | None = None
             ) -> tuple[dict, dict | None]:
        """Drive POST /v1/threads/{id}/messages for `seconds`; returns (result, cpu use)."""
        c = self.args.connections
        if self.loadgen == "wrk":
            script = self.tmp / "appends.lua"
            script.write_text(LUA % {
                "ids": ", ".join(json.dumps(i) for i in ids),
                "body": json.dumps(BODY),
                "auth": f', ["Authorization"] = "Bearer {key}"' if key else ""})
            cmd = ["wrk", f"-t{self.args.wrk_threads}", f"-c{c}", f"-d{seconds:g}s", "--timeout", "5s",
                   "-s", str(script), base + "/"]
        else:
            idfile = self.tmp / "ids.txt"
            idfile.write_text("\n".join(ids))
            cmd = [PYTHON, str(Path(__file__).resolve()), "_pyload", "--base", base, "--key", key,
                   "--ids", str(idfile), "--seconds", str(seconds), "--connections", str(c)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        groups = None
        before = None
        if watch is not None:
            groups = dict(watch, loadgen=[proc.pid])
            before = self.cpu_snapshot(groups)
        profiler = None
        if watch is not None and self.args.profile and "server" in watch:
            profiler = subprocess.Popen(
                [self.args.py_spy, "record", "-p", str(watch["server"][0]), "-r", "100", "-d", f"{seconds:g}",
                 "-f", "raw", "-o", str(self.args.profile), *self.args.py_spy_args.split()],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Sample CPU just before wrk finishes (its children may be reaped after).
        cpu = None
        if before is not None:
            try:
                proc.wait(max(0.5, seconds - 0.5))
            except subprocess.TimeoutExpired:
                pass
            cpu = self.cpu_delta(before, groups)
        stdout, stderr = proc.communicate(timeout=seconds + 120)
        if profiler is not None:
            profiler.wait(60)
        line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
        if proc.returncode != 0 or line is None:
            raise SystemExit(f"load generator failed ({proc.returncode}):\n{stdout}\n{stderr}")
        raw = json.loads(line[len("BENCHJSON "):])
        if self.loadgen == "wrk":
            sock = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
            return {"requests": raw["requests"], "seconds": raw["duration_us"] / 1e6,
                    "rate": raw["requests"] / (raw["duration_us"] / 1e6),
                    "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000,
                    "p99_ms": raw["p99_us"] / 1000, "max_ms": raw["max_us"] / 1000,
                    "non200": raw["non200"], "socket_errors": sock,
                    "first_bad": raw["first_bad"] or None}, cpu
        return raw, cpu

    def phase_plain(self) -> dict:
        port = self.free_port()
        base = f"http://127.0.0.1:{port}"
        proc = self.spawn([PYTHON, str(Path(__file__).resolve()), "_plain_server", "--port", str(port)], "plain")
        try:
            self.wait_healthy(proc, base, "plain")
            ids = [f"thread_plain{i:03d}" for i in range(self.args.threads)]

            def attempt() -> dict:
                self.wait_quiet("(a) plain aiohttp")
                self.log(f"(a) plain aiohttp: warm-up {self.args.warmup:g} s")
                self.check(self.load(base, ids, "", self.args.warmup)[0], "(a) warm-up")
                self.log(f"(a) plain aiohttp: measuring {self.args.seconds:g} s")
                res, cpu = self.load(base, ids, "", self.args.seconds, watch={"server": [proc.pid]})
                res["cpu"] = cpu
                return res
            return self.least_noisy(attempt, "(a) plain aiohttp")
        finally:
            self.stop(proc)

    def phase_threadline(self) -> dict:
        proc, base, key = self.start_threadline()
        try:
            self.log(f"Threadline: creating {self.args.threads} threads")
            ids = [self.http_json("POST", base + "/v1/threads", key)["id"] for _ in range(self.args.threads)]
            before_count = self.db_fetchval("SELECT count(*) FROM messages WHERE thread_id = ANY($1::text[])", ids)
            answered, loads = 0, 0

            def attempt() -> dict:
                nonlocal answered, loads
                self.wait_quiet("Threadline")
                self.log(f"Threadline: warm-up {self.args.warmup:g} s")
                warm = self.load(base, ids, key, self.args.warmup)[0]
                self.check(warm, "Threadline warm-up")
                self.log(f"Threadline: measuring {self.args.seconds:g} s")
                p0 = self.db_fetchval("SELECT coalesce(max(position), 0) FROM events")
                res, cpu = self.load(base, ids, key, self.args.seconds,
                                     watch={"server": [proc.pid], "postgres": "postgres"})
                res["cpu"] = cpu
                answered += warm["requests"] + res["requests"]
                loads += 2
                time.sleep(0.5)   # let requests cut off by the load generator's stop finish committing
                # How well group commit batched: appends per transaction during the window.
                res["batch"] = dict(self.db_fetchrow(
                    """SELECT count(*) AS commits, round(avg(n), 1)::float AS mean,
                              percentile_disc(0.5) WITHIN GROUP (ORDER BY n) AS p50, max(n) AS max
                       FROM (SELECT xid, count(*) AS n FROM events
                             WHERE position > $1 AND type = 'MessageCreated' GROUP BY xid) per_commit""", p0))
                return res

            res = self.least_noisy(attempt, "Threadline")
            stored = self.db_fetchval("SELECT count(*) FROM messages WHERE thread_id = ANY($1::text[])", ids) \
                - before_count
            res["stored"], res["answered"] = stored, answered
            # Requests in flight when a load generator run stopped may commit without being counted.
            if not answered <= stored <= answered + loads * self.args.connections:
                res["integrity"] = f"stored {stored} messages for {answered} answered appends"
            return res
        finally:
            self.stop(proc)

    def phase_raw(self) -> dict:
        return self.least_noisy(self.raw_attempt, "(b) raw INSERTs")

    def raw_attempt(self) -> dict:
        self.wait_quiet("(b) raw INSERTs")
        self.log(f"(b) raw INSERTs: warm-up {self.args.warmup:g} s, measuring {self.args.seconds:g} s")
        cmd = [PYTHON, str(Path(__file__).resolve()), "_raw_inserts", "--dsn", self.dsn,
               "--seconds", str(self.args.seconds), "--warmup", str(self.args.warmup),
               "--concurrency", str(self.args.connections), "--pool-size", str(self.args.raw_pool_size)]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(self.args.warmup + 1.0)
        groups = {"driver": [proc.pid], "postgres": "postgres"}
        before = self.cpu_snapshot(groups)
        time.sleep(max(0.5, self.args.seconds - 1.5))
        cpu = self.cpu_delta(before, groups)
        stdout, stderr = proc.communicate(timeout=self.args.seconds + 120)
        line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
        if proc.returncode != 0 or line is None:
            raise SystemExit(f"raw INSERT driver failed ({proc.returncode}):\n{stdout}\n{stderr}")
        res = json.loads(line[len("BENCHJSON "):])
        res["cpu"] = cpu
        res["non200"], res["socket_errors"] = 0, res.pop("errors")
        return res

    def check(self, res: dict, what: str) -> list[str]:
        problems = []
        if res.get("non200"):
            problems.append(f"{what}: {res['non200']} non-200 responses (first: {res.get('first_bad')})")
        if res.get("socket_errors"):
            problems.append(f"{what}: {res['socket_errors']} socket errors/timeouts ({res.get('first_bad')})")
        if res.get("integrity"):
            problems.append(f"{what}: {res['integrity']}")
        if not res.get("requests"):
            problems.append(f"{what}: no request completed")
        for p in problems:
            self.log("ERROR " + p)
        self.errors.extend(problems)
        return problems

    def run(self) -> int:
        self.errors: list[str] = []
        self.ensure_wrk()
        try:
            plain = self.phase_plain()
            self.check(plain, "(a) plain aiohttp")
            tl = self.phase_threadline()
            self.check(tl, "Threadline")
            pg = self.pg_facts()
            raw = self.phase_raw()
            self.check(raw, "(b) raw INSERTs")
        finally:
            self.cleanup()
        report = self.report(plain, tl, raw, pg)
        print(report["text"])
        if self.errors:
            print("\nINVALID RUN: " + "; ".join(self.errors))
            print("RESULTS.md was not updated.")
            return 1
        if self.args.env:
            print(f"\nExperiment (Threadline env: {' '.join(self.args.env)}): RESULTS.md was not updated.")
        elif self.args.profile:
            print(f"\nProfiled run (py-spy attached to the server): figures are perturbed; "
                  f"RESULTS.md was not updated. Profile: {self.args.profile}")
        elif not self.args.no_write:
            self.write_results(report)
            print(f"\nWrote {RESULTS.relative_to(ROOT)}")
        return 0

    def report(self, plain: dict, tl: dict, raw: dict, pg: dict) -> dict:
        r_plain = tl["rate"] / plain["rate"]
        r_raw = tl["rate"] / raw["rate"]
        met = {"plain": r_plain >= TARGET_VS_PLAIN, "raw": r_raw >= TARGET_VS_RAW,
               "p99": tl["p99_ms"] <= TARGET_P99_MS}
        m = self.machine()
        rows = [
            ("Threadline appends/s", f"{tl['rate']:,.0f}", f"(a) plain aiohttp {plain['rate']:,.0f} req/s",
             f"{r_plain:.2f}", f"≥ {TARGET_VS_PLAIN:.2f}", met["plain"]),
            ("Threadline appends/s", f"{tl['rate']:,.0f}", f"(b) raw INSERT {raw['rate']:,.0f} rows/s",
             f"{r_raw:.2f}", f"≥ {TARGET_VS_RAW:.2f}", met["raw"]),
            ("Threadline p99 latency", f"{tl['p99_ms']:.1f} ms", f"(a) {plain['p99_ms']:.1f} ms, (b) {raw['p99_ms']:.1f} ms",
             "—", f"≤ {TARGET_P99_MS:g} ms", met["p99"]),
            ("Threadline p50 latency", f"{tl['p50_ms']:.1f} ms", f"(a) {plain['p50_ms']:.1f} ms, (b) {raw['p50_ms']:.1f} ms",
             "—", "—", None),
        ]
        head = "| figure | value | baseline | ratio | target | met? |\n|---|---|---|---|---|---|\n"
        table = head + "".join(f"| {a} | {b} | {c} | {d} | {e} | {'—' if f is None else ('yes' if f else 'NO')} |\n"
                               for a, b, c, d, e, f in rows)

        def cpu(res: dict) -> str:
            return ", ".join(f"{k} {v}%" for k, v in (res.get("cpu") or {}).items())

        detail = (
            "| phase | rate /s | p50 ms | p90 ms | p99 ms | max ms | requests | non-200 | socket errors | CPU (% of one core) |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n"
            + "".join(
                f"| {name} | {res['rate']:,.0f} | {res['p50_ms']:.2f} | {res.get('p90_ms', float('nan')):.2f} | "
                f"{res['p99_ms']:.2f} | {res.get('max_ms', float('nan')):.1f} | {res['requests']:,} | "
                f"{res.get('non200', 0)} | {res.get('socket_errors', 0)} | {cpu(res)} |\n"
                for name, res in (("(a) plain aiohttp", plain), ("Threadline", tl), ("(b) raw INSERT", raw))))
        a = self.args
        b = tl.get("batch") or {}
        setup = (
            f"- Load: {a.connections} concurrent connections, {a.threads} pre-created threads (requests rotate over "
            f"them), body `{BODY}`; {a.warmup:g} s warm-up then {a.seconds:g} s measured per phase.\n"
            f"- Load generator: {'wrk -t%d -c%d (Lua script: rotation, non-200 count, p50/p99 from its histogram)' % (a.wrk_threads, a.connections) if self.loadgen == 'wrk' else 'Python aiohttp client in its own process (--loadgen python, or wrk unusable)'}.\n"
            f"- (a) one-process aiohttp + uvloop handler: `msgspec.json.decode` the body, answer a ~100-byte JSON.\n"
            f"- (b) one asyncpg + {raw.get('loop', 'uvloop')} process, {a.connections} tasks on a pool of "
            f"{a.raw_pool_size} (no reset round trip, as Threadline's pool), single-row INSERT into a copy of `events`.\n"
            f"- Threadline: `python -m service serve`, default configuration (pool {os.environ.get('THREADLINE_DB_POOL_SIZE', '16')}; "
            f"its log goes to a file{'; extra env: ' + ' '.join(a.env) if a.env else ''}), {'$DATABASE_URL' if os.environ.get('DATABASE_URL') else 'fresh embedded PostgreSQL'}: "
            f"PostgreSQL {pg['version']}, synchronous_commit={pg['synchronous_commit']}, fsync={pg['fsync']}, "
            f"shared_buffers={pg['shared_buffers']}.\n"
            f"- Integrity: {tl.get('stored', '?'):,} messages stored for {tl.get('answered', '?'):,} answered appends "
            f"(the difference is requests cut off in flight when the load generator stopped).\n"
            f"- Group commit in Threadline's window: {b.get('commits', 0):,} transactions, {b.get('mean', 0)} appends per "
            f"transaction on average (median {b.get('p50', 0)}, max {b.get('max', 0)}).\n"
            f"- CPU column: CPU used during the measured window, in % of one core: each process group, `irq` "
            f"(softirqs: mostly the loopback TCP traffic), `other` (anything else on this shared machine: noise), "
            f"`steal` (taken by the hypervisor), `machine` (all of it; max {100 * (os.cpu_count() or 1)}%). A phase whose "
            f"window had `other` + `steal` > {a.max_other:g}% is measured again (≤ {a.attempts} windows) and the quietest window is kept; "
            f"windows used: (a) {plain.get('attempts', 1)}, Threadline {tl.get('attempts', 1)}, (b) {raw.get('attempts', 1)}.\n")
        setup += self.notes_text()
        machine = self.machine_line(m)
        text = ("\n" + table + "\n" + detail + "\n" + setup + "\n" + machine + "\n"
                + f"\nRatios: Threadline/(a) = {r_plain:.2f} (target ≥ {TARGET_VS_PLAIN:.2f}), "
                  f"Threadline/(b) = {r_raw:.2f} (target ≥ {TARGET_VS_RAW:.2f}), "
                  f"p99 = {tl['p99_ms']:.1f} ms (target ≤ {TARGET_P99_MS:g} ms)")
        history = self.history_row(m, f"{tl['rate']:,.0f} | {tl['p50_ms']:.1f} | {tl['p99_ms']:.1f} | "
                                      f"{plain['rate']:,.0f} | {raw['rate']:,.0f} | {r_plain:.2f} | {r_raw:.2f} | "
                                      f"{a.seconds:g} s")
        return {"table": table, "detail": detail, "setup": setup, "machine": machine, "text": text,
                "history": history}

    def write_results(self, report: dict) -> None:
        write_report(
            "appends", "Message appends (`ops/bench/appends.py`)",
            "`POST /v1/threads/{id}/messages` through the HTTP API against two baselines measured back to back "
            "in the same run on the same machine.",
            f".venv/bin/python ops/bench/appends.py --seconds {self.args.seconds:g}", report,
            ["date", "code", "machine", "appends/s", "p50 ms", "p99 ms", "(a) req/s", "(b) rows/s", "÷(a)", "÷(b)",
             "window"], per="Per phase",
            noise="The machine is shared and noisy (10–20% run to run): compare the ratios, not absolute figures "
                  "from different runs.")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        mode, rest = sys.argv[1], sys.argv[2:]
        {"_plain_server": child_plain_server, "_raw_inserts": child_raw_inserts,
         "_pyload": child_pyload}[mode](rest)
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=15, help="measured window per phase (default 15)")
    p.add_argument("--warmup", type=float, default=5, help="warm-up per phase (default 5)")
    p.add_argument("--connections", type=int, default=64, help="concurrent clients / tasks (default 64)")
    p.add_argument("--threads", type=int, default=100, help="threads the appends rotate over (default 100)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1: leaves CPU to the server)")
    p.add_argument("--raw-pool-size", type=int, default=int(os.environ.get("THREADLINE_DB_POOL_SIZE", "16")),
                   help="pool size for baseline (b) (default: Threadline's pool size, 16)")
    p.add_argument("--loadgen", choices=("wrk", "python"), default="wrk")
    bench_options(p, quiet_timeout=120)
    args = parse_bench_args(p)
    return AppendsBench(args).run()


if __name__ == "__main__":
    sys.exit(main())
