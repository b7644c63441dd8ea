"""A small HTTP/1.1 client for webhook deliveries: one POST at a time per connection, kept alive.

The general outbound client (client.py, aiohttp) costs 2.6× the CPU per webhook-sized POST
(ops/bench/outbound.py: 85 µs against 33 µs), more than the rest of the dispatcher together. A delivery needs far less: a request written in one
piece and a status line read back. Every connection goes only to addresses the policy allows,
checked when the connection is made (so a name that later resolves to an internal address —
DNS rebinding — gets nowhere); redirects are not followed; the answer's body is read, up to a
limit, only so that the connection can carry the next request.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from service.outbound.policy import AddressPolicy, AddressRefused, allowed_addresses

MAX_BODY_READ = 65_536      # bytes of an answer read to keep its connection; a longer one is dropped
MAX_HEAD = 65_536           # bytes of status line and headers
IDLE_SECONDS = 15.0         # an unused connection is closed after this long (servers drop them too)
DNS_SECONDS = 10.0          # resolved addresses are reused this long
_SAFE_PATH = "/%:@!$&'()*+,;=-._~"
_SAFE_QUERY = _SAFE_PATH + "?"


class ConnectFailed(OSError):
    """No allowed address of the endpoint accepted a connection in time."""


class BadAnswer(OSError):
    """The endpoint closed the connection or answered something that is not HTTP/1.x."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where one webhook URL goes, parsed once."""
    host: str
    port: int
    tls: bool
    request_line: bytes      # `POST /path HTTP/1.1` and the Host header

    @property
    def key(self) -> tuple[str, int, bool]:
        return self.host, self.port, self.tls


def parse_target(policy: AddressPolicy, url: str) -> Target:
    """AddressRefused when the policy refuses the URL (an IP literal is refused here, a name when
    it resolves)."""
    scheme, host = policy.check_url(url)
    parts = urlsplit(url)
    tls = scheme == "https"
    port = parts.port or (443 if tls else 80)
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise AddressRefused("has an invalid host name") from None
    shown = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    if parts.port is not None and parts.port != (443 if tls else 80):
        shown = f"{shown}:{port}"
    path = quote(parts.path or "/", safe=_SAFE_PATH)
    if parts.query:
        path = f"{path}?{quote(parts.query, safe=_SAFE_QUERY)}"
    line = f"POST {path} HTTP/1.1\r\nHost: {shown}\r\n".encode("ascii")
    return Target(ascii_host, port, tls, line)


