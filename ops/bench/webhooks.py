#!/usr/bin/env python3
"""Webhooks benchmark: events delivered per second to a local receiver with 10 subscriptions, and
the lag from an event's commit to its delivery, against the receiver's own capacity measured in
the same run.

    .venv/bin/python ops/bench/webhooks.py [--seconds 20] [--warmup 5] [--rates 100,500]

`python -m service serve` runs as a subprocess on a fresh embedded PostgreSQL in a temp directory
(or on $DATABASE_URL when set), started exactly as ops/bench/appends.py starts it (this script
reuses its `Bench` helpers: server start, quiet-machine wait, CPU accounting, machine facts), with
THREADLINE_WEBHOOK_ALLOW_HTTP=1 and THREADLINE_WEBHOOK_ALLOW_NETWORKS=127.0.0.0/8 so that it may
deliver to a loopback receiver over http. Everything else is the default configuration (among it
THREADLINE_WEBHOOK_CONCURRENCY=64: attempts in flight per subscription, one per thread).

Processes (each its own, uvloop):
  - receiver: a minimal HTTP/1.1 server (an asyncio Protocol, keep-alive) answering 200 at once to
    POST /s0 … /s9 (one path per subscription). For each request it notes time.monotonic() when
    the request is whole (CLOCK_MONOTONIC is system-wide on Linux, so comparable with the driver's),
    time.time(), the signature headers and the body. When the driver takes the records (after the window) it verifies the signature of every
    request with the `standardwebhooks` package (the subscription's secret; a failure is an error)
    and reads the body's `id` (= `webhook-id`), `type`, `data.id` and `data.thread_id`. Checking
    later keeps the receiver's CPU off the two cores Threadline is measured on: a webhook receiver
    is someone else's machine.
  - driver: appends user messages through the HTTP API (POST /v1/threads/{id}/messages, rotating
    over 50 threads) at a fixed open-loop rate: message k is due at start + k / rate, whatever the
    answers to earlier ones (no coordinated omission). It notes each message's due time, send time
    and the time its 200 arrived (the commit acknowledged), and the message id from the answer.
  - Threadline, and its PostgreSQL.
10 subscriptions (`events: ["thread.message.created"]`), all to that receiver, so each message
makes 10 deliveries: 500 messages/s is 5,000 deliveries/s.

Phases (each: wait for a quiet machine, --warmup s at the rate, then --seconds measured, then wait
until every delivery arrived; nothing else runs meanwhile):
  (1) Threadline at each rate of --rates (default 100/s and 500/s, the target's rate).
  (2) Sweep: a short bisection (--sweep-steps windows of --sweep-seconds) between the highest rate
      that met "lag p99 ≤ 250 ms" and the lowest that did not; when every rate of --rates met it,
      2 × the highest is tried first, so the report says where the limit is.
  (3) Baseline, the receiver's own capacity: a plain aiohttp client process posts bodies and
      headers captured from real deliveries of phase (1) to the same receiver (same paths, so the
      same signature checks), with the concurrency Threadline may use (10 subscriptions × 64 in
      flight = 640 connections), closed loop, as fast as it answers: deliveries/s.

Figures, per rate, over the deliveries of messages due inside the measured window:
  - lag = receiver arrival − ack (the driver got the append's 200: the event is committed). The
    commit happened before the ack, so this is a lower bound of the commit → delivery lag; two
    upper bounds are reported too: arrival − send (the driver sent the append) and arrival −
    `recorded_at` of the MessageCreated event (clock_timestamp() at its INSERT, before the commit;
    wall clocks of the same machine). p50/p90/p99/max over every (message, subscription) pair.
  - delivered/s: deliveries that arrived inside the measured window ÷ window.
  - expected vs received: every message (warm-up included) must reach every subscription;
    duplicates (the same webhook-id twice at one subscription) are counted, not an error;
    a thread's deliveries must arrive in log order at each subscription.
  - CPU per process group during the window (server, postgres, receiver, driver; see appends.py).

A missing delivery, a failed signature, an out-of-order delivery, a failed append or a non-200
makes the run invalid: the script says so, exits 1 and does not touch RESULTS.md. Otherwise it
prints a table with the target and rewrites the `webhooks` section of ops/bench/RESULTS.md.
--profile DIR attaches py-spy to the server during each measured window (raw collapsed stacks;
such a run does not write RESULTS.md); so does --env NAME=VALUE (an experiment).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
from harness import BODY, PYTHON, Bench, _install_uvloop, _pct, bench_options, parse_bench_args, pct_ms  # noqa: E402
from results import RESULTS, write_report  # noqa: E402

SUBSCRIPTIONS = 10
EVENT_TYPE = "thread.message.created"
TARGET_RATE = 500             # messages/s
TARGET_P99_MS = 250.0         # commit → delivery lag, p99
PER_SUB_CONCURRENCY = 64      # THREADLINE_WEBHOOK_CONCURRENCY default: the baseline's concurrency per path


# ================================================================================================
# Child modes (`webhooks.py _mode ...`): the receiver, the driver, the receiver's baseline load.
# ================================================================================================

def child_receiver(argv: list[str]) -> None:
    """Answers 200 at once; records arrival, ids and type; verifies every signature."""
    import msgspec
    from standardwebhooks import Webhook

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--samples", type=int, default=400, help="requests kept whole for the baseline")
    args = p.parse_args(argv)
    _install_uvloop()
    verifiers: dict[str, tuple[int, Webhook]] = {}
    records: list[tuple] = []
    samples: list[tuple] = []
    stats = {"bad_signature": 0, "unknown_path": 0, "first_bad": None}
    clock, wall = time.monotonic, time.time
    decode = msgspec.json.decode

    signed = ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type")
    arrived: list[tuple] = []     # (path, t, w, headers, body): checked and decoded when taken

    def check_arrivals() -> None:
        nonlocal arrived
        batch, arrived = arrived, []
        for path, t, w, values, body in batch:
            held = verifiers.get(path)
            if held is None:
                stats["unknown_path"] += 1
                stats["first_bad"] = stats["first_bad"] or f"unknown path {path}"
                continue
            idx, verifier = held
            headers = dict(zip(signed, values))
            try:
                verifier.verify(body, headers, json_parse=False)
            except Exception as exc:  # noqa: BLE001 - counted; any failure invalidates the run
                stats["bad_signature"] += 1
                stats["first_bad"] = stats["first_bad"] or f"{path}: {exc!r}"
            doc = decode(body)
            data = doc.get("data") or {}
            records.append((idx, t, w, doc.get("id"), doc.get("type"), data.get("id"), data.get("thread_id")))
            if len(samples) < args.samples:
                samples.append((path, headers, body.decode()))

    def control(method: str, target: str, body: bytes) -> bytes:
        nonlocal records
        path, _, query = target.partition("?")
        if method == "POST" and path == "/_secrets":
            for hook_path, secret in msgspec.json.decode(body).items():
                verifiers[hook_path] = (int(hook_path.lstrip("/s")), Webhook(secret))
            return msgspec.json.encode({"paths": len(verifiers)})
        if path == "/_count":
            return msgspec.json.encode({"count": len(records) + len(arrived)})
        if path == "/_take":
            check_arrivals()
            out, records = records, []
            kept = list(samples) if "samples=" in query else []
            samples.clear()
            answer = msgspec.json.encode({"records": out, "samples": kept, **stats})
            stats.update(bad_signature=0, unknown_path=0, first_bad=None)
            return answer
        return b'{"status":"ok"}'

    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    class Receiver(asyncio.Protocol):
        """A minimal HTTP/1.1 server (keep-alive, Content-Length bodies): a delivery costs it a
        buffer split and a list append, so the receiver's CPU stays off Threadline's cores (in
        production a receiver is someone else's machine). Arrival is noted when a request is whole."""

        def connection_made(self, transport):
            self.transport, self.buf = transport, b""

        def data_received(self, data: bytes) -> None:
            t, w = clock(), wall()
            buf = self.buf + data
            out = []
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                lines = buf[:end].split(b"\r\n")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower().decode()] = value.strip().decode()
                length = int(headers.get("content-length", "0"))
                if len(buf) < end + 4 + length:
                    break
                body, buf = buf[end + 4:end + 4 + length], buf[end + 4 + length:]
                method, target, _ = lines[0].decode().split(" ", 2)
                if target.startswith("/_") or method != "POST":
                    answer = control(method, target, body)
                    out.append(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                               % (len(answer), answer))
                else:
                    arrived.append((target, t, w, tuple(headers.get(k, "") for k in signed), body))
                    out.append(ok)
            self.buf = buf
            if out:
                self.transport.write(b"".join(out))

    async def main() -> None:
        import signal
        server = await asyncio.get_running_loop().create_server(Receiver, "127.0.0.1", args.port, backlog=1024)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()

    asyncio.run(main())


