#!/usr/bin/env python3
"""Read-model rebuild benchmark: `threadline projections rebuild` against reading the log alone.

    .venv/bin/python ops/bench/rebuild.py [--events 250000] [--batch-size 10000] [--no-write]

1. A store of --events events is written straight through `write_appends` (with the live read
   models, as the service writes them) on a fresh embedded PostgreSQL in a temp directory (or on
   $DATABASE_URL when set), in a realistic mix: threads with user messages, message updates and
   deletes, runs that reply (step, in-progress message, a few text deltas, completion), runs with a
   tool-call round, cancelled runs, deleted threads, assistants created/updated/deleted, files
   uploaded/deleted.
2. Baseline: the gap-safe reader alone (`EventStore.read_all`, same batch size, rows decoded into
   events), reading the whole log: the ceiling for anything that replays it.
3. Diagnostics: the rebuild's own read side alone (read, decode, project, encode; nothing
   applied), and the gap-safe read's rows alone, not decoded.
4. The rebuild (`projections.rebuild.rebuild`): fresh tables, load, switch. events/s counts the
   load (reading, projecting and applying every event); the total includes creating the tables,
   ANALYZE, the switch and dropping the old tables.
5. Check: every read-model table hashes the same before and after.

Target: ≥ 20,000 events/s rebuilt. Writes the `rebuild` section of ops/bench/RESULTS.md unless
--no-write (or the check fails: then it exits 1).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from results import write_section  # noqa: E402

from events import cipher  # noqa: E402
from events.store import Append, Checkpoint, EventMetadata, EventStore, write_appends  # noqa: E402
from events.types import (  # noqa: E402
    AgentCreated,
    AgentDeleted,
    AgentUpdated,
    FileDeleted,
    FileUploaded,
    MessageCompleted,
    MessageCreated,
    MessageDeleted,
    MessageTextAppended,
    MessageUpdated,
    RunCancelled,
    RunCancelling,
    RunCompleted,
    RunCreated,
    RunRequiredAction,
    RunStarted,
    RunStepCompleted,
    RunStepCreated,
    TextPart,
    TextValue,
    ThreadCreated,
    ThreadDeleted,
    ThreadUpdated,
    ToolOutputsSubmitted,
)
from projections import rebuild as rebuilding  # noqa: E402
from projections.projector import SERVICE_PROJECTIONS  # noqa: E402
from projections.rebuild import READ_MODEL_TABLES, rebuild  # noqa: E402
from service import database  # noqa: E402
from service.ids import new_id  # noqa: E402

TARGET = 20_000     # events per second rebuilt
PROJECT = "bench"
TEXT = "Benchmark message: the quick brown fox jumps over the lazy dog, then appends another line."
USAGE = {"prompt_tokens": 42, "completion_tokens": 17, "total_tokens": 59}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def _text(s: str) -> list:
    return [TextPart(TextValue(s))]


def _reply_run(tid: str, aid: str, t: int, tool_round: bool) -> list:
    rid = new_id("run_")
    out: list = [RunCreated(run_id=rid, thread_id=tid, assistant_id=aid, created_at=t, expires_at=t + 600,
                            model="builtin/echo", instructions="Be brief.", tools=TOOLS),
                 RunStarted(run_id=rid, started_at=t)]
    if tool_round:
        sid = new_id("step_")
        calls = [{"id": new_id("call_"), "type": "function",
                  "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]
        out += [RunStepCreated(step_id=sid, run_id=rid, created_at=t, type="tool_calls", tool_calls=calls, usage=USAGE),
                RunRequiredAction(run_id=rid, step_id=sid, tool_calls=calls),
                ToolOutputsSubmitted(run_id=rid, step_id=sid, submitted_at=t + 1,
                                     tool_calls=[{**c, "function": {**c["function"], "output": "sunny"}}
                                                 for c in calls]),
                RunStarted(run_id=rid, started_at=t + 1)]
    sid, mid = new_id("step_"), new_id("msg_")
    out += [RunStepCreated(step_id=sid, run_id=rid, created_at=t, type="message_creation", message_id=mid),
            MessageCreated(message_id=mid, thread_id=tid, created_at=t, role="assistant", content=[],
                           assistant_id=aid, run_id=rid, status="in_progress")]
    out += [MessageTextAppended(message_id=mid, run_id=rid, index=0, text=TEXT[i * 30:(i + 1) * 30]) for i in range(3)]
    out += [MessageCompleted(message_id=mid, completed_at=t + 2, content=_text(TEXT)),
            RunStepCompleted(step_id=sid, run_id=rid, completed_at=t + 2, usage=USAGE),
            RunCompleted(run_id=rid, completed_at=t + 2, usage=USAGE)]
    return out


def thread_events(i: int, aid: str, rnd: random.Random) -> tuple[str, list]:
    """One thread's stream: ~35 events of the kinds a real thread has."""
    tid, t = new_id("thread_"), 1_732_170_000 + i
    out: list = [ThreadCreated(thread_id=tid, project=PROJECT, created_at=t, metadata={"n": str(i)})]
    mids = [new_id("msg_") for _ in range(8)]
    out += [MessageCreated(message_id=m, thread_id=tid, created_at=t, role="user", content=_text(TEXT)) for m in mids]
    out.append(MessageUpdated(message_id=mids[0], metadata={"seen": "yes"}))
    out += _reply_run(tid, aid, t, tool_round=False)
    out += _reply_run(tid, aid, t, tool_round=(i % 3 == 0))
    if i % 5 == 0:
        rid = new_id("run_")
        out += [RunCreated(run_id=rid, thread_id=tid, assistant_id=aid, created_at=t, expires_at=t + 600,
                           model="builtin/echo", instructions="Be brief."),
                RunStarted(run_id=rid, started_at=t), RunCancelling(run_id=rid, at=t + 1),
                RunCancelled(run_id=rid, cancelled_at=t + 1)]
    if i % 10 == 0:
        out.append(MessageDeleted(message_id=mids[rnd.randrange(len(mids))]))
    if i % 7 == 0:
        out.append(ThreadUpdated(thread_id=tid, metadata={"n": str(i), "tag": "x"}))
    if i % 20 == 0:
        out.append(ThreadDeleted(thread_id=tid))
    return tid, out


