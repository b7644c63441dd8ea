"""Where the service's calls out may go (SSRF protection): for what a tenant names (webhook URLs,
and the tools to come), HTTPS to public addresses unless configured; for what the operator
configured (model providers), anywhere.

A URL is checked when it is given, and every connection is checked again when it is made
(`allowed_addresses`), so a DNS name that later resolves to an internal address — DNS rebinding —
gets nowhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(ValueError):
    """The URL or the address it resolves to is not one the policy lets the service reach."""


@dataclass(frozen=True)
class AddressPolicy:
    allow_http: bool = False
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def anywhere(cls) -> "AddressPolicy":
        """For endpoints the operator configured: every address, http allowed."""
        return cls(True, (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")))

    @classmethod
    def parse(cls, allow_http: bool, networks: str) -> "AddressPolicy":
        nets = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks.split(",") if n.strip())
        return cls(allow_http, nets)

    def address_allowed(self, ip: IPAddress) -> bool:
        if any(ip in net for net in self.allowed_networks):
            return True
        if isinstance(ip, ipaddress.IPv6Address):
            if ip in _NAT64_LOCAL:
                return False        # a site's own translator: where its IPv4 address sits is the site's choice
            embedded = _embedded_ipv4(ip)
            if embedded is not None:
                # An IPv6 form that reaches an IPv4 address (mapped, compatible, NAT64, 6to4,
                # Teredo) is judged by that address: [::127.0.0.1] is loopback.
                return self.address_allowed(embedded)
        # Not global covers loopback, private, link-local (169.254.169.254, the cloud metadata
        # service), shared (100.64/10), unique-local (fd00:ec2::254), reserved and unspecified.
        return ip.is_global and not ip.is_multicast

    def check_url(self, url: str) -> tuple[str, str]:
        """(scheme, host) of an acceptable URL; AddressRefused says what is wrong."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise AddressRefused("is not a valid URL") from None
        scheme, host = parts.scheme.lower(), parts.hostname
        if scheme not in ("https", "http") or not host:
            raise AddressRefused("must be an absolute https:// URL")
        if scheme == "http" and not self.allow_http:
            raise AddressRefused("must use https:// (plain http is refused by this server's configuration)")
        if parts.username is not None or parts.password is not None:
            raise AddressRefused("must not contain credentials")
        if port == 0:
            raise AddressRefused("has an invalid port")
        literal = _literal(host)
        if literal is not None and not self.address_allowed(literal):
            raise AddressRefused(f"points to a refused address ({literal}): loopback, private, link-local "
                                 "and metadata addresses are not allowed")
        return scheme, host

    async def check_resolves(self, host: str) -> None:
        """Every address the host resolves to now must be allowed."""
        if _literal(host) is not None:
            return
        try:
            found = await _resolve(host, None)
        except OSError:
            raise AddressRefused(f"has a host name that does not resolve ({host})") from None
        # Which address it resolved to is not said: an answer naming it would let anyone resolve
        # names inside the server's network (a DNS oracle).
        if any(not self.address_allowed(ipaddress.ip_address(a)) for a in found):
            raise AddressRefused("resolves to a refused address: loopback, private, link-local "
                                 "and metadata addresses are not allowed")


_NAT64 = ipaddress.ip_network("64:ff9b::/96")          # RFC 6052 well-known prefix
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")   # RFC 8215 local-use prefix
_COMPATIBLE = ipaddress.ip_network("::/96")             # deprecated IPv4-compatible ::a.b.c.d


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 transition form carries, if it is one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]         # the client, where the packets go
    if ip in _NAT64 or (ip in _COMPATIBLE and int(ip) > 1):     # :: and ::1 are IPv6's own
        return ipaddress.IPv4Address(ip.packed[12:])
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def allowed_addresses(policy: AddressPolicy, host: str, port: int) -> list[str]:
    """What `host` resolves to now, minus the addresses the policy refuses: called on every new
    connection, so a name that resolves to an internal address later (DNS rebinding) gets nowhere."""
    literal = _literal(host)
    found = [str(literal)] if literal is not None else await _resolve(host, port)
    allowed = [a for a in found if policy.address_allowed(ipaddress.ip_address(a))]
    if not allowed:
        raise AddressRefused(f"resolves only to refused addresses ({host}): loopback, private, link-local "
                             "and metadata addresses are not allowed")
    return allowed


async def _resolve(host: str, port: int | None) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise OSError(f"{host} does not resolve ({exc.strerror or exc})") from None
    return list(dict.fromkeys(str(i[4][0]) for i in infos))
