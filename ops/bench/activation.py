"""Activation and listing cost of a 100,000-message thread, against same-run baselines.

  .venv/bin/python ops/bench/activation.py [--messages 100000] [--repeat 30]

Figures:
- activating a thread actor (snapshot + tail) vs replaying the whole stream (the baseline);
- listing a page (limit 20) at the start, middle and end of a 100,000-message thread vs the same
  page on a 10-message thread (the baseline).
Uses DATABASE_URL if set, else an embedded PostgreSQL in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from events.store import EventStore  # noqa: E402
from events.types import TextPart, TextValue  # noqa: E402
from projections import queries  # noqa: E402
from projections.projector import SERVICE_PROJECTIONS  # noqa: E402
from service import database  # noqa: E402
from service.actors import ActorRegistry, load_thread  # noqa: E402
from service.domain import thread  # noqa: E402
from service.domain.messages import NewMessage  # noqa: E402
from service.ids import new_id  # noqa: E402

PROJECT = "bench"


async def median_ms(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


async def make_thread(registry: ActorRegistry, n: int) -> tuple[str, list[str]]:
    tid = new_id("thread_")
    msgs = [NewMessage(message_id=new_id("msg_"), role="user", content=[TextPart(TextValue(f"message {i}"))])
            for i in range(n)]
    await registry.ask(tid, thread.CreateThread(project=PROJECT, at=1, messages=msgs))
    return tid, [m.message_id for m in msgs]


async def main(args) -> list[tuple[str, float, float, str]]:
    url = os.environ.get("DATABASE_URL")
    if not url:
        url = database.embedded_database_url(Path(tempfile.mkdtemp(prefix="tl-bench-")))
    pool = await database.connect(url, 4)
    await database.prepare(pool)
    store = EventStore(pool, SERVICE_PROJECTIONS)
    registry = ActorRegistry(store, pool)
    t0 = time.perf_counter()
    big, big_ids = await make_thread(registry, args.messages)
    print(f"wrote a {args.messages}-message thread in {time.perf_counter() - t0:.1f} s")
    small, small_ids = await make_thread(registry, 10)

    async def replay():
        state = thread.ThreadState(big)
        for r in await store.read_stream(f"thread-{big}"):
            state = thread.evolve(state, r.event)
        assert state.message_count == args.messages

    async def activate():
        state = await load_thread(store, big)
        assert state.message_count == args.messages

    rows = []
    full = await median_ms(replay, max(3, args.repeat // 10))
    snap = await median_ms(activate, args.repeat)
    rows.append(("activate 100k-message thread (ms)", snap, full, "snapshot vs full replay"))

    def page(tid, after=None):
        req = queries.PageRequest(limit=20, order="desc", after=after)
        return lambda: queries.list_messages(pool, PROJECT, tid, req)

    small_first = await median_ms(page(small), args.repeat * 10)
    for label, after in (("first", None), ("middle", big_ids[len(big_ids) // 2]), ("last", big_ids[25])):
        ms = await median_ms(page(big, after), args.repeat * 10)
        rows.append((f"list page ({label}) of 100k thread (ms)", ms, small_first, "vs first page of 10-message thread"))

    await registry.close()
    await store.close()
    await pool.close()
    return rows


def report(rows) -> str:
    out = ["| figure | value | baseline | ratio | baseline is |", "|---|---|---|---|---|"]
    for name, value, base, what in rows:
        out.append(f"| {name} | {value:.3f} | {base:.3f} | {value / base:.3g} | {what} |")
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=thread.MAX_MESSAGES)
    parser.add_argument("--repeat", type=int, default=30)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    table = report(asyncio.run(main(parser.parse_args())))
    print(table)
    import platform
    from results import write_section
    write_section("activation", f"""## Activation and deep pages (`ops/bench/activation.py`)

A thread with 100,000 messages: activating its actor (latest snapshot plus the events after it)
against replaying the whole stream, and listing a 20-message page at its start, middle and end
against the first page of a 10-message thread. Medians. Reproduce with
`.venv/bin/python ops/bench/activation.py`.

{table}

Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}; {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.""")
