#!/usr/bin/env python3
"""Polling benchmark: how long the openai SDK's `runs.create_and_poll` takes for a trivial run,
against the run's own service time, measured in the same run.

    .venv/bin/python ops/bench/polling.py [--runs 100] [--slow-runs 5]

`python -m service serve` runs as a subprocess on a fresh embedded PostgreSQL (started as
ops/bench/appends.py starts it). One client, one run at a time, on the zero-latency model
`builtin/echo`:

  (1) `create_and_poll` as an SDK user calls it: the server steers the poller (its one poll is
      answered when the run ends).
  (2) the same on a server started with THREADLINE_POLL_WAIT_SECONDS=0: polls are answered at once,
      and only the `openai-poll-after-ms` header paces the poller.
  (3) the same with `poll_interval_ms=1000` on that server: the SDK's pace when a server sends no
      header (what every SDK user got before): a few runs only, each costs a second or more.

The service time of a run is read from the log: `recorded_at` of its RunCompleted event minus that
of its RunCreated event. Target: median wall time of (1) ≤ 3× the median service time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from harness import Bench, client_bench  # noqa: E402
from results import write_section  # noqa: E402

TARGET_RATIO = 3.0


def service_ms(bench: Bench, run_ids: list[str]) -> dict[str, float]:
    rows = bench.db_fetch_all(
        """SELECT data->>'run_id', max(recorded_at) FILTER (WHERE type = 'RunCompleted')
                  - min(recorded_at) FILTER (WHERE type = 'RunCreated')
           FROM events WHERE type IN ('RunCreated', 'RunCompleted') AND data->>'run_id' = ANY($1::text[])
           GROUP BY 1""", run_ids)
    return {r[0]: r[1].total_seconds() * 1000 for r in rows if r[1] is not None}


def measure(client, assistant_id: str, count: int, **poll) -> list[tuple[str, float]]:
    out = []
    for _ in range(count):
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "ping"}])
        started = time.perf_counter()
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id, **poll)
        wall = (time.perf_counter() - started) * 1000
        if run.status != "completed":
            raise SystemExit(f"run {run.id} ended {run.status}")
        out.append((run.id, wall))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=100, help="runs polled the server's way (default 100)")
    p.add_argument("--slow-runs", type=int, default=5, help="runs polled every 1000 ms (default 5)")
    args, bench = client_bench(p)
    import openai

    try:
        proc, base, key = bench.start_threadline()
        with openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0) as client:
            assistant = client.beta.assistants.create(model="builtin/echo")
            measure(client, assistant.id, 10)                       # warm-up
            bench.wait_quiet("polling")
            steered = measure(client, assistant.id, args.runs)
        bench.stop(proc)
        os.environ["THREADLINE_POLL_WAIT_SECONDS"] = "0"
        proc, base, key = bench.start_threadline()
        with openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0) as client:
            assistant = client.beta.assistants.create(model="builtin/echo")     # the new key's project
            measure(client, assistant.id, 10)
            bench.wait_quiet("polling, header only")
            header = measure(client, assistant.id, args.runs)
            paced = measure(client, assistant.id, args.slow_runs, poll_interval_ms=1000)
        times = service_ms(bench, [r for r, _ in steered + header + paced])
    finally:
        bench.cleanup()
    wall = statistics.median(w for _, w in steered)
    service = statistics.median(times[r] for r, _ in steered)
    old_wall = statistics.median(w for _, w in paced)
    header_wall = statistics.median(w for _, w in header)
    ratio = wall / service
    met = "met" if ratio <= TARGET_RATIO else "**not met**"
    m = bench.machine()
    lines = [
        "## Polling: `create_and_poll` of a trivial run",
        "",
        f"{m['date']}, code {m['code']}, {m['nproc']} cores ({m['cpu']}), Python {m['python']}. One client, one run "
        f"at a time, model `builtin/echo`; service time = RunCompleted − RunCreated in the log.",
        "",
        "| | median | p90 | runs |",
        "|---|---|---|---|",
        f"| service time of the run | {service:.1f} ms | {_p90([times[r] for r, _ in steered]):.1f} ms | {len(steered)} |",
        f"| `create_and_poll`, server-steered polling | {wall:.1f} ms | {_p90([w for _, w in steered]):.1f} ms | "
        f"{len(steered)} |",
        f"| `create_and_poll`, polls answered at once, paced by `openai-poll-after-ms` | {header_wall:.1f} ms | "
        f"{_p90([w for _, w in header]):.1f} ms | {len(header)} |",
        f"| `create_and_poll`, `poll_interval_ms=1000` (an SDK's pace with no header) | {old_wall:.1f} ms | "
        f"{_p90([w for _, w in paced]):.1f} ms | {len(paced)} |",
        "",
        f"Wall ÷ service time: **{ratio:.2f}×** (target ≤ {TARGET_RATIO:g}× — {met}); the SDK's default pace "
        f"took {old_wall / service:.0f}× the run.",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_write and not args.env and not args.profile:
        write_section("polling", report)
    return 0 if ratio <= TARGET_RATIO else 1


def _p90(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.9))]


if __name__ == "__main__":
    sys.exit(main())