@dataclass(slots=True, eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = field(default_factory=time.monotonic)

    def usable(self) -> bool:
        return (not self.writer.is_closing() and not self.reader.at_eof()
                and time.monotonic() - self.idle_since < IDLE_SECONDS)

    def close(self) -> None:
        self.writer.close()


class WebhookClient:
    def __init__(self, policy: AddressPolicy, timeout: float, connect_timeout: float):
        self.policy, self.timeout, self.connect_timeout = policy, timeout, connect_timeout
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}
        self._targets: dict[str, Target] = {}
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, headers: bytes, body: bytes) -> int:
        """The status of the answer to one POST. `headers` are complete lines, CRLF-terminated.
        Raises AddressRefused, TimeoutError (the whole exchange, connecting included, took longer
        than the timeout) or OSError (ConnectFailed, BadAnswer, a reset, a TLS failure)."""
        target = self.target(url)
        request = b"".join((target.request_line, headers, b"Content-Length: %d\r\n\r\n" % len(body), body))
        async with asyncio.timeout(self.timeout):
            conn = self._pooled(target)
            if conn is not None:
                try:
                    return await self._exchange(target, conn, request, reused=True)
                except _Stale:      # the endpoint had closed it while idle: no answer came
                    pass
            return await self._exchange(target, await self._connect(target), request, reused=False)

    def target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            target = parse_target(self.policy, url)
            if len(self._targets) > 10_000:
                self._targets.clear()
            self._targets[url] = target
        return target

    def prune(self) -> None:
        """Close connections idle too long."""
        for key, conns in list(self._idle.items()):
            keep = [c for c in conns if c.usable()]
            for c in conns:
                if c not in keep:
                    c.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    async def close(self) -> None:
        conns = [c for cs in self._idle.values() for c in cs]
        self._idle.clear()
        for c in conns:
            c.close()
        await asyncio.gather(*(c.writer.wait_closed() for c in conns), return_exceptions=True)

    # -- one exchange ------------------------------------------------------------------------

    async def _exchange(self, target: Target, conn: _Connection, request: bytes, reused: bool) -> int:
        keep = False
        try:
            conn.writer.write(request)
            if len(request) > 65_536:
                await conn.writer.drain()
            try:
                head = await conn.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if reused and not exc.partial:
                    raise _Stale from None
                raise BadAnswer("the endpoint closed the connection before answering") from None
            except ConnectionError:
                if reused:
                    raise _Stale from None
                raise
            status, keep = await _read_answer(conn.reader, head)
            return status
        except asyncio.LimitOverrunError:
            raise BadAnswer("the answer's headers are too long") from None
        except asyncio.IncompleteReadError:
            raise BadAnswer("the endpoint closed the connection in the middle of its answer") from None
        finally:
            if keep:
                conn.idle_since = time.monotonic()
                self._idle.setdefault(target.key, []).append(conn)
            else:
                conn.close()

    def _pooled(self, target: Target) -> _Connection | None:
        conns = self._idle.get(target.key)
        while conns:
            conn = conns.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    async def _connect(self, target: Target) -> _Connection:
        failures = []
        for address in await self._addresses(target):
            try:
                async with asyncio.timeout(self.connect_timeout):
                    reader, writer = await asyncio.open_connection(
                        address, target.port, limit=MAX_HEAD,
                        ssl=self._tls_context() if target.tls else None,
                        server_hostname=target.host if target.tls else None)
            except TimeoutError:
                failures.append(f"{address}: timed out")
            except OSError as exc:
                failures.append(f"{address}: {exc.strerror or exc}")
            else:
                return _Connection(reader, writer)
        raise ConnectFailed(f"could not connect to {target.host}:{target.port} ({'; '.join(failures)})")

    async def _addresses(self, target: Target) -> list[str]:
        """The endpoint's addresses that the policy allows (AddressRefused when there are none)."""
        key = (target.host, target.port)
        cached = self._dns.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        addresses = await allowed_addresses(self.policy, target.host, target.port)
        if len(self._dns) > 10_000:
            self._dns.clear()
        self._dns[key] = (time.monotonic() + DNS_SECONDS, addresses)
        return addresses

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls


class _Stale(Exception):
    """A kept-alive connection the endpoint had closed: try a new one."""


async def _read_answer(reader: asyncio.StreamReader, head: bytes) -> tuple[int, bool]:
    """(status, whether the connection can be reused), reading the body so it can."""
    while True:
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise BadAnswer("the endpoint's answer is not HTTP/1.x")
        status = int(code)
        if status >= 200 or status == 101:
            break
        head = await reader.readuntil(b"\r\n\r\n")      # 100 Continue and other interim answers
    length, chunked, close = None, False, version != b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise BadAnswer("the answer's Content-Length is not a number") from None
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            value = value.lower()
            close = b"close" in value or (close and b"keep-alive" not in value)
    if status == 101:
        return status, False
    if status in (204, 304):
        return status, not close
    if chunked:
        read = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0], 16)
            except ValueError:
                raise BadAnswer("the answer's chunked body is malformed") from None
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":     # trailers
                    pass
                return status, not close
            read += size
            if read > MAX_BODY_READ:
                return status, False
            await reader.readexactly(size + 2)
    if length is None or length > MAX_BODY_READ:
        return status, False        # a body that ends when the connection does, or one too long to read
    if length:
        await reader.readexactly(length)
    return status, not close
