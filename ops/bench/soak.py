#!/usr/bin/env python3
"""Soak: a mixed workload for a long while — no errors, no unbounded memory growth.

    .venv/bin/python ops/bench/soak.py [--seconds 600] [--warmup 30] [--workers 16]

`python -m service serve` runs as a subprocess on a fresh embedded PostgreSQL (started exactly as
ops/bench/appends.py starts it). Workers loop over a weighted mix of what clients do:

  create thread (with a first message; the oldest thread is deleted once --threads are live),
  append a message, list pages (a thread's messages, the project's threads), a polled run
  (create → GET until done), a streaming run (`"stream": true`, read to `done`), and a tool-call
  run (`builtin/script`: requires_action → submit_tool_outputs → completed).

A worker takes a thread no other worker is using (a thread with an active run refuses new
messages and runs, by design). Every operation is timed; an error is any non-200 answer, a run
that ends other than `completed`, a stream without `thread.run.completed` then `done`, or a
timeout. The service's resident memory (VmRSS) is sampled every 2 s.

Verdict: no errors, and memory flat: the median RSS of the last fifth of the measured window is
at most 5% (or 16 MiB, whichever is larger) above the median of its middle fifth. Writes the
`soak` section of ops/bench/RESULTS.md (unless --no-write).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
from harness import Bench, _install_uvloop, _pct  # noqa: E402
from results import HISTORY, earlier_rows, write_section  # noqa: E402

MIX = {"create_thread": 8, "append": 40, "list": 20, "polled_run": 12, "streamed_run": 12, "tool_run": 8}
TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete"}
TOOL_SCRIPT = {"turns": [{"tool_calls": [{"name": "lookup", "arguments": {"q": "soak"}}]},
                         {"text": "Found it: the answer is forty-two."}]}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {
    "q": {"type": "string"}}}}}]


class Soak:
    def __init__(self, args: argparse.Namespace, base: str, key: str):
        self.args, self.base = args, base
        self.headers = {"Authorization": f"Bearer {key}"}
        self.latencies: dict[str, list[float]] = {name: [] for name in MIX}
        self.errors: dict[str, int] = {name: 0 for name in MIX}
        self.first_errors: list[str] = []
        self.free: list[str] = []          # threads no worker holds
        self.live: list[str] = []          # creation order, oldest first
        self.measuring = False
        self.http = None

    async def call(self, method: str, path: str, body: dict | None = None) -> dict:
        async with self.http.request(method, f"{self.base}/v1{path}", json=body, headers=self.headers) as r:
            answer = await r.json()
            if r.status != 200:
                raise RuntimeError(f"{method} {path} -> {r.status} {str(answer)[:200]}")
            return answer

    async def setup(self) -> None:
        self.echo = (await self.call("POST", "/assistants", {"model": "builtin/echo"}))["id"]
        script = Path(self.args.tmp) / "tool-script.json"
        script.write_text(json.dumps(TOOL_SCRIPT))
        self.tool = (await self.call("POST", "/assistants", {"model": f"builtin/script:{script}",
                                                              "tools": TOOLS}))["id"]
        for _ in range(self.args.threads):
            await self.create_thread()

    # -- operations ------------------------------------------------------------------------------

    async def create_thread(self) -> None:
        thread = await self.call("POST", "/threads", {"messages": [{"role": "user", "content": "Hello, soak."}]})
        self.live.append(thread["id"])
        self.free.append(thread["id"])
        if len(self.live) > self.args.threads:
            for old in self.live:
                if old in self.free:      # only a thread nobody is using
                    self.free.remove(old)
                    self.live.remove(old)
                    await self.call("DELETE", f"/threads/{old}")
                    break

    async def append(self, thread_id: str) -> None:
        await self.call("POST", f"/threads/{thread_id}/messages",
                        {"role": "user", "content": f"Soak message {random.randrange(10**6)}: the quick brown fox."})

    async def list(self, thread_id: str) -> None:
        await self.call("GET", f"/threads/{thread_id}/messages?limit=20")
        await self.call("GET", "/threads?limit=20")

    async def wait_run(self, thread_id: str, run_id: str, until: set[str]) -> dict:
        deadline = time.monotonic() + self.args.run_timeout
        while True:
            run = await self.call("GET", f"/threads/{thread_id}/runs/{run_id}")
            if run["status"] in until:
                return run
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {run_id} still {run['status']} after {self.args.run_timeout} s")
            await asyncio.sleep(0.02)     # a client polling, as create_and_poll does

    async def polled_run(self, thread_id: str) -> None:
        await self.append(thread_id)
        run = await self.call("POST", f"/threads/{thread_id}/runs", {"assistant_id": self.echo})
        run = await self.wait_run(thread_id, run["id"], TERMINAL)
        if run["status"] != "completed":
            raise RuntimeError(f"polled run ended {run['status']}: {run.get('last_error')}")

    async def streamed_run(self, thread_id: str) -> None:
        await self.append(thread_id)
        events = []
        async with self.http.post(f"{self.base}/v1/threads/{thread_id}/runs", headers=self.headers,
                                  json={"assistant_id": self.echo, "stream": True}) as r:
            if r.status != 200:
                raise RuntimeError(f"stream -> {r.status}")
            async for line in r.content:
                if line.startswith(b"event: "):
                    events.append(line[7:].strip().decode())
        if events[-2:] != ["thread.run.completed", "done"]:
            raise RuntimeError(f"stream ended with {events[-3:]}")

    async def tool_run(self, thread_id: str) -> None:
        await self.append(thread_id)
        run = await self.call("POST", f"/threads/{thread_id}/runs", {"assistant_id": self.tool})
        run = await self.wait_run(thread_id, run["id"], TERMINAL | {"requires_action"})
        if run["status"] != "requires_action":
            raise RuntimeError(f"tool run ended {run['status']}: {run.get('last_error')}")
        calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]
        await self.call("POST", f"/threads/{thread_id}/runs/{run['id']}/submit_tool_outputs",
                        {"tool_outputs": [{"tool_call_id": c["id"], "output": "42"} for c in calls]})
        run = await self.wait_run(thread_id, run["id"], TERMINAL)
        if run["status"] != "completed":
            raise RuntimeError(f"tool run ended {run['status']}: {run.get('last_error')}")

    # -- the workers -------------------------------------------------------------------------------

    async def worker(self, stop_at: float) -> None:
        names, weights = list(MIX), list(MIX.values())
        while time.monotonic() < stop_at:
            name = random.choices(names, weights)[0]
            thread_id = None
            if name != "create_thread":
                if not self.free:
                    await asyncio.sleep(0.005)     # every thread busy: let another worker finish
                    continue
                thread_id = self.free.pop(random.randrange(len(self.free)))
            started = time.perf_counter()
            try:
                if thread_id is None:
                    await self.create_thread()
                else:
                    await getattr(self, name)(thread_id)
                if self.measuring:
                    self.latencies[name].append((time.perf_counter() - started) * 1000)
            except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                if self.measuring:
                    self.errors[name] += 1
                    if len(self.first_errors) < 10:
                        self.first_errors.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
            finally:
                if thread_id is not None and thread_id in self.live:
                    self.free.append(thread_id)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def drive(args: argparse.Namespace, bench: Bench, pid: int, base: str, key: str) -> dict:
    import aiohttp
    soak = Soak(args, base, key)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=args.run_timeout + 10)) as http:
        soak.http = http
        await soak.setup()
        begin = time.monotonic()
        stop_at = begin + args.warmup + args.seconds
        workers = [asyncio.create_task(soak.worker(stop_at)) for _ in range(args.workers)]
        samples: list[tuple[float, float]] = []
        await asyncio.sleep(args.warmup)
        soak.measuring = True
        measured_from = time.monotonic()
        cpu_before = bench.cpu_snapshot({"server": [pid], "postgres": "postgres"})
        while time.monotonic() < stop_at:
            samples.append((time.monotonic() - measured_from, rss_mib(pid)))
            bench.log(f"soak: {samples[-1][0]:.0f} s, RSS {samples[-1][1]:.1f} MiB, "
                      f"ops {sum(len(v) for v in soak.latencies.values())}, errors {sum(soak.errors.values())}")
            await asyncio.sleep(2.0)
        await asyncio.gather(*workers)
        elapsed = time.monotonic() - measured_from
        cpu = bench.cpu_delta(cpu_before, {"server": [pid], "postgres": "postgres"})
    return {"soak": soak, "samples": samples, "elapsed": elapsed, "cpu": cpu}


def verdict(samples: list[tuple[float, float]]) -> tuple[float, float, bool]:
    """(median RSS of the middle fifth, of the last fifth, flat?)"""
    rss = [m for _, m in samples]
    n = len(rss)
    middle = statistics.median(rss[2 * n // 5: max(2 * n // 5 + 1, 3 * n // 5)])
    last = statistics.median(rss[4 * n // 5:])
    return middle, last, last <= middle + max(0.05 * middle, 16.0)


def report(args, result: dict, machine: dict) -> tuple[str, bool]:
    soak, samples, elapsed = result["soak"], result["samples"], result["elapsed"]
    errors = sum(soak.errors.values())
    middle, last, flat = verdict(samples)
    rows = []
    for name in MIX:
        lat = sorted(soak.latencies[name])
        rows.append(f"| {name.replace('_', ' ')} | {len(lat):,} | {len(lat) / elapsed:.1f} | {_pct(lat, 50):.1f} | "
                    f"{_pct(lat, 99):.1f} | {soak.errors[name]} |")
    total = sum(len(v) for v in soak.latencies.values())
    ok = errors == 0 and flat
    cpu = ", ".join(f"{k} {v:.0f}%" for k, v in result["cpu"].items() if isinstance(v, (int, float)))
    history = earlier_rows("soak") + (
        f"| {machine['date']} | {machine['code']} | {elapsed:.0f} s | {total / elapsed:.1f} | {errors} | "
        f"{samples[0][1]:.0f} → {samples[-1][1]:.0f} MiB | {'yes' if ok else 'NO'} |\n")
    body = f"""## Soak (`ops/bench/soak.py`)

