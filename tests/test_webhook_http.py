"""The webhook HTTP client against raw TCP servers that answer exactly what each test scripts."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from service.outbound.policy import AddressPolicy, AddressRefused
from service.outbound.posts import MAX_BODY_READ, BadAnswer, ConnectFailed, WebhookClient

LOOPBACK = AddressPolicy.parse(True, "127.0.0.0/8")
HEADERS = b"Content-Type: application/json\r\nwebhook-id: evt_1_0\r\n"


class RawServer:
    """Reads HTTP/1.1 requests and answers each with the next scripted reply (bytes, or None to
    close without answering); remembers every request and counts connections."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
        self.connections = 0
        self.close_after_each = False

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader, writer):
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *fields = head[:-4].split(b"\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(b":") for f in fields)}
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                self.requests.append((line, headers, body))
                reply = self.replies.pop(0) if self.replies else b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def client():
    c = WebhookClient(LOOPBACK, timeout=2.0, connect_timeout=1.0)
    yield c
    await c.close()


async def test_a_post_carries_its_headers_and_body_and_the_connection_is_kept(client):
    async with RawServer([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                          b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"]) as s:
        assert await client.post(s.url("/in/a b?x=1&y=é"), HEADERS, b'{"a":1}') == 200
        assert await client.post(s.url(), HEADERS, b"{}") == 202
        assert await client.post(s.url(), HEADERS, b"{}") == 200
    line, headers, body = s.requests[0]
    assert line == b"POST /in/a%20b?x=1&y=%C3%A9 HTTP/1.1"
    assert headers[b"host"] == f"127.0.0.1:{s.port}".encode() and headers[b"webhook-id"] == b"evt_1_0"
    assert headers[b"content-length"] == b"7" and body == b'{"a":1}'
    assert s.connections == 1, "answers with a length or chunks keep the connection for the next delivery"


async def test_a_connection_the_endpoint_closed_while_idle_is_replaced(client):
    async with RawServer([]) as s:
        s.close_after_each = True           # answers without `Connection: close`, then hangs up
        assert await client.post(s.url(), HEADERS, b"{}") == 200
        await asyncio.sleep(0)              # (the close need not have arrived yet: both ways must work)
        assert await client.post(s.url(), HEADERS, b"{}") == 200
    assert len(s.requests) == 2 and s.connections == 2


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (MAX_BODY_READ + 1, b"x" * (MAX_BODY_READ + 1)),
])
async def test_answers_that_end_the_connection_or_are_too_long_to_drain_are_not_reused(client, reply):
    async with RawServer([reply]) as s:
        assert await client.post(s.url(), HEADERS, b"{}") == 200
        assert await client.post(s.url(), HEADERS, b"{}") == 200
    assert s.connections == 2


async def test_redirects_are_answers_not_followed(client):
    async with RawServer([b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://169.254.169.254/\r\n"
                          b"Content-Length: 0\r\n\r\n"]) as s:
        assert await client.post(s.url(), HEADERS, b"{}") == 307
    assert len(s.requests) == 1


@pytest.mark.parametrize("reply, message", [
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP"),
    (None, "closed the connection before answering"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", None),
])
async def test_what_is_not_an_http_answer_fails_the_attempt(client, reply, message):
    async with RawServer([reply]) as s:
        if message is None:            # the body ends too early: the server closes after it
            s.close_after_each = True
            message = "in the middle of its answer"
        with pytest.raises(BadAnswer, match=message):
            await client.post(s.url(), HEADERS, b"{}")


async def test_an_endpoint_that_never_answers_times_out():
    client = WebhookClient(LOOPBACK, timeout=0.3, connect_timeout=1.0)
    hold = asyncio.Event()

    async def silent(reader, writer):
        await hold.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        with pytest.raises(TimeoutError):
            await client.post(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", HEADERS, b"{}")
    finally:
        hold.set()
        server.close()
        await client.close()


async def test_refused_and_unreachable_endpoints(client):
    strict = WebhookClient(AddressPolicy.parse(True, ""), timeout=2.0, connect_timeout=1.0)
    async with RawServer([]) as s:
        with pytest.raises(AddressRefused):     # a name that resolves to loopback: refused when connecting
            await strict.post(f"http://localhost:{s.port}/", HEADERS, b"{}")
        with pytest.raises(AddressRefused):     # an address literal: refused before anything
            await strict.post(s.url(), HEADERS, b"{}")
        port = s.port
    assert s.requests == []
    with pytest.raises(ConnectFailed, match="could not connect"):
        await client.post(f"http://127.0.0.1:{port}/", HEADERS, b"{}")


async def test_an_endpoint_that_never_accepts_the_connection_fails_at_the_connect_timeout():
    """A listener whose accept queue is full drops new SYNs: the connect hangs until our limit."""
    client = WebhookClient(LOOPBACK, timeout=5.0, connect_timeout=0.3)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):          # fill the accept queue (the kernel allows backlog + 1)
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        started = time.monotonic()
        with pytest.raises(ConnectFailed, match="timed out"):
            await client.post(f"http://127.0.0.1:{port}/", HEADERS, b"{}")
        assert time.monotonic() - started < 2.0, "the connect timeout, not the attempt's, ended it"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
        await client.close()