async def build_store(pool, target_events: int) -> dict[str, int]:
    rnd = random.Random(7)
    meta = EventMetadata(request_id="req_bench", project=PROJECT, api_key_id="key_bench")
    written = 0
    counts: dict[str, int] = {}
    agents: list[str] = []
    i = 0
    keyring = cipher.KeyRing()   # as the service writes: thread content sealed with the thread's key
    started = time.perf_counter()
    while written < target_events:
        appends = []
        for _ in range(100):
            if i % 50 == 0:   # an assistant every 50 threads; a file every 25
                aid = new_id("asst_")
                agents.append(aid)
                ev = [AgentCreated(agent_id=aid, project=PROJECT, created_at=1, model="builtin/echo", tools=TOOLS),
                      AgentUpdated(agent_id=aid, name=f"agent {i}", instructions="Be brief.")]
                if i % 200 == 0:
                    ev.append(AgentDeleted(agent_id=aid))
                appends.append(Append(f"agent-{aid}", 0, ev, meta))
            if i % 25 == 0:
                fid = new_id("file-")
                ev = [FileUploaded(file_id=fid, project=PROJECT, created_at=1, filename="notes.txt",
                                   purpose="assistants", bytes=100, sha256="0" * 64)]
                if i % 100 == 0:
                    ev.append(FileDeleted(file_id=fid))
                appends.append(Append(f"file-{fid}", 0, ev, meta))
            tid, ev = thread_events(i, agents[-1], rnd)
            appends.append(Append(f"thread-{tid}", 0, ev, meta))
            i += 1
        async with pool.acquire() as conn:
            await write_appends(conn, appends, SERVICE_PROJECTIONS, keyring=keyring)
        for a in appends:
            written += len(a.events)
            for e in a.events:
                counts[type(e).__name__] = counts.get(type(e).__name__, 0) + 1
        if time.perf_counter() - started > 2:
            print(f"  written {written:,} events", file=sys.stderr, flush=True)
            started = time.perf_counter()
    return counts