A mixed workload for {elapsed:.0f} s after a {args.warmup:.0f} s warm-up, {args.workers} concurrent clients over
{args.threads} live threads (new ones created, the oldest deleted). Reproduce with
`.venv/bin/python ops/bench/soak.py --seconds {args.seconds:.0f}`.

| figure | value | target | met? |
|---|---|---|---|
| operations/s (all kinds) | {total / elapsed:.1f} | — | — |
| errors | {errors} | 0 | {'yes' if errors == 0 else 'NO'} |
| service RSS, middle fifth → last fifth (median) | {middle:.1f} → {last:.1f} MiB | growth ≤ max(5%, 16 MiB) | {'yes' if flat else 'NO'} |

| operation | count | per s | p50 ms | p99 ms | errors |
|---|---|---|---|---|---|
{chr(10).join(rows)}

- Operations: create thread (with a first message; deleting the oldest beyond {args.threads}), append a
  message, list (a thread's messages page + the threads page), polled run (append, create, poll GET every
  20 ms), streamed run (append, `"stream": true` read to `done`), tool run (append, `builtin/script`
  tool call, requires_action, submit_tool_outputs, poll to completed). Runs use the zero-latency
  `builtin/echo`/`builtin/script`, so the service is what is measured. Latency is per operation, end to end.
