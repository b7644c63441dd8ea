#!/usr/bin/env python3
"""SSE streaming benchmark: Threadline's run and thread streams against a bare aiohttp SSE server,
measured back to back in one run.

    .venv/bin/python ops/bench/streams.py [--seconds 10] [--warmup 3] [--idle-streams 10000]

`python -m service serve` runs as a subprocess on a fresh embedded PostgreSQL in a temp directory
(or on $DATABASE_URL when set), started exactly as ops/bench/appends.py starts it (this script
reuses its `Bench` helpers: server start, quiet-machine wait, CPU accounting, machine facts).

The model is `builtin/script:<file>` with one turn of 200 one-word chunks (200 "tokens"), in two
assistants:
  - paced: "chunk_delay" 0.005 s (a fast model: 200 tokens in ~1 s). The engine gathers the tokens
    for 50 ms into one MessageTextAppended event, so an answer is ~20 `thread.message.delta` frames
    of ~10 tokens each (the figures count the frames actually received);
  - burst: no delay at all. The whole answer is gathered into one MessageTextAppended event: one
    `thread.message.delta` frame of 200 tokens per answer, so "deltas/s" = answers streamed per second
    (a capacity figure: the model costs nothing, the service is all there is).
A "delta event" is one `thread.message.delta` SSE frame as a client receives it.

The baseline is a bare aiohttp + uvloop SSE server (a subprocess of this script) that replays, for
every run request, the frames Threadline sent for the same answer, from memory: captured once at
the start of the run from a real Threadline stream (the same bytes, cut into the same writes). In
paced mode each write happens at the offset it had in the capture (measured from the
`thread.message.in_progress` write, so the model's pacing is kept and Threadline's own start-up time
is not); in burst mode the writes follow each other as fast as possible. It answers the client's
other request (POST /v1/threads) with a small JSON, holds idle thread streams with the same keep-alive
frame at the same interval, and fans a posted message out to them from memory.

Phases (each window: wait for a quiet machine, warm-up, measured window; nothing else runs meanwhile):

  (1) Idle streams: N (default 10,000) `GET /v1/threads/{t}/stream` connections spread over a few
      threads, opened by a client process (at most --ramp-parallel opening at a time), held for
      --idle-hold seconds (more than one keep-alive interval: every stream must receive an
      `event: ping` and stay open), then one message posted to each thread: time until all N
      streams received its `thread.message.created` frame. The service's RSS (VmRSS from
      /proc/<pid>/status, with its child processes, if any; the embedded PostgreSQL is not one) is
      read before the ramp and at the end of the hold: memory per stream = difference / N.
      Same for the bare server. N is capped by the fd limits (both processes raise their soft
      RLIMIT_NOFILE to the hard limit) and the local port range.
  (2) Run streams at 1, 100 and 1,000 concurrent streams, paced then burst, bare server then
      Threadline at each concurrency: every client stream loops {POST /v1/threads (one user message;
      not timed) → POST /v1/threads/{t}/runs with "stream": true → read until `event: done`}, one
      keep-alive connection per stream. Time to first event: from sending the run POST to
      receiving the first complete frame (`thread.run.created`), for runs posted inside the
      window. Delivered delta rate: `thread.message.delta` frames received inside the window
      (all streams together) ÷ window. Every stream is checked: status 200, `thread.run.completed`
      then `done`, and (one stream in --verify-every) the deltas joined give exactly the script's text.

For Threadline the time to first event is also split in two with the log's clock (`recorded_at`
of the run's RunCreated, stamped at its insert): run POST sent → RunCreated inserted, and → first
frame received. --profile DIR attaches py-spy to the Threadline server during each of its windows
(raw collapsed stacks; such a run does not write RESULTS.md).

Clients are lean raw-asyncio HTTP/1.1 readers (uvloop) in their own processes (one per 500
streams), so the server has a core of its own on a 2-core machine; frames are counted without
parsing JSON.

A phase with any error (non-200, a stream that did not end with a completed run and `done`, wrong
text, a timeout, an idle stream that closed or got no keep-alive) makes the run invalid: the script
says so, exits 1 and does not touch RESULTS.md. Otherwise it prints a table with the targets and
rewrites the `streams` section of ops/bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
from harness import PYTHON, Bench, _install_uvloop, _pct, bench_options, parse_bench_args
from results import RESULTS, write_report

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "tired", "owls", "watch", "from", "an", "old", "oak", "tree", "and", "nobody", "says", "anything", "about", "it", "until", "morning", "comes"]
ANSWER = " ".join(WORDS[i % len(WORDS)] for i in range(200))          # 200 one-word chunks
THREAD_BODY = json.dumps({"messages": [{"role": "user", "content": "Tell me a story of two hundred words."}]})
PACED_CHUNK_DELAY = 0.005
CONCURRENCIES = (1, 100, 1000)
STREAMS_PER_CLIENT = 500      # client processes: one per this many streams

TARGET_RATE_RATIO = 0.50      # delivered delta rate at 100 streams >= 50% of the bare server's
TARGET_IDLE_STREAMS = 10_000
TARGET_IDLE_BYTES = 1_000_000_000   # service memory with 10,000 idle streams (1 GB)
TARGET_TTFE_P99_MS = 25.0     # at 100 concurrent runs

DELTA = b"event: thread.message.delta\n"
DONE = b"event: done\n"
COMPLETED = b"event: thread.run.completed\n"
PING = b"event: ping\n"
MSG_CREATED = b"event: thread.message.created\n"


def _raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ================================================================================================
# A lean HTTP/1.1 client: one connection, one request at a time, body bytes handed to a sink as
# they arrive (chunked transfer encoding decoded by hand, no JSON parsing).
# ================================================================================================

class HttpError(Exception):
    pass


class HttpConn(asyncio.Protocol):
    def __init__(self, host: str, key: str):
        self.host, self.key = host, key
        self.transport = None
        self.fut: asyncio.Future | None = None
        self.sink = None
        self.closed = False
        self.status = 0

    # -- protocol callbacks --
    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.state == "eof" and self.fut is not None and not self.fut.done():
            self.fut.set_result(self.status)
        elif self.fut is not None and not self.fut.done():
            self.fut.set_exception(HttpError(f"connection lost ({exc or 'closed by the server'})"))
        lost = getattr(self.sink, "lost", None)
        if lost is not None:
            lost()

    state = "idle"

    def data_received(self, data: bytes) -> None:
        if self.state == "head":
            self.head += data
            i = self.head.find(b"\r\n\r\n")
            if i < 0:
                return
            head, data = bytes(self.head[:i]), bytes(self.head[i + 4:])
            lines = head.split(b"\r\n")
            self.status = int(lines[0].split()[1])
            headers = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(b":")
                headers[k.strip().lower()] = v.strip().lower()
            if headers.get(b"transfer-encoding") == b"chunked":
                self.state, self.need, self.cbuf = "chunked", 0, b""
            elif b"content-length" in headers:
                self.state, self.remaining = "length", int(headers[b"content-length"])
                if self.remaining == 0:
                    self._finish()
                    return
            else:
                self.state = "eof"
            if not data:
                return
        if self.state == "chunked":
            self._chunked(data)
        elif self.state == "length":
            take = data[:self.remaining]
            self.remaining -= len(take)
            self.sink.feed(take)
            if self.remaining <= 0:
                self._finish()
        elif self.state == "eof":
            self.sink.feed(data)

    def _chunked(self, data: bytes) -> None:
        buf = self.cbuf + data if self.cbuf else data
        pos, n = 0, len(buf)
        while pos < n:
            need = self.need
            if need > 0:                      # inside a chunk's data
                end = min(n, pos + need)
                self.sink.feed(buf[pos:end])
                self.need = need - (end - pos)
                pos = end
                if self.need == 0:
                    self.need = -1            # its CRLF comes next
            elif need == -1 or need == -2:    # CRLF after a chunk (-1) or after the last chunk (-2)
                if n - pos < 2:
                    break
                pos += 2
                if need == -2:
                    self.cbuf = b""
                    self._finish()
                    return
                self.need = 0
            else:                             # a size line
                j = buf.find(b"\r\n", pos)
                if j < 0:
                    break
                size = int(buf[pos:j].split(b";", 1)[0], 16)
                pos = j + 2
                self.need = size if size else -2
        self.cbuf = buf[pos:]

    def _finish(self) -> None:
        self.state = "idle"
        if self.fut is not None and not self.fut.done():
            self.fut.set_result(self.status)

    # -- use --
    def send(self, method: str, path: str, body: bytes | None, sink) -> asyncio.Future:
        if self.closed:
            raise HttpError("connection closed")
        self.sink, self.state, self.head, self.status = sink, "head", bytearray(), 0
        self.fut = asyncio.get_running_loop().create_future()
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                + (f"Authorization: Bearer {self.key}\r\n" if self.key else "")
                + (f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if body is not None else "")
                + "\r\n").encode()
        self.transport.write(head + (body or b""))
        return self.fut

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int, key: str) -> HttpConn:
    _, conn = await asyncio.get_running_loop().create_connection(lambda: HttpConn(f"{host}:{port}", key), host, port)
    return conn


class Collect:
    """Sink for a small response."""
    __slots__ = ("parts",)

    def __init__(self):
        self.parts: list[bytes] = []

    def feed(self, data: bytes) -> None:
        self.parts.append(data)

    def body(self) -> bytes:
        return b"".join(self.parts)


async def call(conn: HttpConn, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    sink = Collect()
    status = await conn.send(method, path, body, sink)
    return status, sink.body()


# ================================================================================================
# Child: the run-stream client (`streams.py _run_client ...`)
# ================================================================================================

class Window:
    """What the streams of one client process received inside the measured window."""
    __slots__ = ("bytes", "deltas", "frames", "w0", "w1")

    def __init__(self, w0: float, w1: float):
        self.w0, self.w1 = w0, w1
        self.deltas = self.frames = self.bytes = 0


class RunSink:
    """Counts the frames of one run stream (complete frames only: a frame never straddles a count)."""
    __slots__ = ("completed", "deltas", "done", "frames", "keep", "nbytes", "t_first", "tail", "win")

    def __init__(self, win: Window, keep: bool):
        self.win = win
        self.tail = b""
        self.t_first = 0.0
        self.deltas = self.frames = self.nbytes = 0
        self.done = self.completed = False
        self.keep: list[bytes] | None = [] if keep else None

    def feed(self, data: bytes) -> None:
        buf = self.tail + data if self.tail else data
        i = buf.rfind(b"\n\n")
        if i < 0:
            self.tail = buf
            return
        whole, self.tail = buf[:i + 2], buf[i + 2:]
        now = time.time()
        if not self.t_first:
            self.t_first = time.perf_counter()
        d, f = whole.count(DELTA), whole.count(b"\n\n")
        self.deltas += d
        self.frames += f
        self.nbytes += len(whole)
        win = self.win
        if win.w0 <= now < win.w1:
            win.deltas += d
            win.frames += f
            win.bytes += len(whole)
        if not self.completed and COMPLETED in whole:
            self.completed = True
        if DONE in whole:
            self.done = True
        if self.keep is not None:
            self.keep.append(whole)


def delta_text(body: bytes) -> str:
    out = []
    for frame in body.split(b"\n\n"):
        if DELTA in frame:
            data = json.loads(frame.split(b"\ndata: ", 1)[1])
            for part in data["delta"]["content"]:
                out.append(part["text"]["value"])
    return "".join(out)


def child_run_client(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", default="")
    p.add_argument("--assistant", required=True)
    p.add_argument("--streams", type=int, required=True)
    p.add_argument("--start", type=float, required=True, help="epoch seconds: begin (warm-up)")
    p.add_argument("--w0", type=float, required=True, help="epoch seconds: measured window begins")
    p.add_argument("--w1", type=float, required=True, help="epoch seconds: measured window ends")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--verify-every", type=int, default=20)
    p.add_argument("--out", required=True, help="file for the results (JSON)")
    args = p.parse_args(argv)
    _raise_nofile()
    _install_uvloop()
    run_body = json.dumps({"assistant_id": args.assistant, "stream": True}).encode()
    thread_body = THREAD_BODY.encode()

    async def main() -> dict:
        win = Window(args.w0, args.w1)
        ttfe: list[float] = []          # runs posted inside the window, seconds
        answer: list[float] = []        # first frame → done, same runs
        per_answer: list[int] = []      # delta frames per completed run
        ttfe_all: list[float] = []      # every run, warm-up included (the overloaded case has few others)
        answer_all: list[float] = []
        marks: list[tuple[str, float, float]] = []   # (thread, run POST sent, first frame): epoch seconds
        errors: list[str] = []
        counts = {"runs": 0, "completed_in_window": 0, "verified": 0}

        def error(msg: str) -> None:
            errors.append(msg)

        async def worker(i: int, conn: HttpConn | None) -> None:
            # Spread the first requests over the first second (or half the warm-up).
            await asyncio.sleep(max(0.0, args.start - time.time())
                                + (i / args.streams) * min(1.0, (args.w0 - args.start) / 2))
            k = 0
            while time.time() < args.w1:
                k += 1
                try:
                    if conn is None or conn.closed:
                        conn = await connect(args.host, args.port, args.key)
                    status, body = await asyncio.wait_for(call(conn, "POST", "/v1/threads", thread_body), args.timeout)
                    if status != 200:
                        error(f"POST /v1/threads: {status} {body[:200]!r}")
                        await asyncio.sleep(0.5)
                        continue
                    tid = json.loads(body)["id"]
                    keep = args.verify_every > 0 and (i * 7 + k) % args.verify_every == 0
                    sink = RunSink(win, keep)
                    posted = time.time()
                    t0 = time.perf_counter()
                    status = await asyncio.wait_for(
                        conn.send("POST", f"/v1/threads/{tid}/runs", run_body, sink), args.timeout)
                    t_end = time.perf_counter()
                except TimeoutError:
                    error(f"stream {i}: no end within {args.timeout:g} s")
                    if conn is not None:
                        conn.close()
                    conn = None
                    continue
                except (HttpError, OSError) as exc:
                    error(f"stream {i}: {type(exc).__name__}: {exc}")
                    if conn is not None:
                        conn.close()
                    conn = None
                    await asyncio.sleep(0.5)
                    continue
                counts["runs"] += 1
                if status != 200:
                    error(f"POST runs: {status} {b''.join(sink.keep or [sink.tail])[:200]!r}")
                    continue
                if not (sink.done and sink.completed) or sink.tail.strip():
                    error(f"stream {i}: ended without thread.run.completed and done "
                          f"(done={sink.done}, completed={sink.completed}, {sink.frames} frames)")
                    continue
                if sink.keep is not None:
                    text = delta_text(b"".join(sink.keep))
                    if text != ANSWER:
                        error(f"stream {i}: the deltas joined give {len(text)} characters, not the answer's "
                              f"{len(ANSWER)} ({text[:60]!r}…)")
                    counts["verified"] += 1
                if args.w0 <= time.time() < args.w1:
                    counts["completed_in_window"] += 1
                inside = args.w0 <= posted < args.w1
                ttfe_all.append(sink.t_first - t0)
                answer_all.append(t_end - sink.t_first)
                if inside:
                    ttfe.append(sink.t_first - t0)
                    answer.append(t_end - sink.t_first)
                    marks.append((tid, posted, posted + (sink.t_first - t0)))
                per_answer.append(sink.deltas)
            if conn is not None:
                conn.close()

        # Every stream's connection is opened before the start, a hundred at a time (opening a
        # thousand at once while the server is busy overflows its listen backlog).
        sem = asyncio.Semaphore(100)

        async def opened(i: int) -> HttpConn | None:
            async with sem:
                for attempt in range(3):
                    try:
                        return await asyncio.wait_for(connect(args.host, args.port, args.key), 10)
                    except (TimeoutError, OSError) as exc:
                        if attempt == 2:
                            error(f"stream {i}: cannot connect: {type(exc).__name__}: {exc}")
                return None
        conns = await asyncio.gather(*(opened(i) for i in range(args.streams)))
        await asyncio.gather(*(worker(i, conn) for i, conn in enumerate(conns)))
        return {"deltas": win.deltas, "frames": win.frames, "bytes": win.bytes, "ttfe": ttfe, "answer": answer, "ttfe_all": ttfe_all, "answer_all": answer_all, "marks": marks,
                "per_answer": per_answer, "errors": errors, **counts}

    Path(args.out).write_text(json.dumps(asyncio.run(main())))


# ================================================================================================
# Child: the idle-stream client (`streams.py _idle_client ...`)
# ================================================================================================

ARMED = [False]       # the idle client has posted the broadcast messages: look for them


class IdleSink:
    __slots__ = ("ended", "opened", "pings", "t_msg", "tail")

    def __init__(self, opened: asyncio.Future):
        self.tail = b""
        self.opened = opened
        self.pings = 0
        self.ended = False
        self.t_msg = 0.0

    def feed(self, data: bytes) -> None:
        buf = self.tail + data if self.tail else data
        i = buf.rfind(b"\n\n")
        if i < 0:
            self.tail = buf
            return
        whole, self.tail = buf[:i + 2], buf[i + 2:]
        if not self.opened.done():
            self.opened.set_result(None)
        self.pings += whole.count(PING)
        if ARMED[0] and not self.t_msg and MSG_CREATED in whole:
            self.t_msg = time.perf_counter()

    def lost(self) -> None:
        self.ended = True
        if not self.opened.done():
            self.opened.set_exception(HttpError("closed before the first frame"))


def child_idle_client(argv: list[str]) -> None:
    """Open N idle thread streams, hold them, post one message per thread; report as it goes:
    `READY` when all are open, `HELD` after the hold, `BENCHJSON` after the broadcast; then wait
    for stdin to close before closing the streams."""
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", default="")
    p.add_argument("--threads", required=True, help="comma-separated thread ids")
    p.add_argument("--streams", type=int, required=True)
    p.add_argument("--parallel", type=int, default=200)
    p.add_argument("--hold", type=float, required=True)
    args = p.parse_args(argv)
    limit = _raise_nofile()
    _install_uvloop()
    threads = args.threads.split(",")
    body = json.dumps({"role": "user", "content": "One message for everyone listening."}).encode()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sinks: list[IdleSink] = []
        conns: list[HttpConn] = []
        failures: list[str] = []
        sem = asyncio.Semaphore(args.parallel)

        async def open_one(i: int) -> None:
            async with sem:
                try:
                    conn = await connect(args.host, args.port, args.key)
                    sink = IdleSink(loop.create_future())
                    fut = conn.send("GET", f"/v1/threads/{threads[i % len(threads)]}/stream", None, sink)
                    fut.add_done_callback(lambda f: f.cancelled() or f.exception())     # ends when we close it
                    await asyncio.wait_for(sink.opened, 30)
                    if conn.status != 200:
                        raise HttpError(f"status {conn.status}")
                except Exception as exc:  # noqa: BLE001 - counted: any failure invalidates the phase
                    failures.append(f"{type(exc).__name__}: {exc}")
                    return
                conns.append(conn)
                sinks.append(sink)

        t0 = time.perf_counter()
        await asyncio.gather(*(open_one(i) for i in range(args.streams)))
        ramp = time.perf_counter() - t0
        print("READY " + json.dumps({"opened": len(sinks), "failed": len(failures), "ramp_seconds": ramp,
                                     "first_failure": failures[0] if failures else None, "nofile": limit}),
              flush=True)
        await asyncio.sleep(args.hold)
        ended = sum(s.ended for s in sinks)
        no_ping = sum(1 for s in sinks if s.pings == 0)
        print("HELD " + json.dumps({"ended": ended, "no_ping": no_ping,
                                    "pings": sum(s.pings for s in sinks)}), flush=True)
        # One message per thread; time until every stream has its thread.message.created frame.
        posters = [await connect(args.host, args.port, args.key) for _ in threads]
        ARMED[0] = True
        t_post = time.perf_counter()
        statuses = await asyncio.gather(*(call(c, "POST", f"/v1/threads/{t}/messages", body)
                                          for c, t in zip(posters, threads)))
        t_answered = time.perf_counter() - t_post
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline and any(not s.t_msg for s in sinks if not s.ended):
            await asyncio.sleep(0.005)
        got = sorted(s.t_msg - t_post for s in sinks if s.t_msg)
        for c in posters:
            c.close()
        out = {"opened": len(sinks), "failed": len(failures), "first_failure": failures[0] if failures else None,
               "ramp_seconds": ramp, "ended": sum(s.ended for s in sinks), "no_ping": no_ping,
               "post_status": [s for s, _ in statuses], "post_seconds": t_answered,
               "broadcast_received": len(got), "broadcast_p50": _pct(got, 50) if got else None,
               "broadcast_last": got[-1] if got else None, "nofile": limit}
        print("BENCHJSON " + json.dumps(out), flush=True)
        await loop.run_in_executor(None, sys.stdin.read)      # hold until the orchestrator is done
        for c in conns:
            c.close()

    asyncio.run(main())


# ================================================================================================
# Child: the bare aiohttp SSE server (`streams.py _bare_server ...`)
# ================================================================================================

def child_bare_server(argv: list[str]) -> None:
    """Baseline: the same frames, from memory. One process, uvloop, aiohttp, like Threadline."""
    import msgspec
    from aiohttp import web

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--capture", required=True)
    p.add_argument("--keepalive", type=float, required=True)
    args = p.parse_args(argv)
    _raise_nofile()
    _install_uvloop()
    cap = json.loads(Path(args.capture).read_text())
    schedules = {a: [(off, base64.b64decode(b)) for off, b in cap["schedules"][mode]]
                 for mode, a in cap["assistants"].items()}
    idle_first = base64.b64decode(cap["idle_first"])
    msg_frame = base64.b64decode(cap["message_created"])
    keepalive = b"event: ping\ndata: {}\n\n"
    encoder = msgspec.json.Encoder()
    subscribers: dict[str, set[web.StreamResponse]] = {}
    counter = 0

    def sse() -> web.StreamResponse:
        return web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})

    async def create_thread(request: web.Request) -> web.Response:
        nonlocal counter
        await request.read()
        counter += 1
        return web.Response(body=encoder.encode({"id": f"thread_bare{counter:08d}", "object": "thread"}),
                            content_type="application/json")

    async def create_run(request: web.Request) -> web.StreamResponse:
        body = msgspec.json.decode(await request.read())
        schedule = schedules[body["assistant_id"]]
        response = sse()
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for offset, data in schedule:
            wait = t0 + offset - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await response.write(data)
        await response.write_eof()
        return response

    async def thread_stream(request: web.Request) -> web.StreamResponse:
        tid = request.match_info["thread_id"]
        response = sse()
        await response.prepare(request)
        await response.write(idle_first)
        subs = subscribers.setdefault(tid, set())
        subs.add(response)
        try:
            while True:
                await asyncio.sleep(args.keepalive)
                await response.write(keepalive)
        finally:
            subs.discard(response)

    async def post_message(request: web.Request) -> web.Response:
        await request.read()
        for response in list(subscribers.get(request.match_info["thread_id"], ())):
            try:
                await response.write(msg_frame)
            except (ConnectionError, RuntimeError):
                pass
        return web.Response(body=b'{"id":"msg_bare","object":"thread.message"}', content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/threads", create_thread)
        app.router.add_post("/v1/threads/{thread_id}/runs", create_run)
        app.router.add_get("/v1/threads/{thread_id}/stream", thread_stream)
        app.router.add_post("/v1/threads/{thread_id}/messages", post_message)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port, reuse_port=True).start()   # as Threadline's
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.shutdown()
        await runner.cleanup()

    asyncio.run(main())


# ================================================================================================
# The orchestrator
# ================================================================================================

def rss_tree(pid: int) -> tuple[int, list[int]]:
    """VmRSS in bytes of a process and its descendants; the pids counted."""
    total, pids, todo = 0, [], [pid]
    while todo:
        p = todo.pop()
        try:
            for ln in Path(f"/proc/{p}/status").read_text().splitlines():
                if ln.startswith("VmRSS:"):
                    total += int(ln.split()[1]) * 1024
                    break
        except OSError:
            continue
        pids.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return total, pids


def ms(x: float | None) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.1f} ms"


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


class StreamsBench(Bench):
    def __init__(self, args: argparse.Namespace):
        args.loadgen = "python"          # Bench's load generators are not used here
        args.env = getattr(args, "env", [])
        super().__init__(args)
        self.nofile = _raise_nofile()    # inherited by every child: servers and clients
        self.errors: list[str] = []

    # -- setup and the capture -----------------------------------------------------------------------

    def write_scripts(self) -> dict[str, Path]:
        paths = {}
        for mode, delay in (("paced", self.args.chunk_delay), ("burst", 0.0)):
            path = self.tmp / f"script-{mode}.json"
            path.write_text(json.dumps({"turns": [{"text": ANSWER, "chunk_delay": delay}]}))
            paths[mode] = path
        return paths

    async def _capture(self, port: int, key: str, assistants: dict[str, str]) -> dict:
        """One stream per mode after a few warm-up runs, write by write, with arrival offsets; the
        first frame of an idle thread stream and the frame a posted message makes on it."""
        conn = await connect("127.0.0.1", port, key)
        out: dict = {"assistants": assistants, "schedules": {}, "writes": {}}

        class Writes:
            def __init__(self):
                self.t0 = time.perf_counter()
                self.items: list[tuple[float, bytes]] = []

            def feed(self, data: bytes) -> None:     # HttpConn hands over each chunk (= server write)
                self.items.append((time.perf_counter() - self.t0, data))

        try:
            for mode, assistant in assistants.items():
                for _ in range(self.args.capture_runs):
                    status, body = await call(conn, "POST", "/v1/threads", THREAD_BODY.encode())
                    tid = json.loads(body)["id"]
                    w = Writes()
                    status = await conn.send("POST", f"/v1/threads/{tid}/runs",
                                             json.dumps({"assistant_id": assistant, "stream": True}).encode(), w)
                    if status != 200:
                        raise SystemExit(f"capture: POST runs answered {status}")
                # Merge the chunk pieces of one write (the client may get a write in several reads:
                # a piece following within 0.2 ms belongs to it).
                writes: list[list] = []
                for t, data in w.items:
                    if writes and t - writes[-1][0] < 0.0002 and not writes[-1][1].endswith(b"\n\n"):
                        writes[-1][1] += data
                    else:
                        writes.append([t, data])
                body = b"".join(d for _, d in writes)
                if delta_text(body) != ANSWER or DONE not in body:
                    raise SystemExit(f"capture ({mode}): the stream does not carry the answer:\n{body[:2000]!r}")
                out["schedules"][mode] = self._schedule(mode, writes)
                out["writes"][mode] = {"writes": len(writes), "bytes": len(body), "frames": body.count(b"\n\n"),
                                       "deltas": body.count(DELTA),
                                       "duration_ms": round((writes[-1][0] - writes[0][0]) * 1000, 1)}
            # Idle thread stream (on an empty thread, as the idle phase's): its first frame, and the
            # frame a new message makes.
            status, body = await call(conn, "POST", "/v1/threads", b"{}")
            tid = json.loads(body)["id"]
            idle = await connect("127.0.0.1", port, key)
            got: list[bytes] = []

            class Frames:
                def feed(self, data: bytes) -> None:
                    got.append(data)
            fut = idle.send("GET", f"/v1/threads/{tid}/stream", None, Frames())
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())     # ends when we close it
            for _ in range(500):
                if got:
                    break
                await asyncio.sleep(0.01)
            first = b"".join(got)
            got.clear()
            status, _ = await call(conn, "POST", f"/v1/threads/{tid}/messages",
                                   json.dumps({"role": "user", "content": "One message for everyone listening."}).encode())
            for _ in range(500):
                if MSG_CREATED in b"".join(got):
                    break
                await asyncio.sleep(0.01)
            idle.close()
            msg = b"".join(got)
            if not first.endswith(b"\n\n") or MSG_CREATED not in msg:
                raise SystemExit(f"capture: unexpected idle stream frames {first[:300]!r} / {msg[:300]!r}")
            out["idle_first"] = base64.b64encode(first).decode()
            out["message_created"] = base64.b64encode(msg).decode()
        finally:
            conn.close()
        return out

    @staticmethod
    def _schedule(mode: str, writes: list[list]) -> list[tuple[float, str]]:
        """When the bare server makes each write: paced, at the capture's offsets from the
        `thread.message.in_progress` write (the model's pacing, without Threadline's start-up); burst,
        all at once (as fast as it can)."""
        start = next((t for t, d in writes if b"event: thread.message.in_progress\n" in d), writes[0][0])
        last_delta = max((t for t, d in writes if DELTA in d), default=start)
        sched = []
        for t, d in writes:
            off = 0.0 if mode == "burst" else min(max(0.0, t - start), last_delta - start)
            sched.append((round(off, 6), base64.b64encode(d).decode()))
        return sched

    # -- phase (1): idle streams ------------------------------------------------------------------------

    def phase_idle(self, name: str, server: subprocess.Popen, port: int, key: str, threads: list[str]) -> dict:
        a = self.args
        n = a.idle_streams
        self.wait_quiet(f"(1) idle streams, {name}")
        time.sleep(1.0)
        rss0, pids = rss_tree(server.pid)
        self.log(f"(1) idle streams, {name}: opening {n:,} on {len(threads)} threads "
                 f"(server RSS {mib(rss0)}, processes {pids})")
        cmd = [PYTHON, str(Path(__file__).resolve()), "_idle_client", "--port", str(port), "--key", key,
               "--threads", ",".join(threads), "--streams", str(n), "--parallel", str(a.ramp_parallel),
               "--hold", str(a.idle_hold)]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        res: dict = {"rss_before": rss0, "requested": n}
        profiler = None
        try:
            for line in proc.stdout:
                if line.startswith("READY "):
                    ready = json.loads(line[6:])
                    self.log(f"(1) {name}: {ready['opened']:,} open in {ready['ramp_seconds']:.1f} s "
                             f"({ready['failed']} failed); holding {a.idle_hold:g} s")
                    time.sleep(1.0)
                    res["rss_ready"] = rss_tree(server.pid)[0]
                    groups = {"server": [server.pid], "client": [proc.pid]}
                    if name == "Threadline":
                        groups["postgres"] = "postgres"
                        profiler = self.start_profiler(server, "idle", None)   # hold and broadcast
                    before = self.cpu_snapshot(groups)
                elif line.startswith("HELD "):
                    res["cpu"] = self.cpu_delta(before, groups)
                    res["rss_held"] = rss_tree(server.pid)[0]
                    res.update(json.loads(line[5:]))
                elif line.startswith("BENCHJSON "):
                    res.update(json.loads(line[10:]))
                    if profiler is not None:
                        profiler.send_signal(signal.SIGINT)     # py-spy writes what it has
                    break
            proc.stdin.close()
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if profiler is not None:
                profiler.wait(60)
        if "opened" not in res or "rss_held" not in res:
            raise SystemExit(f"idle client failed ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        time.sleep(1.0)
        res["rss_after_close"] = rss_tree(server.pid)[0]
        opened = res["opened"]
        res["per_stream"] = (res["rss_held"] - rss0) / opened if opened else float("nan")
        problems = []
        if res["failed"]:
            problems.append(f"{res['failed']} streams failed to open (first: {res['first_failure']})")
        if res["ended"]:
            problems.append(f"{res['ended']} streams closed while held")
        if res["no_ping"]:
            problems.append(f"{res['no_ping']} streams got no keep-alive in {a.idle_hold:g} s")
        if any(s != 200 for s in res["post_status"]):
            problems.append(f"posting the broadcast messages answered {res['post_status']}")
        if res["broadcast_received"] != opened:
            problems.append(f"{opened - res['broadcast_received']} streams did not get the broadcast message")
        for p_ in problems:
            self.log(f"ERROR (1) {name}: {p_}")
            self.errors.append(f"(1) idle streams, {name}: {p_}")
        self.log(f"(1) {name}: RSS {mib(rss0)} → {mib(res['rss_held'])} with {opened:,} streams "
                 f"({res['per_stream'] / 1024:.1f} KiB each); broadcast to all in "
                 f"{(res['broadcast_last'] or float('nan')) * 1000:.0f} ms; CPU {res['cpu']}")
        return res

    # -- phase (2): run streams ---------------------------------------------------------------------------

    def phase_runs(self, name: str, server: subprocess.Popen, port: int, key: str, assistant: str,
                   mode: str, c: int) -> dict:
        def attempt() -> dict:
            self.wait_quiet(f"(2) {mode} {c}, {name}")
            return self._runs_window(name, server, port, key, assistant, mode, c)
        return self.least_noisy(attempt, f"(2) {mode}, {c} streams, {name}")

    def _runs_window(self, name: str, server: subprocess.Popen, port: int, key: str, assistant: str,
                     mode: str, c: int) -> dict:
        a = self.args
        nproc = a.client_procs or max(1, -(-c // STREAMS_PER_CLIENT))
        start = time.time() + 1.5 + 0.3 * nproc     # time for the clients to start and connect
        w0 = start + a.warmup
        w1 = w0 + a.seconds
        self.log(f"(2) {mode}, {c:,} streams, {name}: warm-up {a.warmup:g} s, measuring {a.seconds:g} s "
                 f"({nproc} client process{'es' if nproc > 1 else ''})")
        procs = []
        for k in range(nproc):
            share = c // nproc + (1 if k < c % nproc else 0)
            cmd = [PYTHON, str(Path(__file__).resolve()), "_run_client", "--port", str(port), "--key", key,
                   "--assistant", assistant, "--streams", str(share), "--start", repr(start), "--w0", repr(w0),
                   "--w1", repr(w1), "--timeout", str(a.timeout), "--verify-every", str(a.verify_every),
                   "--out", str(self.tmp / f"client-{k}.json")]
            (self.tmp / f"client-{k}.json").unlink(missing_ok=True)
            procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        groups = {"server": [server.pid], "client": [p.pid for p in procs]}
        if name == "Threadline":
            groups["postgres"] = "postgres"
        time.sleep(max(0.0, w0 - time.time()))
        before = self.cpu_snapshot(groups)
        profiler = self.start_profiler(server, f"{mode}-{c}", a.seconds) if name == "Threadline" else None
        time.sleep(max(0.0, w1 - time.time()))
        cpu = self.cpu_delta(before, groups)
        outs = []
        for k, p_ in enumerate(procs):
            stdout, stderr = p_.communicate(timeout=a.timeout + 120)
            out = self.tmp / f"client-{k}.json"
            if p_.returncode != 0 or not out.exists():
                raise SystemExit(f"run client failed ({p_.returncode}):\n{stdout[-2000:]}\n{stderr[-3000:]}")
            outs.append(json.loads(out.read_text()))
        if profiler is not None:
            profiler.wait(60)
        rss = rss_tree(server.pid)[0]
        seconds = w1 - w0
        ttfe = sorted(x for o in outs for x in o["ttfe"])
        answer = sorted(x for o in outs for x in o["answer"])
        sample = "window"
        if len(ttfe) < min(50, c):
            # Overloaded: answers take longer than the window, so few runs are posted inside it.
            # Use every run of the phase (the first ones started together, after a 1 s stagger).
            ttfe = sorted(x for o in outs for x in o["ttfe_all"])
            answer = sorted(x for o in outs for x in o["answer_all"])
            sample = "all runs"
        per_answer = sorted(x for o in outs for x in o["per_answer"])
        errors = [e for o in outs for e in o["errors"]]
        res = {"server": name, "mode": mode, "streams": c, "seconds": seconds, "clients": nproc,
               "deltas": sum(o["deltas"] for o in outs), "frames": sum(o["frames"] for o in outs),
               "bytes": sum(o["bytes"] for o in outs), "runs": sum(o["runs"] for o in outs),
               "completed": sum(o["completed_in_window"] for o in outs),
               "verified": sum(o["verified"] for o in outs), "errors": errors, "cpu": cpu, "rss": rss,
               "ttfe_p50": _pct(ttfe, 50) * 1000, "ttfe_p90": _pct(ttfe, 90) * 1000,
               "ttfe_p99": _pct(ttfe, 99) * 1000, "ttfe_max": ttfe[-1] * 1000 if ttfe else float("nan"),
               "ttfe_n": len(ttfe), "ttfe_sample": sample, "answer_p50": _pct(answer, 50) * 1000,
               "deltas_per_answer": sum(per_answer) / len(per_answer) if per_answer else float("nan")}
        if name == "Threadline":
            res["ttfe_parts"] = self.ttfe_parts([m for o in outs for m in o["marks"]])
        res["rate"] = res["deltas"] / seconds
        res["answers_rate"] = res["completed"] / seconds
        self.log(f"(2) {mode}, {c:,}, {name}: {res['rate']:,.0f} deltas/s, {res['answers_rate']:,.1f} answers/s, "
                 f"{res['deltas_per_answer']:.1f} deltas per answer, TTFE p50 {res['ttfe_p50']:.1f} ms, "
                 f"p99 {res['ttfe_p99']:.1f} ms; errors {len(errors)}; CPU {cpu}"
                 + (f"; TTFE parts {res['ttfe_parts']}" if res.get("ttfe_parts") else ""))
        if errors:
            for e in errors[:5]:
                self.log(f"ERROR {e}")
            self.errors.append(f"(2) {mode}, {c} streams, {name}: {len(errors)} errors (first: {errors[0]})")
        elif not res["deltas"]:
            self.errors.append(f"(2) {mode}, {c} streams, {name}: no delta event inside the window")
        return res

    def ttfe_parts(self, marks: list) -> dict:
        """Where the time to first event goes, from the log: run POST sent → its RunCreated inserted
        (request handling, reads, waiting for the group commit), and → first frame received (the
        commit itself, the stream's log read, the write)."""
        if not marks:
            return {}
        rows = self.db_fetch_all(
            "SELECT stream, extract(epoch FROM recorded_at)::float8 FROM events WHERE type = 'RunCreated' "
            "AND stream = ANY($1::text[])", [f"thread-{t}" for t, _, _ in marks])
        created = {stream[len("thread-"):]: t for stream, t in rows}
        a, b = [], []
        for tid, posted, first in marks:
            if tid in created:
                a.append((created[tid] - posted) * 1000)
                b.append((first - created[tid]) * 1000)
        a.sort()
        b.sort()
        return {"n": len(a), "post_to_created_p50": _pct(a, 50), "post_to_created_p99": _pct(a, 99),
                "created_to_first_p50": _pct(b, 50), "created_to_first_p99": _pct(b, 99)}

    # -- the whole run ----------------------------------------------------------------------------------

    def idle_limit(self) -> int:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return min(self.nofile - 200, hi - lo - 200)

    def run(self) -> int:
        a = self.args
        limit = self.idle_limit()
        if a.idle_streams > limit:
            self.notes.append(f"{a.idle_streams:,} idle streams asked for; the fd limit ({self.nofile:,}) and the "
                              f"local port range allow {limit:,}, so {limit:,} were opened.")
            a.idle_streams = limit
        scripts = self.write_scripts()
        idle: dict[str, dict] = {}
        runs: dict[tuple[str, int, str], dict] = {}
        try:
            server, base, key = self.start_threadline()
            port = int(base.rsplit(":", 1)[1])
            assistants = {mode: self.http_json("POST", base + "/v1/assistants", key,
                                               {"model": f"builtin/script:{path}", "name": f"bench {mode}"})["id"]
                          for mode, path in scripts.items()}
            self.log(f"capture: {a.capture_runs} runs per mode, the last one recorded write by write")
            capture = asyncio.run(self._capture(port, key, assistants))
            self.capture = capture["writes"]
            for mode, w in capture["writes"].items():
                self.log(f"capture {mode}: {w}")
            cap_path = self.tmp / "capture.json"
            cap_path.write_text(json.dumps(capture))
            bare_port = self.free_port()
            env = dict(os.environ, **dict(e.partition("=")[::2] for e in a.env))
            keepalive = float(env.get("THREADLINE_STREAM_KEEPALIVE_SECONDS") or 15)
            self.keepalive = keepalive
            bare = self.spawn([PYTHON, str(Path(__file__).resolve()), "_bare_server", "--port", str(bare_port),
                               "--capture", str(cap_path), "--keepalive", str(keepalive)], "bare")
            self.wait_healthy(bare, f"http://127.0.0.1:{bare_port}", "bare")
            if a.idle_hold <= keepalive:
                self.notes.append(f"--idle-hold {a.idle_hold:g} s is not longer than the keep-alive interval "
                                  f"({keepalive:g} s).")
            if a.idle_streams:
                tids = [self.http_json("POST", base + "/v1/threads", key)["id"] for _ in range(a.idle_threads)]
                idle["bare"] = self.phase_idle("bare", bare, bare_port, "",
                                               [f"thread_idle{i}" for i in range(a.idle_threads)])
                idle["Threadline"] = self.phase_idle("Threadline", server, port, key, tids)
            for mode in a.modes:
                for c in a.concurrency:
                    runs[(mode, c, "bare")] = self.phase_runs("bare", bare, bare_port, "", assistants[mode], mode, c)
                    runs[(mode, c, "Threadline")] = self.phase_runs("Threadline", server, port, key,
                                                                    assistants[mode], mode, c)
            self.pg = self.pg_facts()
            if server.poll() is not None:
                self.errors.append(f"the Threadline server exited with {server.returncode}")
        finally:
            self.cleanup()
        report = self.report(idle, runs)
        print(report["text"])
        if self.errors:
            print("\nINVALID RUN: " + "; ".join(self.errors))
            print("RESULTS.md was not updated.")
            return 1
        if a.profile:
            print(f"\nProfiled run (py-spy attached to the server): figures are perturbed; RESULTS.md was not "
                  f"updated. Profiles in {a.profile}")
        elif a.env:
            print(f"\nExperiment (Threadline env: {' '.join(a.env)}): RESULTS.md was not updated.")
        elif a.no_write or not self.complete():
            print("\nRESULTS.md was not updated" + ("." if a.no_write else
                  " (a partial run: use the default phases and concurrencies to write it)."))
        else:
            self.write_results(report)
            print(f"\nWrote {RESULTS.relative_to(ROOT)}")
        return 0

    def complete(self) -> bool:
        a = self.args
        return set(a.concurrency) >= set(CONCURRENCIES) and set(a.modes) == {"paced", "burst"} and a.idle_streams > 0

    # -- reporting ----------------------------------------------------------------------------------------

    def report(self, idle: dict, runs: dict) -> dict:
        a = self.args
        m = self.machine()
        rows = []

        def yn(ok):
            return "—" if ok is None else ("yes" if ok else "NO")

        def ratio(x: float, y: float) -> str:
            return f"{x / y:.2f}" if y else "—"

        for mode in a.modes:
            for c in a.concurrency:
                t, b = runs.get((mode, c, "Threadline")), runs.get((mode, c, "bare"))
                if not t or not b:
                    continue
                target, ok = "—", None
                if mode == "paced" and c == 100:
                    target, ok = f"≥ {TARGET_RATE_RATIO:.2f} × bare", t["rate"] / b["rate"] >= TARGET_RATE_RATIO
                what = ("delta events/s delivered" if mode == "paced" else "answers/s streamed (burst: 1 delta each)")
                rows.append((f"{what}, {c:,} stream{'s' if c > 1 else ''} ({mode})", f"{t['rate']:,.0f}", f"{b['rate']:,.0f}",
                             ratio(t["rate"], b["rate"]), target, ok))
        for mode in a.modes:
            for c in a.concurrency:
                t, b = runs.get((mode, c, "Threadline")), runs.get((mode, c, "bare"))
                if not t or not b:
                    continue
                target, ok = "—", None
                if c == 100 and mode == "paced":
                    target, ok = f"p99 ≤ {TARGET_TTFE_P99_MS:g} ms", t["ttfe_p99"] <= TARGET_TTFE_P99_MS
                label = mode
                if t["ttfe_sample"] != "window" or b["ttfe_sample"] != "window":
                    label += ", all runs of the phase"
                rows.append((f"time to first event p50 / p99, {c:,} stream{'s' if c > 1 else ''} ({label})",
                             f"{t['ttfe_p50']:.1f} / {t['ttfe_p99']:.1f} ms",
                             f"{b['ttfe_p50']:.1f} / {b['ttfe_p99']:.1f} ms", "—", target, ok))
        ti, bi = idle.get("Threadline"), idle.get("bare")
        if ti and bi:
            rows.append(("idle streams held", f"{ti['opened']:,}", f"{bi['opened']:,}", "—",
                         f"≥ {TARGET_IDLE_STREAMS:,}", ti["opened"] >= TARGET_IDLE_STREAMS))
            rows.append(("service memory (RSS) holding them", mib(ti["rss_held"]), mib(bi["rss_held"]),
                         ratio(ti["rss_held"], bi["rss_held"]), "< 1 GB",
                         ti["rss_held"] < TARGET_IDLE_BYTES and ti["opened"] >= TARGET_IDLE_STREAMS))
            rows.append(("memory per idle stream", f"{ti['per_stream'] / 1024:.1f} KiB",
                         f"{bi['per_stream'] / 1024:.1f} KiB", ratio(ti["per_stream"], bi["per_stream"]), "—", None))
            rows.append((f"server CPU holding them (keep-alive every {getattr(self, 'keepalive', 15):g} s)",
                         f"{ti['cpu'].get('server', 0)}% of a core", f"{bi['cpu'].get('server', 0)}% of a core",
                         "—", "—", None))
            last = f"one message to each of {a.idle_threads} threads: last of the {ti['opened']:,} streams has it"
            rows.append((last, ms((ti["broadcast_last"] or float("nan")) * 1000),
                         ms((bi["broadcast_last"] or float("nan")) * 1000), "—", "—", None))
        table = ("| figure | Threadline | bare aiohttp SSE | ratio | target | met? |\n|---|---|---|---|---|---|\n"
                 + "".join(f"| {f} | {v} | {bl} | {r} | {t} | {yn(ok)} |\n" for f, v, bl, r, t, ok in rows))

        def cpu(d: dict) -> str:
            return ", ".join(f"{k} {v}%" for k, v in (d or {}).items())

        detail = ("| phase | server | delta events/s | answers/s | deltas per answer | frames/s | MB/s | "
                  "TTFE p50 / p90 / p99 / max ms | answer p50 ms | runs checked (text) | errors | "
                  "CPU (% of one core) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
        for (mode, c, name), r in runs.items():
            detail += (f"| {mode}, {c:,} streams | {name} | {r['rate']:,.0f} | {r['answers_rate']:,.1f} | "
                       f"{r['deltas_per_answer']:.1f} | {r['frames'] / r['seconds']:,.0f} | "
                       f"{r['bytes'] / r['seconds'] / 1e6:.2f} | {r['ttfe_p50']:.1f} / {r['ttfe_p90']:.1f} / "
                       f"{r['ttfe_p99']:.1f} / {r['ttfe_max']:.1f}"
                       + (f" ({r['ttfe_n']:,} runs{'' if r['ttfe_sample'] == 'window' else ', all of the phase: see note'})")
                       + f" | {r['answer_p50']:.0f} | "
                       f"{r['runs']:,} ({r['verified']}) | {len(r['errors'])} | {cpu(r['cpu'])} |\n")
        parts = [(k, r["ttfe_parts"]) for k, r in runs.items() if r.get("ttfe_parts")]
        if parts:
            detail += ("\nWhere Threadline's time to first event goes (clock of this machine; `recorded_at` of the run's "
                       "`RunCreated` from the log, stamped at its insert, before its commit):\n\n"
                       "| window | runs | run POST sent → RunCreated inserted, p50 / p99 ms | "
                       "RunCreated inserted → first frame received, p50 / p99 ms |\n|---|---|---|---|\n"
                       + "".join(f"| {mode}, {c:,} streams | {p['n']:,} | {p['post_to_created_p50']:.1f} / "
                                 f"{p['post_to_created_p99']:.1f} | {p['created_to_first_p50']:.1f} / "
                                 f"{p['created_to_first_p99']:.1f} |\n" for (mode, c, _), p in parts))
        idle_detail = ""
        if idle:
            idle_detail = ("| idle phase | streams | opened in | RSS before | RSS all open | RSS after the hold | "
                           "per stream | RSS after closing | broadcast p50 / last | CPU during the hold |\n"
                           "|---|---|---|---|---|---|---|---|---|---|\n")
            for name, r in idle.items():
                idle_detail += (f"| {name} | {r['opened']:,} | {r['ramp_seconds']:.1f} s | {mib(r['rss_before'])} | "
                                f"{mib(r['rss_ready'])} | {mib(r['rss_held'])} | {r['per_stream'] / 1024:.1f} KiB | "
                                f"{mib(r['rss_after_close'])} | {ms((r['broadcast_p50'] or float('nan')) * 1000)} / "
                                f"{ms((r['broadcast_last'] or float('nan')) * 1000)} | {cpu(r.get('cpu'))} |\n")
        pg = getattr(self, "pg", None) or {}
        cap = getattr(self, "capture", {})
        capture = "; ".join(f"{mode}: {w['frames']} frames ({w['deltas']} deltas) in {w['writes']} writes, "
                            f"{w['bytes']:,} bytes, {w['duration_ms']:.0f} ms" for mode, w in cap.items())
        setup = (
            f"- Model: `builtin/script` playing one turn of 200 one-word chunks ({len(ANSWER):,} characters). "
            f"paced: `chunk_delay` {a.chunk_delay:g} s (200 tokens in ≈ {200 * a.chunk_delay:g} s); burst: none. "
            f"The engine gathers tokens for 50 ms into one `MessageTextAppended` event; a **delta event** is one "
            f"`thread.message.delta` frame received by a client (paced: ≈ 50 ms of tokens; burst: the whole "
            f"answer, so burst deltas/s = answers/s).\n"
            f"- Captured Threadline stream per answer (replayed by the bare server): {capture}.\n"
            f"- Run streams: each client stream loops POST /v1/threads (one user message, untimed) → POST "
            f"/v1/threads/{{id}}/runs `\"stream\": true` → read to `done`, on one keep-alive connection; "
            f"{a.warmup:g} s warm-up then {a.seconds:g} s measured per window. Delta events/s = delta frames "
            f"received inside the window ÷ window; TTFE = run POST sent → first complete frame "
            f"(`thread.run.created`), runs posted inside the window (when fewer than min(50, streams) were, as when an "
            f"overloaded server's answers outlast the window: every run of the phase, the first wave included, "
            f"marked in the table). Every stream checked for 200, "
            f"`thread.run.completed` and `done`; 1 in {a.verify_every} also for the exact answer text.\n"
            f"- Clients: raw asyncio HTTP/1.1 + uvloop processes (one per {STREAMS_PER_CLIENT} streams), counting "
            f"frames without parsing JSON.\n"
            f"- Bare baseline: one aiohttp + uvloop process; per run request it decodes the JSON body and writes "
            f"the captured writes (paced: at their captured offsets from `thread.message.in_progress`, i.e. the "
            f"model's pacing; burst: back to back); answers POST /v1/threads with a small JSON; idle streams get "
            f"the captured first frame, then `event: ping` every {getattr(self, 'keepalive', 15):g} s (as Threadline's "
            f"default keep-alive); a posted message is written to the thread's subscribers from memory.\n"
            f"- Idle streams: `GET /v1/threads/{{id}}/stream` over {a.idle_threads} threads, at most "
            f"{a.ramp_parallel} opening at a time, held {a.idle_hold:g} s (every stream must get a keep-alive "
            f"and stay open). RSS = VmRSS of the server process and its children (the embedded PostgreSQL is not "
            f"one); per stream = (RSS after the hold − RSS before opening) ÷ streams. fd limit "
            f"{self.nofile:,} (soft raised to hard in every process).\n"
            f"- Threadline: `python -m service serve`, default configuration (its log goes to a file"
            f"{'; extra env: ' + ' '.join(a.env) if a.env else ''}), "
            f"{'$DATABASE_URL' if os.environ.get('DATABASE_URL') else 'fresh embedded PostgreSQL'}"
            + (f": PostgreSQL {pg.get('version')}, synchronous_commit={pg.get('synchronous_commit')}, "
               f"fsync={pg.get('fsync')}, shared_buffers={pg.get('shared_buffers')}" if pg else "") + ".\n"
            f"- CPU column: % of one core during the measured window (see ops/bench/appends.py): `other` is "
            f"anything else on this shared machine, `steal` is the hypervisor's. A window with other + steal > "
            f"{a.max_other:g}% is measured again (≤ {a.attempts} windows) and the quietest kept.\n")
        setup += self.notes_text()
        machine = self.machine_line(m)
        text = ("\n" + table + "\n" + detail + "\n" + idle_detail + "\n" + setup + "\n" + machine + "\n")

        def g(mode, c, name, k, fmt="{:,.0f}"):
            r = runs.get((mode, c, name))
            return fmt.format(r[k]) if r else "—"
        paced = " | ".join(f"{g('paced', c, 'Threadline', 'rate')} / {g('paced', c, 'bare', 'rate')}"
                           for c in CONCURRENCIES)
        held = f"{ti['opened']:,} | {mib(ti['rss_held'])} | {ti['per_stream'] / 1024:.1f} KiB" if ti else "— | — | —"
        history = self.history_row(m, f"{paced} | {g('paced', 100, 'Threadline', 'ttfe_p99', '{:.1f}')} | {held} | "
                                      f"{a.seconds:g} s")
        return {"table": table, "detail": detail, "idle": idle_detail, "setup": setup, "machine": machine,
                "text": text, "history": history}

    def write_results(self, report: dict) -> None:
        write_report(
            "streams", "SSE streams (`ops/bench/streams.py`)",
            "Run streams (`\"stream\": true`) and idle thread streams against a bare aiohttp SSE server that "
            "replays the same frames from memory, measured back to back in the same run.",
            f".venv/bin/python ops/bench/streams.py --seconds {self.args.seconds:g}", report,
            ["date", "code", "machine", "paced deltas/s @1 (Threadline / bare)", "@100", "@1,000", "TTFE p99 @100 ms",
             "idle streams", "RSS", "per stream", "window"], extra=("idle",))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        mode, rest = sys.argv[1], sys.argv[2:]
        {"_run_client": child_run_client, "_idle_client": child_idle_client,
         "_bare_server": child_bare_server}[mode](rest)
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10, help="measured window per run-stream phase (default 10)")
    p.add_argument("--warmup", type=float, default=3, help="warm-up per run-stream phase (default 3)")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",") if x], default=list(CONCURRENCIES),
                   help="concurrent run streams, comma-separated (default 1,100,1000)")
    p.add_argument("--modes", type=lambda s: [m for m in s.split(",") if m], default=["paced", "burst"],
                   help="paced,burst (default both; '' skips the run-stream phases)")
    p.add_argument("--chunk-delay", type=float, default=PACED_CHUNK_DELAY,
                   help=f"seconds between the paced model's chunks (default {PACED_CHUNK_DELAY})")
    p.add_argument("--idle-streams", type=int, default=TARGET_IDLE_STREAMS,
                   help="idle thread streams to open (default 10,000; capped by the fd limit; 0 skips the phase)")
    p.add_argument("--idle-threads", type=int, default=10, help="threads the idle streams are spread over (default 10)")
    p.add_argument("--idle-hold", type=float, default=20,
                   help="seconds the idle streams are held (default 20: more than one 15 s keep-alive)")
    p.add_argument("--ramp-parallel", type=int, default=200, help="idle streams opening at a time (default 200)")
    p.add_argument("--client-procs", type=int, default=0,
                   help=f"client processes per window (default: one per {STREAMS_PER_CLIENT} streams)")
    p.add_argument("--capture-runs", type=int, default=3, help="runs per mode; the last one is captured (default 3)")
    p.add_argument("--verify-every", type=int, default=20, help="check the full answer text of 1 stream in N")
    p.add_argument("--timeout", type=float, default=60, help="a stream not done after this many seconds is an error")
    bench_options(p, attempts=2)
    args = parse_bench_args(p)
    return StreamsBench(args).run()


if __name__ == "__main__":
    sys.exit(main())