def child_driver(argv: list[str]) -> None:
    """Open-loop appends: message k due at start + k / rate, rotating over the threads."""
    import aiohttp
    import msgspec

    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ids", required=True, help="file with one thread id per line")
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--start-at", type=float, required=True, help="time.monotonic() of the first message")
    p.add_argument("--warmup", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--connections", type=int, default=128)
    p.add_argument("--out", required=True, help="JSON results go to this file (too big for a pipe)")
    args = p.parse_args(argv)
    _install_uvloop()
    ids = Path(args.ids).read_text().split()
    body = BODY.encode()
    decode = msgspec.json.decode

    async def main() -> dict:
        sent: list[tuple] = []
        state = {"non200": 0, "errors": 0, "first_bad": None, "behind_ms": 0.0}
        w0 = args.start_at + args.warmup
        total = int(round((args.warmup + args.seconds) * args.rate))
        clock = time.monotonic
        conn = aiohttp.TCPConnector(limit=args.connections)
        async with aiohttp.ClientSession(args.base, connector=conn, headers={
                "Authorization": f"Bearer {args.key}", "Content-Type": "application/json"}) as session:
            async def one(k: int, due: float) -> None:
                tid = ids[k % len(ids)]
                t_send = clock()
                try:
                    async with session.post(f"/v1/threads/{tid}/messages", data=body) as r:
                        raw = await r.read()
                        t_ack = clock()
                        if r.status != 200:
                            state["non200"] += 1
                            state["first_bad"] = state["first_bad"] or f"{r.status} {raw[:200]!r}"
                            return
                except Exception as exc:  # noqa: BLE001 - counted; any error invalidates the run
                    state["errors"] += 1
                    state["first_bad"] = state["first_bad"] or repr(exc)
                    return
                sent.append((decode(raw)["id"], due, t_send, t_ack, 1 if due >= w0 else 0))

            tasks = set()
            k = 0
            while k < total:
                now = clock()
                while k < total and (due := args.start_at + k / args.rate) <= now:
                    state["behind_ms"] = max(state["behind_ms"], (now - due) * 1000)
                    task = asyncio.create_task(one(k, due))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    k += 1
                if k < total:
                    await asyncio.sleep(max(0.0, args.start_at + k / args.rate - clock()))
            await asyncio.gather(*list(tasks))
        return {"sent": sent, "due": total, **state}

    Path(args.out).write_text(json.dumps(asyncio.run(main())))


def child_flood(argv: list[str]) -> None:
    """Baseline: post captured deliveries (body and headers) to the receiver, closed loop. They are
    signed again once at the start (same secrets, a fresh timestamp: the receiver refuses stale ones)."""
    import aiohttp
    from standardwebhooks import Webhook

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--samples", required=True, help="JSON file: [[path, headers, body], ...]")
    p.add_argument("--secrets", required=True, help="JSON file: {path: secret}")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--warmup", type=float, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--start-at", type=float, required=True)
    args = p.parse_args(argv)
    _install_uvloop()
    signers = {path: Webhook(secret) for path, secret in json.loads(Path(args.secrets).read_text()).items()}
    samples = []
    for path, headers, body in json.loads(Path(args.samples).read_text()):
        stamp = datetime.datetime.now(datetime.timezone.utc)
        headers = dict(headers, **{"webhook-timestamp": str(int(stamp.timestamp())),
                                   "webhook-signature": signers[path].sign(headers["webhook-id"], stamp, body)})
        samples.append((path, headers, body.encode()))

    async def main() -> dict:
        clock = time.monotonic
        w0, w1 = args.start_at + args.warmup, args.start_at + args.warmup + args.seconds
        lat: list[float] = []
        state = {"non200": 0, "errors": 0, "first_bad": None, "counter": 0}
        await asyncio.sleep(max(0.0, args.start_at - clock()))
        conn = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{args.port}", connector=conn) as session:
            async def worker() -> None:
                while (t0 := clock()) < w1:
                    state["counter"] += 1
                    path, headers, body = samples[state["counter"] % len(samples)]
                    try:
                        async with session.post(path, data=body, headers=headers) as r:
                            await r.read()
                            if r.status != 200:
                                state["non200"] += 1
                                state["first_bad"] = state["first_bad"] or str(r.status)
                    except Exception as exc:  # noqa: BLE001
                        state["errors"] += 1
                        state["first_bad"] = state["first_bad"] or repr(exc)
                        continue
                    t1 = clock()
                    if t0 >= w0 and t1 <= w1:
                        lat.append(t1 - t0)
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        lat.sort()
        return {"p50_ms": _pct(lat, 50) * 1000, "p99_ms": _pct(lat, 99) * 1000, "timed": len(lat),
                "non200": state["non200"], "errors": state["errors"], "first_bad": state["first_bad"]}

    print("BENCHJSON " + json.dumps(asyncio.run(main())), flush=True)