async def read_rows(pool, batch: int) -> tuple[int, float]:
    """The gap-safe read's rows alone, not decoded: what the database gives."""
    sql = "SELECT position, stream, version, type, data::text, metadata::text, recorded_at, xid::text::bigint " \
          "FROM read_all($1::text::xid8, $2, $3)"
    t0 = time.perf_counter()
    n, checkpoint = 0, Checkpoint()
    while rows := await pool.fetch(sql, str(checkpoint.xid), checkpoint.position, batch):
        checkpoint = Checkpoint(rows[-1][7], rows[-1][0])
        n += len(rows)
    return n, time.perf_counter() - t0


async def read_log(store: EventStore, batch: int) -> tuple[int, float]:
    """The baseline: `EventStore.read_all` from the start to the head, every event decoded."""
    t0 = time.perf_counter()
    n, checkpoint = 0, Checkpoint()
    while True:
        events, checkpoint = await store.read_all(checkpoint, batch)
        if not events:
            return n, time.perf_counter() - t0
        n += len(events)


async def read_and_project(pool, batch: int) -> tuple[int, float]:
    """The rebuild's own read side alone: read, decode, project, encode; nothing applied."""
    t0 = time.perf_counter()
    n, checkpoint = 0, Checkpoint()
    while (got := await rebuilding._read(pool, pool, checkpoint, batch, gap_safe=True)) is not None:
        n += got[2]
        checkpoint = got[3]
    return n, time.perf_counter() - t0


async def table_hashes(pool) -> dict[str, str]:
    return {t: await pool.fetchval(f"SELECT md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x.id), '')) "
                                   f"FROM public.{t} AS x") for t in READ_MODEL_TABLES}


