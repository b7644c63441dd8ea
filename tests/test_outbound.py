"""The general outbound client (service/outbound/client.py): the address policy is applied when a
connection is made, to names and literals alike, and redirects are not followed. Loopback only."""

from __future__ import annotations

import pytest
from aiohttp import web

from service.outbound.client import OutboundClient
from service.outbound.policy import AddressPolicy, AddressRefused


@pytest.fixture
async def server():
    async def hello(request):
        return web.Response(text="hello")

    async def away(request):
        raise web.HTTPFound("http://127.0.0.1:9/elsewhere")

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_get("/away", away)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield runner.addresses[0][1]
    await runner.cleanup()


async def get(client: OutboundClient, url: str) -> tuple[int, str]:
    async with client.request("GET", url) as response:
        return response.status, await response.text()


async def test_an_allowed_address_is_reached(server):
    client = OutboundClient(AddressPolicy.parse(True, "127.0.0.0/8"))
    try:
        assert await get(client, f"http://127.0.0.1:{server}/hello") == (200, "hello")
        assert await get(client, f"http://localhost:{server}/hello") == (200, "hello")
    finally:
        await client.close()


async def test_loopback_is_refused_by_name_and_by_literal(server):
    client = OutboundClient(AddressPolicy(allow_http=True))
    try:
        with pytest.raises(AddressRefused):
            await get(client, f"http://127.0.0.1:{server}/hello")
        with pytest.raises(AddressRefused, match="resolves only to refused addresses"):    # checked at connect
            await get(client, f"http://localhost:{server}/hello")
    finally:
        await client.close()


async def test_plain_http_is_refused_unless_allowed(server):
    client = OutboundClient(AddressPolicy(allow_http=False, allowed_networks=AddressPolicy.anywhere().allowed_networks))
    try:
        with pytest.raises(AddressRefused, match="https"):
            await get(client, f"http://127.0.0.1:{server}/hello")
    finally:
        await client.close()


async def test_a_redirect_is_not_followed(server):
    client = OutboundClient(AddressPolicy.anywhere())
    try:
        status, _ = await get(client, f"http://127.0.0.1:{server}/away")
        assert status == 302
    finally:
        await client.close()