# ================================================================================================
# The orchestrator
# ================================================================================================

class WebhooksBench(Bench):
    def __init__(self, args: argparse.Namespace):
        args.loadgen = "python"          # Bench's load generators are not used here
        super().__init__(args)
        # The server may deliver to the loopback receiver over plain http (the defaults refuse both).
        os.environ["THREADLINE_WEBHOOK_ALLOW_HTTP"] = "1"
        os.environ["THREADLINE_WEBHOOK_ALLOW_NETWORKS"] = "127.0.0.0/8"
        self.errors: list[str] = []
        self.phases: list[dict] = []

    # -- the receiver ----------------------------------------------------------------------------

    def recv(self, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(self.recv_base + path, method="POST" if body is not None else "GET",
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())

    def start_receiver(self) -> subprocess.Popen:
        port = self.free_port()
        self.recv_port, self.recv_base = port, f"http://127.0.0.1:{port}"
        proc = self.spawn([PYTHON, str(Path(__file__).resolve()), "_receiver", "--port", str(port)], "receiver")
        self.wait_healthy(proc, self.recv_base, "receiver")
        return proc

    # -- one rate -------------------------------------------------------------------------------------

    def phase_rate(self, rate: float, seconds: float, what: str) -> dict:
        def attempt() -> dict:
            self.wait_quiet(what)
            return self.rate_window(rate, seconds, what)
        res = self.least_noisy(attempt, what)
        self.phases.append(res)
        return res

    def rate_window(self, rate: float, seconds: float, what: str) -> dict:
        a = self.args
        self.recv("/_take")                     # anything earlier (nothing should be left) is not ours
        p0 = self.db_fetchval("SELECT coalesce(max(position), 0) FROM events")
        start_at = time.monotonic() + 1.0
        w0, w1 = start_at + a.warmup, start_at + a.warmup + seconds
        self.log(f"{what}: {rate:g} messages/s × {SUBSCRIPTIONS} subscriptions, warm-up {a.warmup:g} s, "
                 f"measuring {seconds:g} s")
        cmd = [PYTHON, str(Path(__file__).resolve()), "_driver", "--base", self.base, "--key", self.key,
               "--ids", str(self.idfile), "--rate", str(rate), "--start-at", repr(start_at),
               "--warmup", str(a.warmup), "--seconds", str(seconds), "--out", str(self.tmp / "driver.json")]
        (self.tmp / "driver.json").unlink(missing_ok=True)
        driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        groups = {"server": [self.server.pid], "postgres": "postgres", "receiver": [self.receiver.pid],
                  "driver": [driver.pid]}
        time.sleep(max(0.0, w0 - time.monotonic()))
        before = self.cpu_snapshot(groups)
        profiler = self.start_profiler(self.server, f"rate{rate:g}", seconds)
        time.sleep(max(0.0, w1 - time.monotonic()))
        cpu = self.cpu_delta(before, groups)
        stdout, stderr = driver.communicate(timeout=seconds + a.warmup + 300)
        if profiler is not None:
            profiler.wait(60)
        if driver.returncode != 0 or not (self.tmp / "driver.json").exists():
            raise SystemExit(f"driver failed ({driver.returncode}):\n{stdout[-2000:]}\n{stderr[-3000:]}")
        drv = json.loads((self.tmp / "driver.json").read_text())
        sent = drv["sent"]
        expected = len(sent) * SUBSCRIPTIONS
        # Wait for every delivery (a backlog drains here; its lags count as they are).
        t_end = time.monotonic()
        deadline = t_end + a.drain_timeout
        got = 0
        while time.monotonic() < deadline:
            got = self.recv("/_count")["count"]
            if got >= expected:
                break
            time.sleep(0.2)
        drained = time.monotonic() - t_end
        time.sleep(0.5)                      # late duplicates, if any, are counted too
        taken = self.recv("/_take?samples=1")
        if taken["samples"]:
            self.samples = taken["samples"]
        recorded = dict(self.db_fetch_all(
            "SELECT data->>'message_id', extract(epoch FROM recorded_at)::float8 FROM events "
            "WHERE position > $1 AND type = 'MessageCreated'", p0))
        res = self.analyse(rate, seconds, w0, w1, drv, taken, recorded, what)
        res.update(cpu=cpu, drain_s=drained)
        self.log(f"{what}: delivered {res['delivered_rate']:,.0f}/s in the window; lag ack→delivery "
                 f"p50 {res['lag']['p50']:.1f} ms, p99 {res['lag']['p99']:.1f} ms, max {res['lag']['max']:.1f} ms; "
                 f"{res['received_pairs']:,}/{res['expected']:,} deliveries, {res['duplicates']} duplicates; "
                 f"cpu {cpu}")
        return res

    def analyse(self, rate: float, seconds: float, w0: float, w1: float, drv: dict, taken: dict,
                recorded: dict, what: str) -> dict:
        problems = []
        if drv["non200"] or drv["errors"]:
            problems.append(f"{drv['non200']} non-200 appends, {drv['errors']} socket errors "
                            f"(first: {drv['first_bad']})")
        if taken["bad_signature"] or taken["unknown_path"]:
            problems.append(f"receiver: {taken['bad_signature']} bad signatures, {taken['unknown_path']} unknown "
                            f"paths (first: {taken['first_bad']})")
        msgs = {m[0]: m for m in drv["sent"]}            # id -> (id, due, send, ack, measured)
        first: dict[tuple[int, str], tuple] = {}
        seen_ids: set[tuple[int, str]] = set()
        duplicates = foreign = wrong_type = 0
        in_window = 0
        order: dict[tuple[int, str], list[tuple[float, int]]] = {}
        for rec in taken["records"]:
            idx, t, w, event_id, typ, data_id, thread_id = rec
            if w0 <= t < w1:
                in_window += 1
            if typ != EVENT_TYPE:
                wrong_type += 1
            if (idx, event_id) in seen_ids:
                duplicates += 1
                continue
            seen_ids.add((idx, event_id))
            order.setdefault((idx, thread_id), []).append((t, int(event_id.split("_")[1])))
            if data_id not in msgs:
                foreign += 1
                continue
            first.setdefault((idx, data_id), rec)
        out_of_order = 0
        for arrivals in order.values():
            arrivals.sort()
            out_of_order += sum(1 for a, b in zip(arrivals, arrivals[1:]) if b[1] < a[1])
        expected = len(msgs) * SUBSCRIPTIONS
        missing = expected - len(first)
        if missing:
            problems.append(f"{missing} of {expected} deliveries never arrived (waited {self.args.drain_timeout:g} s)")
        if out_of_order:
            problems.append(f"{out_of_order} deliveries arrived out of their thread's order")
        if wrong_type:
            problems.append(f"{wrong_type} deliveries of another type than {EVENT_TYPE}")
        lag, upper, inserted, append = [], [], [], []
        per_sub: dict[int, list[float]] = {}
        for (idx, data_id), rec in first.items():
            m = msgs[data_id]
            if not m[4]:
                continue
            lag.append(rec[1] - m[3])
            upper.append(rec[1] - m[2])
            per_sub.setdefault(idx, []).append(rec[1] - m[3])
            if data_id in recorded:
                inserted.append(rec[2] - recorded[data_id])
        measured = [m for m in msgs.values() if m[4]]
        append = sorted(m[3] - m[2] for m in measured)
        for xs in (lag, upper, inserted):
            xs.sort()
        for xs in per_sub.values():
            xs.sort()
        last_arrival = max((r[1] for r in first.values()), default=w1)

        def stats(xs: list[float]) -> dict:
            return {"p50": pct_ms(xs, 50), "p90": pct_ms(xs, 90), "p99": pct_ms(xs, 99),
                    "max": xs[-1] * 1000 if xs else float("nan"), "min": xs[0] * 1000 if xs else float("nan"),
                    "n": len(xs)}
        for p in problems:
            self.log(f"ERROR {what}: {p}")
        self.errors.extend(f"{what}: {p}" for p in problems)
        sub_p99 = [pct_ms(xs, 99) for xs in per_sub.values()]
        return {"rate": rate, "seconds": seconds, "messages": len(msgs), "measured_messages": len(measured),
                "achieved_rate": len(measured) / seconds, "expected": expected, "received_pairs": len(first),
                "records": len(taken["records"]), "duplicates": duplicates, "foreign": foreign,
                "missing": missing, "out_of_order": out_of_order,
                "delivered_rate": in_window / seconds, "lag": stats(lag), "upper": stats(upper),
                "inserted": stats(inserted), "append": stats(append), "behind_ms": drv["behind_ms"],
                "sub_p99_range": (min(sub_p99), max(sub_p99)) if sub_p99 else (float("nan"), float("nan")),
                "tail_s": max(0.0, last_arrival - w1), "met": not problems and stats(lag)["p99"] <= TARGET_P99_MS}

    # -- the baseline ---------------------------------------------------------------------------------

    def phase_baseline(self) -> dict:
        def attempt() -> dict:
            self.wait_quiet("(3) receiver baseline")
            return self.baseline_window()
        return self.least_noisy(attempt, "(3) receiver baseline")

    def baseline_window(self) -> dict:
        a = self.args
        concurrency = SUBSCRIPTIONS * PER_SUB_CONCURRENCY
        samples = self.tmp / "samples.json"
        samples.write_text(json.dumps(self.samples))
        secrets = self.tmp / "secrets.json"
        secrets.write_text(json.dumps(self.secrets))
        self.recv("/_take")
        start_at = time.monotonic() + 1.0
        w0, w1 = start_at + a.warmup, start_at + a.warmup + a.baseline_seconds
        self.log(f"(3) receiver baseline: {concurrency} connections, warm-up {a.warmup:g} s, "
                 f"measuring {a.baseline_seconds:g} s")
        cmd = [PYTHON, str(Path(__file__).resolve()), "_flood", "--port", str(self.recv_port),
               "--samples", str(samples), "--secrets", str(secrets), "--seconds", str(a.baseline_seconds), "--warmup", str(a.warmup),
               "--concurrency", str(concurrency), "--start-at", repr(start_at)]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        groups = {"receiver": [self.receiver.pid], "client": [proc.pid]}
        time.sleep(max(0.0, w0 - time.monotonic()))
        before = self.cpu_snapshot(groups)
        time.sleep(max(0.0, w1 - time.monotonic()))
        cpu = self.cpu_delta(before, groups)
        stdout, stderr = proc.communicate(timeout=a.warmup + a.baseline_seconds + 120)
        line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
        if proc.returncode != 0 or line is None:
            raise SystemExit(f"baseline client failed ({proc.returncode}):\n{stdout[-2000:]}\n{stderr[-3000:]}")
        res = json.loads(line[len("BENCHJSON "):])
        taken = self.recv("/_take")
        in_window = sum(1 for r in taken["records"] if w0 <= r[1] < w1)
        res.update(rate=in_window / a.baseline_seconds, cpu=cpu, concurrency=concurrency,
                   bad_signature=taken["bad_signature"], received=len(taken["records"]))
        problems = []
        if res["non200"] or res["errors"]:
            problems.append(f"{res['non200']} non-200, {res['errors']} errors (first: {res['first_bad']})")
        if taken["bad_signature"] or taken["unknown_path"]:
            problems.append(f"receiver: {taken['bad_signature']} bad signatures (first: {taken['first_bad']})")
        self.errors.extend(f"(3) receiver baseline: {p}" for p in problems)
        self.log(f"(3) receiver baseline: {res['rate']:,.0f} deliveries/s, p50 {res['p50_ms']:.1f} ms, "
                 f"p99 {res['p99_ms']:.1f} ms; cpu {cpu}")
        return res

    # -- helpers --------------------------------------------------------------------------------------

    # -- the whole run --------------------------------------------------------------------------------

    def run(self) -> int:
        a = self.args
        rates: dict[float, dict] = {}
        sweep: list[float] = []
        baseline = None
        pg = {}
        try:
            self.receiver = self.start_receiver()
            self.server, self.base, self.key = self.start_threadline()
            self.log(f"setup: {a.threads} threads, {SUBSCRIPTIONS} subscriptions to {self.recv_base}/s0…s9")
            ids = [self.http_json("POST", self.base + "/v1/threads", self.key)["id"] for _ in range(a.threads)]
            self.idfile = self.tmp / "ids.txt"
            self.idfile.write_text("\n".join(ids))
            secrets = {}
            for i in range(SUBSCRIPTIONS):
                hook = self.http_json("POST", self.base + "/v1/webhooks", self.key,
                                      {"url": f"{self.recv_base}/s{i}", "events": [EVENT_TYPE],
                                       "description": f"bench {i}"})
                secrets[f"/s{i}"] = hook["secret"]
            self.recv("/_secrets", secrets)
            self.secrets = secrets
            pg = self.pg_facts()
            for rate in a.rates:
                rates[rate] = self.phase_rate(rate, a.seconds, f"(1) {rate:g}/s")
            # (2) where the limit is: bisect between the highest rate that met the target and the lowest that missed.
            tried = dict(rates)
            if all(r["met"] for r in tried.values()) and a.sweep_steps:
                top = 2 * max(tried)
                tried[top] = self.phase_rate(top, a.sweep_seconds, f"(2) sweep {top:g}/s")
                sweep.append(top)
            for _ in range(max(0, a.sweep_steps - len(sweep))):
                lo = max((r for r, v in tried.items() if v["met"]), default=0)
                hi = min((r for r, v in tried.items() if not v["met"] and r > lo), default=None)
                if hi is None:
                    break
                mid = round((lo + hi) / 2 / a.sweep_grain) * a.sweep_grain
                if mid <= lo or mid >= hi:
                    break
                tried[mid] = self.phase_rate(mid, a.sweep_seconds, f"(2) sweep {mid:g}/s")
                sweep.append(mid)
            self.tried = tried
            self.sweep = sweep
            baseline = self.phase_baseline()
            if self.server.poll() is not None:
                self.errors.append(f"the Threadline server exited with {self.server.returncode}")
        finally:
            self.cleanup()
        report = self.report(rates, baseline, pg)
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
        elif a.no_write or TARGET_RATE not in a.rates:
            print("\nRESULTS.md was not updated" + ("." if a.no_write else f" (--rates must include {TARGET_RATE})."))
        else:
            self.write_results(report)
            print(f"\nWrote {RESULTS.relative_to(ROOT)}")
        return 0

    # -- reporting ------------------------------------------------------------------------------------

    def report(self, rates: dict[float, dict], baseline: dict, pg: dict) -> dict:
        a = self.args
        m = self.machine()
        tried = self.tried
        target = rates.get(TARGET_RATE) or rates[max(rates)]
        met_rates = [r for r, v in tried.items() if v["met"]]
        missed = [r for r, v in tried.items() if not v["met"]]
        best = max(met_rates, default=None)
        if best is None:
            limit = "none of the rates tried"
        elif not missed or max(missed) < best:
            limit = f"≥ {best:,.0f} messages/s (the highest tried)"
        else:
            nxt = min(r for r in missed if r > best)
            limit = f"{best:,.0f} messages/s (missed at {nxt:,.0f}/s)"
        ratio = target["delivered_rate"] / baseline["rate"] if baseline["rate"] else float("nan")

        def yn(ok):
            return "—" if ok is None else ("yes" if ok else "NO")

        tr = f"{target['rate']:g}/s"
        rows = [
            (f"lag commit → delivery p99 at {tr} (ack → arrival)", f"{target['lag']['p99']:.1f} ms",
             f"≤ {TARGET_P99_MS:g} ms", target["lag"]["p99"] <= TARGET_P99_MS),
            (f"lag commit → delivery p50 at {tr}", f"{target['lag']['p50']:.1f} ms", "—", None),
            (f"upper bounds of the p99 at {tr}: append sent → arrival / INSERT → arrival",
             f"{target['upper']['p99']:.1f} / {target['inserted']['p99']:.1f} ms", "—", None),
            (f"deliveries/s at {tr} ({SUBSCRIPTIONS} subscriptions; expected {target['rate'] * SUBSCRIPTIONS:,.0f})",
             f"{target['delivered_rate']:,.0f}", "—", None),
            (f"deliveries at {tr}: received / expected (duplicates)",
             f"{target['received_pairs']:,} / {target['expected']:,} ({target['duplicates']})", "all",
             target["missing"] == 0),
            ("receiver capacity (baseline: plain aiohttp client, same bodies, "
             f"{baseline['concurrency']} connections)", f"{baseline['rate']:,.0f} deliveries/s", "—", None),
            (f"webhook deliveries/s at {tr} ÷ receiver capacity", f"{ratio:.2f}", "—", None),
            (f"highest rate with lag p99 ≤ {TARGET_P99_MS:g} ms", limit, f"≥ {TARGET_RATE}/s",
             best is not None and best >= TARGET_RATE),
        ]
        table = ("| figure | value | target | met? |\n|---|---|---|---|\n"
                 + "".join(f"| {f} | {v} | {t} | {yn(ok)} |\n" for f, v, t, ok in rows))

        def cpu(c: dict) -> str:
            return ", ".join(f"{k} {v}%" for k, v in (c or {}).items())

        def trio(s: dict) -> str:
            return f"{s['p50']:.1f} / {s['p90']:.1f} / {s['p99']:.1f} / {s['max']:.1f}"

        detail = (
            "| phase | messages/s (achieved) | deliveries/s expected | delivered/s in window | received / expected "
            "| duplicates | lag ack → arrival p50 / p90 / p99 / max ms | p99 per subscription, min–max | "
            "sent → arrival p50 / p99 | INSERT → arrival p50 / p99 | append latency p50 / p99 ms | tail after window "
            "| p99 ≤ 250 ms | CPU (% of one core) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
        for rate, r in sorted(tried.items()):
            kind = "(1)" if rate in rates else "(2) sweep"
            detail += (
                f"| {kind} {rate:g}/s, {r['seconds']:g} s | {r['achieved_rate']:,.0f} | {rate * SUBSCRIPTIONS:,.0f} | "
                f"{r['delivered_rate']:,.0f} | {r['received_pairs']:,} / {r['expected']:,} | {r['duplicates']} | "
                f"{trio(r['lag'])} | {r['sub_p99_range'][0]:.0f}–{r['sub_p99_range'][1]:.0f} | "
                f"{r['upper']['p50']:.1f} / {r['upper']['p99']:.1f} | {r['inserted']['p50']:.1f} / "
                f"{r['inserted']['p99']:.1f} | {r['append']['p50']:.1f} / {r['append']['p99']:.1f} | "
                f"{r['tail_s']:.1f} s | {yn(r['met'])} | {cpu(r['cpu'])} |\n")
        detail += (f"| (3) receiver baseline, {a.baseline_seconds:g} s | — | — | {baseline['rate']:,.0f} | "
                   f"{baseline['received']:,} received | — | request p50 {baseline['p50_ms']:.1f}, "
                   f"p99 {baseline['p99_ms']:.1f} | — | — | — | — | — | — | {cpu(baseline['cpu'])} |\n")
        setup = (
            f"- {SUBSCRIPTIONS} subscriptions, `events: [\"{EVENT_TYPE}\"]`, each to its own path of one receiver "
            f"process (aiohttp + uvloop, answers 200 at once, verifies every signature with `standardwebhooks`): "
            f"each message makes {SUBSCRIPTIONS} deliveries.\n"
            f"- Driver (own process, aiohttp + uvloop): POST /v1/threads/{{id}}/messages `{BODY}` over {a.threads} "
            f"threads at a fixed open-loop rate (message k due at start + k/rate); {a.warmup:g} s warm-up then the "
            f"measured window; lags are over the deliveries of messages due inside the window, every "
            f"(message, subscription) pair. The driver fell at most "
            f"{max(r['behind_ms'] for r in tried.values()):.1f} ms behind its schedule.\n"
            "- Lag = arrival at the receiver (`time.monotonic()` on entering the handler) − the driver's receipt of "
            "the append's 200 (`time.monotonic()`, system-wide, so comparable across processes): the event is "
            "committed before the 200 is sent, so this is a lower bound of commit → delivery; `sent → arrival` "
            "(from sending the append) and `INSERT → arrival` (from `recorded_at`, clock_timestamp() at the event's "
            "INSERT, before its commit; wall clocks) are upper bounds. Every delivery of every message (warm-up "
            "included) must arrive: the script waits for them after the window (`tail after window` = last "
            "arrival − end of the window) and checks signatures, types and each thread's order per subscription.\n"
            f"- (2) sweep: bisection on a {a.sweep_grain:g}/s grain between the highest rate meeting p99 ≤ "
            f"{TARGET_P99_MS:g} ms and the lowest missing it ({a.sweep_steps} windows at most, "
            f"{a.sweep_seconds:g} s each; 2 × the highest rate first when all of (1) met it). Rates and deliveries "
            f"accumulate in the same database through the run (the `webhook_deliveries` table grows).\n"
            f"- (3) receiver baseline: a plain aiohttp client (own process) posts {len(self.samples)} bodies with "
            f"their headers captured from real deliveries to the same paths (the receiver verifies them the same "
            f"way), {baseline['concurrency']} connections ({SUBSCRIPTIONS} subscriptions × "
            f"{PER_SUB_CONCURRENCY}, Threadline's attempts in flight per subscription), closed loop.\n"
            f"- Threadline: `python -m service serve`, default configuration plus THREADLINE_WEBHOOK_ALLOW_HTTP=1, "
            f"THREADLINE_WEBHOOK_ALLOW_NETWORKS=127.0.0.0/8 (its log goes to a file"
            f"{'; extra env: ' + ' '.join(a.env) if a.env else ''}), "
            f"{'$DATABASE_URL' if os.environ.get('DATABASE_URL') else 'fresh embedded PostgreSQL'}: PostgreSQL "
            f"{pg.get('version')}, synchronous_commit={pg.get('synchronous_commit')}, fsync={pg.get('fsync')}, "
            f"shared_buffers={pg.get('shared_buffers')}.\n"
            f"- CPU column: % of one core during the measured window (see ops/bench/appends.py): `other` is anything "
            f"else on this shared machine, `steal` the hypervisor's. A window with other + steal > {a.max_other:g}% "
            f"is measured again (≤ {a.attempts} windows) and the quietest kept.\n")
        behind = [f"{r:g}/s" for r, v in sorted(tried.items()) if v["delivered_rate"] < 0.95 * r * SUBSCRIPTIONS]
        if behind:
            setup += (f"- At {', '.join(behind)} deliveries fell behind the appends (delivered/s below the "
                      f"expected rate): the backlog, and so the lag, grows for as long as the window lasts, so those "
                      f"lags say only that it did not keep up; delivered/s there is the webhook path's capacity.\n")
        setup += self.notes_text()
        machine = self.machine_line(m)
        lo = rates.get(min(rates))
        text = ("\n" + table + "\n" + detail + "\n" + setup + "\n" + machine + "\n"
                + f"\nlag p50/p99 at {tr}: {target['lag']['p50']:.1f}/{target['lag']['p99']:.1f} ms (target p99 ≤ "
                  f"{TARGET_P99_MS:g} ms); at {lo['rate']:g}/s: {lo['lag']['p50']:.1f}/{lo['lag']['p99']:.1f} ms; "
                  f"delivered {target['delivered_rate']:,.0f}/s; receiver capacity {baseline['rate']:,.0f}/s; "
                  f"highest rate meeting the target: {limit}")
        history = self.history_row(m, f"{lo['rate']:g}/s: {lo['lag']['p50']:.1f} / {lo['lag']['p99']:.1f} | "
                                      f"{target['lag']['p50']:.1f} / {target['lag']['p99']:.1f} | "
                                      f"{target['delivered_rate']:,.0f} | {baseline['rate']:,.0f} | {ratio:.2f} | "
                                      f"{limit} | {a.seconds:g} s")
        return {"table": table, "detail": detail, "setup": setup, "machine": machine, "text": text,
                "history": history}

    def write_results(self, report: dict) -> None:
        write_report(
            "webhooks", "Webhooks (`ops/bench/webhooks.py`)",
            f"Messages appended through the API at a fixed rate, each delivered to {SUBSCRIPTIONS} subscriptions "
            "on one local receiver: deliveries per second, and the lag from the event's commit to its arrival, "
            "against the receiver's own capacity measured in the same run.",
            f".venv/bin/python ops/bench/webhooks.py --seconds {self.args.seconds:g}", report,
            ["date", "code", "machine", "low rate: lag p50 / p99 ms", "500/s: lag p50 / p99 ms", "delivered/s at 500/s",
             "receiver capacity /s", "÷ capacity", "highest rate meeting p99 ≤ 250 ms", "window"])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        mode, rest = sys.argv[1], sys.argv[2:]
        {"_receiver": child_receiver, "_driver": child_driver, "_flood": child_flood}[mode](rest)
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20, help="measured window per rate of --rates (default 20)")
    p.add_argument("--warmup", type=float, default=5, help="warm-up per window (default 5)")
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[100.0, float(TARGET_RATE)],
                   help="messages/s, comma-separated (default 100,500)")
    p.add_argument("--threads", type=int, default=50, help="threads the appends rotate over (default 50)")
    p.add_argument("--sweep-steps", type=int, default=3, help="windows of the sweep at most (default 3; 0: none)")
    p.add_argument("--sweep-seconds", type=float, default=10, help="measured window of a sweep step (default 10)")
    p.add_argument("--sweep-grain", type=float, default=25, help="sweep rates are multiples of this (default 25)")
    p.add_argument("--baseline-seconds", type=float, default=10, help="measured window of the baseline (default 10)")
    p.add_argument("--drain-timeout", type=float, default=180,
                   help="after a window, wait at most this long for every delivery (default 180 s)")
    bench_options(p, quiet_timeout=120)
    args = parse_bench_args(p)
    return WebhooksBench(args).run()


if __name__ == "__main__":
    sys.exit(main())
