"""The service's one HTTP client for calls out: model providers and the tools the server runs.

Every connection goes only to addresses its `AddressPolicy` allows, checked when the connection is
made: a host name is resolved by the policy's resolver, which drops refused addresses, so a name
that later resolves to an internal address (DNS rebinding) gets nowhere; an address literal is
checked before the request. Redirects are never followed (a redirect could lead anywhere). Proxy
settings in the environment are not read: where a call goes is the policy's alone.

Webhook deliveries use a leaner client of their own (service/outbound/posts.py) behind the same
policy: ops/bench/outbound.py measures why.
"""

from __future__ import annotations

import socket
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from service.outbound.policy import AddressPolicy, allowed_addresses


class _PolicyResolver(AbstractResolver):
    def __init__(self, policy: AddressPolicy):
        self.policy = policy

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        return [{"hostname": host, "host": address, "port": port,
                 "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}
                for address in await allowed_addresses(self.policy, host, port)]

    async def close(self) -> None:
        pass


class OutboundClient:
    def __init__(self, policy: AddressPolicy, *, connect_timeout: float = 10.0, connections: int = 100):
        self.policy = policy
        self.connect_timeout = connect_timeout
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=_PolicyResolver(self.policy), limit=self.connections,
                                             ttl_dns_cache=10)
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, auto_decompress=True,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout))
        return self._session

    @asynccontextmanager
    async def request(self, method: str, url: str, *, headers: dict[str, str] | None = None, json: Any = None,
                      data: bytes | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response once its headers are in; its body is the caller's to read. AddressRefused
        when the URL or every address it resolves to is refused."""
        self.policy.check_url(url)
        async with self._open().request(method, url, headers=headers, json=json, data=data,
                                        allow_redirects=False) as response:
            yield response

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