async def main(args) -> int:
    url = os.environ.get("DATABASE_URL")
    where = "$DATABASE_URL"
    if not url:
        base = Path(tempfile.mkdtemp(prefix="tl-bench-rebuild-"))
        # Registered before pgserver registers its exit hook (which stops the server), so it runs
        # after it: exit hooks run last-in, first-out.
        atexit.register(shutil.rmtree, base, ignore_errors=True)
        url = database.embedded_database_url(base)
        where = "fresh embedded PostgreSQL"
    pool = await database.connect(url, 4)
    await database.prepare(pool)
    existing = await pool.fetchval("SELECT count(*) FROM events")
    if existing < args.events:
        print(f"writing {args.events - existing:,} events ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        counts = await build_store(pool, args.events - existing)
        print(f"  done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    else:
        counts = {}
    await pool.execute("VACUUM ANALYZE")
    total = await pool.fetchval("SELECT count(*) FROM events")
    if not counts:
        counts = {r[0]: r[1] for r in await pool.fetch("SELECT type, count(*) FROM events GROUP BY type")}
    pg = {r[0]: r[1] for r in await pool.fetch(
        "SELECT name, setting FROM pg_settings WHERE name IN ('server_version', 'shared_buffers', "
        "'synchronous_commit', 'fsync', 'max_wal_size')")}

    store = EventStore(pool, flushers=0)
    await read_log(store, args.batch_size)   # warm the cache: every phase reads a warm log
    n_rows, s_rows = await read_rows(pool, args.batch_size)
    n_read, s_read = await read_log(store, args.batch_size)
    n_proj, s_proj = await read_and_project(pool, args.batch_size)
    before = await table_hashes(pool)

    last = [0.0]

    def progress(p) -> None:
        if time.perf_counter() - last[0] >= 2 or p.phase == "done":
            last[0] = time.perf_counter()
            print(f"  rebuild [{p.phase}] {p.events:,} events, {p.rate:,.0f} events/s", file=sys.stderr, flush=True)

    results = []
    for _ in range(args.repeat):
        results.append(await rebuild(url, batch_size=args.batch_size, progress=progress))
    after = await table_hashes(pool)
    await store.close()
    await pool.close()
    best = max(results, key=lambda r: r.rate)
    median = statistics.median(r.rate for r in results)
    load = os.getloadavg()
    identical = before == after
    changes = best.changes
    read_rate, proj_rate, rows_rate = n_read / s_read, n_proj / s_proj, n_rows / s_rows
    met = best.rate >= TARGET

    rows = [
        ("rebuild events/s (load: read + project + apply)", f"{best.rate:,.0f}", f"read_all alone {read_rate:,.0f}",
         f"{best.rate / read_rate:.2f}", f"≥ {TARGET:,}", "yes" if met else "NO"),
        ("rebuild events/s, median of the runs", f"{median:,.0f}", f"read_all alone {read_rate:,.0f}",
         f"{median / read_rate:.2f}", f"≥ {TARGET:,}", "yes" if median >= TARGET else "NO"),
        ("rebuild read-model changes/s", f"{changes / best.load_seconds:,.0f}", "—", "—", "—", "—"),
        ("rebuild total (tables, load, ANALYZE, switch, drop)", f"{best.seconds:.1f} s", "—", "—", "—", "—"),
        ("live tables locked for the switch", f"{best.switch_ms:.1f} ms", "—", "—", "—", "—"),
        ("the rebuild's read side alone: read, decode, project (diagnostic)", f"{proj_rate:,.0f} events/s",
         f"read_all alone {read_rate:,.0f}",
         f"{proj_rate / read_rate:.2f}", "—", "—"),
        ("read_all rows, not decoded (diagnostic)", f"{rows_rate:,.0f} events/s", f"read_all alone {read_rate:,.0f}",
         f"{rows_rate / read_rate:.2f}", "—", "—"),
    ]
    table = ("| figure | value | baseline | ratio | target | met? |\n|---|---|---|---|---|---|\n"
             + "".join(f"| {' | '.join(r)} |\n" for r in rows))
    mix = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    try:
        code = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
        if subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip():
            code += " + uncommitted changes"
    except OSError:
        code = "?"
    m = (f"Machine: {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}, "
         f"PostgreSQL {pg.get('server_version')} (shared_buffers {pg.get('shared_buffers')} × 8 kB, fsync "
         f"{pg.get('fsync')}), {where}; load average {load[0]:.1f} / {load[1]:.1f} (1 / 5 min: the machine is shared); "
         f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; code: {code}.")
    runs = ", ".join(f"{r.rate:,.0f}" for r in results)
    print(table)
    print(m)
    print(f"runs (events/s): {runs}; rows after: {best.rows}; identical: {identical}")
    if not identical:
        print("FAILED: the rebuilt tables differ from the live ones", file=sys.stderr)
        print({t: (before[t], after[t]) for t in before if before[t] != after[t]}, file=sys.stderr)
        return 1
    if args.no_write:
        return 0
    write_section("rebuild", f"""## Read-model rebuild (`ops/bench/rebuild.py`)

`threadline projections rebuild` replays the whole log into fresh read-model tables and switches to
them atomically. Measured on a store of {total:,} events against reading the log alone (the
gap-safe `read_all`, rows decoded into events, same batch size {args.batch_size:,}) in the same run.
Reproduce with:

```sh
.venv/bin/python ops/bench/rebuild.py --events {args.events}
```

{table}
{m}

- Rebuild runs in this measurement (events/s): {runs}; the first row is the best, the second the median.
- "read_all alone" decodes every event (decrypting thread content) as `EventStore.read_all` does;
  the rebuild skips decoding the text deltas (`MessageTextAppended`, no read-model change), so it
  can come close to it. Reading and projecting run a batch ahead on one connection while the
  previous batch is applied on another (one `apply_read_models` call per batch).
- Every read-model table hashed identical before and after the rebuild: {'yes' if identical else 'NO'}.
- Rows after the rebuild: {', '.join(f'{k} {v:,}' for k, v in best.rows.items())}.
- Log mix (events by type): {mix}.
- {changes:,} read-model changes for {best.events:,} events (text deltas change no row).
- Written through `write_appends` with the live projection and a key ring (thread content sealed with
  each thread's key, as the service writes it), in batches of 100 streams: ~35 events per
  thread (8 user messages, an update, two reply runs — one of them with a tool-call round every third
  thread —, a cancelled run every fifth, deletes), an assistant every 50 threads, a file every 25.
""")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=250_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="rebuilds to run (best and median reported)")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    sys.exit(asyncio.run(main(parser.parse_args())))