- Service RSS: first sample {samples[0][1]:.1f} MiB, max {max(m for _, m in samples):.1f} MiB, last {samples[-1][1]:.1f} MiB
  ({len(samples)} samples every 2 s). CPU (% of one core over the window): {cpu}.
{"- First errors: " + "; ".join(soak.first_errors) if soak.first_errors else ""}

Machine: {machine['nproc']} CPUs ({machine['cpu']}), Linux {machine['kernel']}, Python {machine['python']}; {machine['date']}; code: {machine['code']}.

### History

{HISTORY}
| date | code | window | ops/s | errors | RSS | met? |
|---|---|---|---|---|---|---|
{history}"""
    return body, ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600, help="measured window (default 600)")
    p.add_argument("--warmup", type=float, default=30, help="warm-up before measuring (default 30)")
    p.add_argument("--workers", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--threads", type=int, default=200, help="live threads (default 200)")
    p.add_argument("--run-timeout", type=float, default=30, help="a run not done by then is an error")
    p.add_argument("--quiet-percent", type=float, default=15)
    p.add_argument("--quiet-timeout", type=float, default=60)
    p.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    p.add_argument("--keep", action="store_true", help="keep the temp directory (logs, pgdata)")
    args = p.parse_args()
    args.env, args.loadgen = [], "python"
    _install_uvloop()
    bench = Bench(args)
    args.tmp = str(bench.tmp)
    try:
        bench.wait_quiet("soak")
        proc, base, key = bench.start_threadline()
        result = asyncio.run(drive(args, bench, proc.pid, base, key))
        body, ok = report(args, result, bench.machine())
    finally:
        bench.cleanup()
    print(body)
    if not args.no_write:
        write_section("soak", body)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
