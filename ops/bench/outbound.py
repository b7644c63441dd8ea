#!/usr/bin/env python3
"""Outbound client benchmark: CPU per webhook-sized POST through the service's general outbound
client (aiohttp, service/outbound/client.py) against the lean delivery client webhooks use
(service/outbound/posts.py), both behind the same AddressPolicy, measured in the same run.

    .venv/bin/python ops/bench/outbound.py [--posts 4000] [--concurrency 8] [--attempts 3]

A receiver in a child process answers every POST with `204` at once, over kept-alive loopback
connections, so what is measured is the client's own CPU (`time.process_time` of this process,
which runs nothing else). Each attempt runs both clients in turn on the same receiver; the median
attempt is reported. The question it answers: is a second client for webhooks worth keeping
(issue 15, item 7)? It is if the general client costs clearly more CPU per delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from results import write_section  # noqa: E402
from service.outbound.client import OutboundClient  # noqa: E402
from service.outbound.policy import AddressPolicy  # noqa: E402
from service.outbound.posts import WebhookClient  # noqa: E402

BODY = b'{"id":"evt_1","type":"thread.run.completed","data":{"id":"run_1","status":"completed"}}' * 4
HEADERS = {"content-type": "application/json", "webhook-id": "msg_1", "webhook-timestamp": "1700000000",
           "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDDX5ekA8="}
RECEIVER = r"""
import asyncio, sys
class Answer(asyncio.Protocol):
    def connection_made(self, transport): self.t, self.buf = transport, b""
    def data_received(self, data):
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, rest = self.buf.split(b"\r\n\r\n", 1)
            length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")), 0)
            if len(rest) < length: return
            self.buf = rest[length:]
            self.t.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
async def main():
    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def post_all(send, posts: int, concurrency: int) -> float:
    """CPU seconds of this process to send `posts` POSTs, `concurrency` at a time."""
    remaining = iter(range(posts))

    async def worker() -> None:
        for _ in remaining:
            await send()

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.process_time() - cpu


async def attempt(url: str, posts: int, concurrency: int) -> dict[str, float]:
    policy = AddressPolicy.parse(True, "127.0.0.0/8")
    lean = WebhookClient(policy, timeout=10, connect_timeout=5)
    general = OutboundClient(policy)
    head = "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items()).encode()

    async def via_lean() -> None:
        assert await lean.post(url, head, BODY) == 204

    async def via_general() -> None:
        async with general.request("POST", url, headers=HEADERS, data=BODY) as response:
            await response.read()
            assert response.status == 204

    try:
        for send in (via_lean, via_general):       # warm both: connections, caches
            await post_all(send, 200, concurrency)
        return {"lean": await post_all(via_lean, posts, concurrency) / posts,
                "general": await post_all(via_general, posts, concurrency) / posts}
    finally:
        await lean.close()
        await general.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--attempts", type=int, default=3)
    args = parser.parse_args()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{receiver.stdout.readline().strip()}/hook"
        runs = [asyncio.run(attempt(url, args.posts, args.concurrency)) for _ in range(args.attempts)]
    finally:
        receiver.kill()
    lean = statistics.median(r["lean"] for r in runs) * 1e6
    general = statistics.median(r["general"] for r in runs) * 1e6
    ratio = general / lean
    print(f"CPU per POST: lean webhook client {lean:.0f} µs, general outbound client {general:.0f} µs "
          f"({ratio:.2f}×) over {args.posts} posts × {args.attempts} attempts, {args.concurrency} at a time")
    write_section("outbound", f"""## Outbound clients: CPU per webhook-sized POST

{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.posts} POSTs of {len(BODY)} bytes per client and
attempt, {args.concurrency} at a time, over kept-alive loopback connections to a receiver that answers 204 at once;
median of {args.attempts} attempts (`ops/bench/outbound.py`).

| client | CPU per POST | ratio |
|---|---|---|
| lean webhook client (`service/outbound/posts.py`) | {lean:.0f} µs | 1.00× (baseline) |
| general outbound client (`service/outbound/client.py`, aiohttp) | {general:.0f} µs | {ratio:.2f}× |

The webhook dispatcher keeps its own client while this ratio stays clearly above 1: both clients
apply the same `AddressPolicy` when they connect.
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
