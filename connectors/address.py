"""Where outbound calls may go: the address half of the SSRF guard, shared by EHR connectors and webhooks.

A URL the gateway calls on someone's say-so (an EHR base or token URL from the clients file, a webhook receiver a
platform client registered) must not reach the gateway's own network: loopback, private (RFC 1918), link-local
(169.254/16, where cloud metadata lives), shared CGNAT space (100.64/10), unique-local (fc00::/7), multicast,
unspecified, reserved or documentation ranges, nor an IPv6 form that carries one of those (IPv4-mapped
``::ffff:169.254.169.254``, 6to4, Teredo, NAT64), nor a cloud metadata name (``metadata.google.internal``...). Only
globally routable unicast addresses pass.

The check runs twice: ``OutboundPolicy.refusal`` when the URL is registered or the configuration is read (a literal
address in any spelling the C resolver accepts -- ``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1`` -- and
the names, plus, for webhooks, what the name resolves to then), and ``GuardedTransport`` at every connection: it
resolves the host itself, checks *every* address the name resolves to, and connects to the checked address (TLS
still verifies the certificate for the host name, sent as SNI, and the request keeps its Host), so a name that
resolves elsewhere later (DNS rebinding) is still refused.

Operators allow their own internal receivers or EHRs explicitly: ``GATEWAY_OUTBOUND_ALLOW`` lists CIDRs and host
names that pass even when private. Development mode (``fhir-gateway run``) allows loopback, and only loopback.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Names that reach a cloud provider's instance metadata service (credentials!) or the host itself.
METADATA_NAMES = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "metadata.azure.internal", "metadata.internal",
    "instance-data", "instance-data.ec2.internal", "metadata.tencentyun.com", "metadata.platformequinix.com",
    "169.254.169.254.nip.io",
})  # fmt: skip
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
RESOLVE_SECONDS = 5.0  # how long a registration waits for DNS before leaving the check to connect time


class RefusedAddress(httpx.ConnectError):
    """A connection was refused by the address guard (an ``httpx.ConnectError``, so callers treat it as one)."""


def _norm(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def literal_address(host: str) -> IPAddress | None:
    """Return the address a host written as a number stands for, in any form a resolver accepts; else None."""
    name = _norm(host)
    if "%" in name:  # an IPv6 zone index (fe80::1%eth0)
        name = name.split("%", 1)[0]
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    if name and all(part for part in name.split(".")) and all(_numeric(part) for part in name.split(".")):
        try:  # the C resolver's forms: 2130706433, 0x7f000001, 0177.0.0.1, 127.1
            return ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return ipaddress.IPv4Address("255.255.255.255")  # numeric but out of range: reserved, refused
    return None


def _numeric(part: str) -> bool:
    if part[:2] in ("0x", "0X"):
        return all(c in "0123456789abcdefABCDEF" for c in part[2:])
    return part.isdigit()


def _embedded(address: IPAddress) -> IPAddress | None:
    """Return the IPv4 address an IPv6 address carries (mapped, compatible, 6to4, Teredo, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or address in _NAT64_LOCAL:
        return ipaddress.IPv4Address(address.packed[-4:])
    if address.packed[:12] == bytes(12) and int(address) > 1:  # ::a.b.c.d, the deprecated compatible form
        return ipaddress.IPv4Address(address.packed[-4:])
    return None


def address_class(address: IPAddress) -> str | None:
    """Return why an address may not be called (its class: loopback, private...), or None when it is public."""
    inner = _embedded(address)
    if inner is not None:
        return address_class(inner) or None
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("shared (CGNAT)", isinstance(address, ipaddress.IPv4Address) and address in _CGNAT),
        ("multicast", address.is_multicast),
        ("unique-local", isinstance(address, ipaddress.IPv6Address) and address in ipaddress.ip_network("fc00::/7")),
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def parse_allow(text: str | Iterable[str]) -> tuple[tuple[IPNetwork, ...], frozenset[str]]:
    """Return the networks and host names of an allow-list (comma- or space-separated); raise ValueError if bad."""
    items = text.replace(",", " ").split() if isinstance(text, str) else [str(t).strip() for t in text]
    networks: list[IPNetwork] = []
    names: set[str] = set()
    for item in filter(None, items):
        if "/" in item or literal_address(item) is not None:
            try:
                networks.append(ipaddress.ip_network(_norm(item), strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not a CIDR, an address or a host name") from None
        elif all(c.isalnum() or c in "-." for c in item) and not item.startswith((".", "-")):
            names.add(_norm(item))
        else:
            raise ValueError(f"{item!r} is not a CIDR, an address or a host name")
    return tuple(networks), frozenset(names)


@dataclass(frozen=True)
class OutboundPolicy:
    """Which hosts and addresses outbound calls may reach: public unicast, plus what the operator allowed."""

    networks: tuple[IPNetwork, ...] = ()
    names: frozenset[str] = frozenset()
    loopback: bool = False  # development mode: loopback too (and only loopback, of the private ranges)
    resolve_seconds: float = field(default=RESOLVE_SECONDS, compare=False)

    @classmethod
    def from_settings(cls, allow: str | Iterable[str] = "", *, development: bool = False) -> OutboundPolicy:
        """Build the policy from the ``GATEWAY_OUTBOUND_ALLOW`` text and the development flag."""
        networks, names = parse_allow(allow)
        return cls(networks, names, loopback=development)

    def allows_name(self, host: str) -> bool:
        """Tell whether the operator allowed this host name (whatever it resolves to)."""
        name = _norm(host)
        return name in self.names or (self.loopback and name in LOOPBACK_NAMES)

    def address_refusal(self, address: IPAddress) -> str | None:
        """Return the class of an address this policy refuses, or None when it may be reached."""
        if any(address.version == n.version and address in n for n in self.networks):
            return None
        refused = address_class(address)
        if refused == "loopback" and self.loopback:
            return None
        return refused

    def refusal(self, host: str) -> str | None:
        """Return why a host may not be called, without DNS: a refused literal address or a metadata name."""
        if self.allows_name(host):
            return None
        name = _norm(host)
        address = literal_address(name)
        if address is not None:
            refused = self.address_refusal(address)
            return f"the host's address is {refused}" if refused else None
        if name in METADATA_NAMES or (name.endswith(".internal") and name.startswith("metadata")):
            return "the host is a cloud metadata name"
        if name in LOOPBACK_NAMES or name.endswith(".localhost"):
            return "the host is a loopback name"
        return None

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Resolve ``host`` and check every address; return them, or raise RefusedAddress if any is refused."""
        if (why := self.refusal(host)) is not None:
            raise RefusedAddress(f"refused address: {why}")
        literal = literal_address(host)
        if literal is not None:
            return [literal]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(_norm(host), port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpx.ConnectError("the host name does not resolve") from exc
        found: list[IPAddress] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if address not in found:
                found.append(address)
        if not self.allows_name(host):
            for address in found:
                if (refused := self.address_refusal(address)) is not None:
                    raise RefusedAddress(f"refused address: the host resolves to an address that is {refused}")
        if not found:
            raise httpx.ConnectError("the host name does not resolve")
        return found

    async def registration_refusal(self, host: str) -> str | None:
        """Return why a host may not be registered: ``refusal``, then what it resolves to now. A name that does not
        resolve (yet) passes here; every connection checks it again."""
        if (why := self.refusal(host)) is not None:
            return why
        try:
            async with asyncio.timeout(self.resolve_seconds):
                await self.resolve(host, 443)
        except RefusedAddress as exc:
            return str(exc).removeprefix("refused address: ")
        except (httpx.ConnectError, TimeoutError):
            return None
        return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves the host itself, checks every address, and connects to a
    checked one (httpcore then starts TLS with the original host name, so SNI and certificate checks hold)."""

    def __init__(self, policy: OutboundPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await asyncio.wait_for(self.policy.resolve(host, port), timeout)
        except TimeoutError:
            raise httpcore.ConnectTimeout("the host name did not resolve in time") from None
        except RefusedAddress as exc:
            raise httpcore.ConnectError(str(exc)) from None
        except httpx.ConnectError as exc:
            raise httpcore.ConnectError(str(exc)) from None
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("refused address: unix sockets are not called")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, its connections made through ``GuardedBackend``; no proxy, no Unix socket.

    httpx does not take a network backend, so the pool it built is replaced by an ``httpcore.AsyncConnectionPool``
    (httpcore's public API) with the same figures and the guarded backend; requests and errors are still mapped by
    httpx (a refused address is an ``httpx.ConnectError`` whose message starts with "refused address").
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        limits: httpx.Limits | None = None,
        verify: ssl.SSLContext | bool = True,
        http2: bool = False,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        context = verify if isinstance(verify, ssl.SSLContext) else _context(verify, http2)
        super().__init__(verify=context, trust_env=False, limits=limits, http2=http2)
        self.policy = policy
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=http2,
            network_backend=GuardedBackend(policy),
        )


@functools.cache
def _context(verify: bool, http2: bool) -> ssl.SSLContext:
    """Return httpx's TLS context for ``verify``, built once per process: building one reads the whole CA bundle
    (about 20-40 ms), and every client (webhooks, each EHR's connector, the JWKS fetcher) wants the same one. An
    ``SSLContext`` is meant to be shared by connections; httpcore sets its ALPN protocols at each connection, so
    HTTP/2 clients get one of their own."""
    return httpx.create_ssl_context(verify=verify)


def refused(exc: BaseException) -> bool:
    """Tell whether an error (or its cause) is the address guard refusing a connection."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, RefusedAddress) or str(seen).startswith("refused address"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
