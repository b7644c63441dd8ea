#!/usr/bin/env python3
"""Uploads benchmark: MB/s of a large file into Threadline, against a plain HTTP POST of the same
bytes in the same run, and how much the service's memory rises while it takes the file.

    .venv/bin/python ops/bench/uploads.py [--mib 256] [--repeat 3]

`python -m service serve` runs as a subprocess on a fresh embedded PostgreSQL (started as
ops/bench/appends.py starts it). One client, one file at a time, from a file on disk:

  (0) baseline: the same bytes POSTed by the same client library (the openai SDK's own HTTP client)
      to a plain aiohttp server in its own process that reads the body and throws it away: what
      HTTP on this machine moves, with no storage behind it.
  (1) `client.files.create(file=..., purpose="assistants")`: one multipart request.
  (2) `client.uploads.upload_file_chunked(...)`: the Uploads API, 64 MiB parts (the SDK's
      default part size), create + parts + complete.
  (3) a second baseline, the storage ceiling: the same bytes read from the file and INSERTed as
      1 MiB chunks (as the service stores them) by asyncpg into a table like blob_chunks, in one
      transaction, on the service's PostgreSQL: what the database takes with no HTTP in front.

Each figure is the median of --repeat uploads; ratios are against (0). Memory: the service's peak
RSS (VmHWM) before the first upload and after the last; the rise must stay far below the file's
size, because a file is streamed to storage in 1 MiB chunks and never held whole.
Targets: RSS rise ≤ 25% of the file's size (a 256 MiB file: ≤ 64 MiB); `files.create` at least half
the storage ceiling (3). The plain POST (0) shows what HTTP alone would allow: storage is the bound.
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
from harness import PYTHON, client_bench  # noqa: E402
from results import write_section  # noqa: E402

MiB = 1 << 20
RSS_TARGET_SHARE = 0.25
STORAGE_TARGET = 0.5        # files.create MB/s >= half of what raw INSERTs of the same chunks reach


def child_sink(argv: list[str]) -> None:
    """A plain aiohttp server: POST /sink reads the whole body in chunks and discards it."""
    import asyncio

    from aiohttp import web

    port = int(argv[0])

    async def sink(request: web.Request) -> web.Response:
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
        return web.json_response({"bytes": total})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def main() -> None:
        app = web.Application(client_max_size=1 << 40)
        app.router.add_post("/sink", sink)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def insert_raw(dsn: str, path: Path) -> None:
    """(3): the file into the database as 1 MiB chunks, one transaction, no HTTP."""
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS bench_chunks (blob_id text, seq int, data bytea, "
                               "PRIMARY KEY (blob_id, seq)); "
                               "ALTER TABLE bench_chunks ALTER COLUMN data SET STORAGE EXTERNAL; "
                               "TRUNCATE bench_chunks")
            async with conn.transaction():
                with open(path, "rb") as f:
                    seq = 0
                    while chunk := f.read(MiB):
                        await conn.execute("INSERT INTO bench_chunks VALUES ($1, $2, $3)", "b", seq, chunk)
                        seq += 1
        finally:
            await conn.close()

    asyncio.run(run())


def timed(action, size: int, repeat: int) -> list[float]:
    """MB/s (10^6 bytes per second, as transfer rates are quoted) of each of `repeat` calls."""
    rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        rates.append(size / (time.perf_counter() - started) / 1e6)
    return rates


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_sink":
        child_sink(sys.argv[2:])
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mib", type=int, default=256, help="file size in MiB (default 256)")
    p.add_argument("--repeat", type=int, default=3, help="uploads per way, the median counts (default 3)")
    args, bench = client_bench(p)
    import openai

    size = args.mib * MiB
    path = bench.tmp / "upload.bin"
    with open(path, "wb") as out:          # incompressible, written once, read from the page cache after
        for _ in range(args.mib):
            out.write(os.urandom(MiB))
    try:
        sink_port = bench.free_port()
        sink = bench.spawn([PYTHON, str(Path(__file__).resolve()), "_sink", str(sink_port)], "sink")
        bench.wait_healthy(sink, f"http://127.0.0.1:{sink_port}", "sink")
        proc, base, key = bench.start_threadline()
        with openai.DefaultHttpxClient(timeout=600) as plain, \
                openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=600) as client:

            def post_plain():
                with open(path, "rb") as f:
                    r = plain.post(f"http://127.0.0.1:{sink_port}/sink", content=f,
                                   headers={"Content-Type": "application/octet-stream"})
                assert r.status_code == 200 and r.json()["bytes"] == size, r.text

            made: list[str] = []

            def files_create():
                with open(path, "rb") as f:
                    made.append(client.files.create(file=("upload.bin", f), purpose="assistants").id)

            def uploads_chunked():
                upload = client.uploads.upload_file_chunked(file=path, mime_type="application/octet-stream",
                                                            purpose="assistants", filename="upload.bin")
                assert upload.status == "completed" and upload.file is not None, upload
                made.append(upload.file.id)

            client.files.create(file=("warm.bin", b"x" * MiB), purpose="assistants")    # warm-up
            rss_before = peak_rss_mib(proc.pid)
            bench.wait_quiet("uploads")
            bench.log(f"(0) plain POST of {args.mib} MiB × {args.repeat}")
            plain_rates = timed(post_plain, size, args.repeat)
            bench.log(f"(1) files.create × {args.repeat}")
            files_rates = timed(files_create, size, args.repeat)
            bench.log(f"(2) uploads.upload_file_chunked × {args.repeat}")
            chunked_rates = timed(uploads_chunked, size, args.repeat)
            bench.log(f"(3) raw INSERTs of the same bytes × {args.repeat}")
            raw_rates = timed(lambda: insert_raw(bench.dsn, path), size, args.repeat)
            rss_after = peak_rss_mib(proc.pid)
            for file_id in made:
                stored = client.files.retrieve(file_id)
                assert stored.bytes == size and stored.status == "processed", stored
            with open(path, "rb") as f:
                head = f.read(MiB)
            assert client.files.content(made[-1]).read()[:MiB] == head, "the stored bytes differ"
    finally:
        bench.cleanup()
    plain_mbs, files_mbs, chunked_mbs, raw_mbs = (statistics.median(r) for r in
                                                  (plain_rates, files_rates, chunked_rates, raw_rates))
    rise = rss_after - rss_before
    limit = args.mib * RSS_TARGET_SHARE
    met = "met" if rise <= limit else "**not met**"
    storage_ratio = files_mbs / raw_mbs
    storage_met = "met" if storage_ratio >= STORAGE_TARGET else "**not met**"
    m = bench.machine()
    lines = [
        "## Uploads: a large file in, against a plain HTTP POST (`ops/bench/uploads.py`)",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}; {m['date']}; "
        f"code: {m['code']}.",
        "",
        f"One client, a {args.mib} MiB file of random bytes from disk, median of {args.repeat} uploads per way; "
        "MB/s = 10⁶ bytes/s. Baselines: the same HTTP client POSTing the same bytes to a plain aiohttp "
        "server (its own process) that discards them; and the storage ceiling, the same bytes INSERTed as 1 MiB "
        "chunks by asyncpg in one transaction on the same PostgreSQL.",
        "",
        "| figure | value | baseline | ratio | target | met? |",
        "|---|---|---|---|---|---|",
        f"| `files.create` (multipart) | {files_mbs:.0f} MB/s | plain POST {plain_mbs:.0f} MB/s | "
        f"{files_mbs / plain_mbs:.2f}× | — | — |",
        f"| `uploads.upload_file_chunked` (64 MiB parts) | {chunked_mbs:.0f} MB/s | plain POST {plain_mbs:.0f} MB/s | "
        f"{chunked_mbs / plain_mbs:.2f}× | — | — |",
        f"| `files.create` against the storage ceiling | {files_mbs:.0f} MB/s | raw INSERTs {raw_mbs:.0f} MB/s | "
        f"{storage_ratio:.2f}× | ≥ {STORAGE_TARGET:g}× | {storage_met} |",
        f"| service peak-RSS rise over {2 * args.repeat} uploads | {rise:.0f} MiB | the file, {args.mib} MiB | "
        f"{rise / args.mib:.2f}× | ≤ {RSS_TARGET_SHARE:g}× | {met} |",
        "",
        f"Service peak RSS (VmHWM) {rss_before:.0f} MiB after start-up and a warm-up upload, {rss_after:.0f} MiB "
        "after the last upload. Every stored file was checked: its size, its status and its first MiB.",
        "",
        "| upload | MB/s of each |",
        "|---|---|",
        f"| plain POST | {', '.join(f'{r:.0f}' for r in plain_rates)} |",
        f"| `files.create` | {', '.join(f'{r:.0f}' for r in files_rates)} |",
        f"| `upload_file_chunked` | {', '.join(f'{r:.0f}' for r in chunked_rates)} |",
        f"| raw INSERTs | {', '.join(f'{r:.0f}' for r in raw_rates)} |",
    ]
    if bench.notes:
        lines += ["", *bench.notes]
    report = "\n".join(lines)
    print(report)
    if not args.no_write and not args.env and not args.profile:
        write_section("uploads", report)
    return 0 if rise <= limit and storage_ratio >= STORAGE_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
