"""The SSRF guard: may this peer call a URL that somebody else gave it?

`/register` makes the peer call the URL in the request, and registration answers
teach it more URLs. Before any such call the URL goes through `PeerUrlGuard`:

- http(s) only, no credentials, path, query or fragment;
- the host is resolved once (or must be an IP literal when `resolve_hostnames`
  is off) and the call is pinned to that address, so a DNS answer that changes
  between the check and the connection (rebinding) cannot redirect it;
- with `peer_networks` empty, loopback, link-local (169.254.0.0/16: cloud
  metadata), multicast, unspecified and reserved addresses are refused, also in
  their IPv4-mapped IPv6 form, and so are the cloud metadata endpoints outside
  169.254/16 (METADATA_NETWORKS: AWS's IPv6 one, Alibaba's, Azure's WireServer);
  private networks are allowed (peers live there);
- with `peer_networks` set, the address must be inside one of those networks
  (this is how local mode allows 127.0.0.0/8: explicit config, not a hole).

Redirects are never followed (the HTTP client is built with follow_redirects=False).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from peerfind.config import validate_http_url

__all__ = [
    "DEFAULT_RESOLVE_TIMEOUT_S",
    "METADATA_NETWORKS",
    "PeerUrlGuard",
    "PinnedUrl",
    "UrlRefused",
    "forbidden_reason",
]

DEFAULT_RESOLVE_TIMEOUT_S = 2.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]


class UrlRefused(ValueError):
    """The URL may not be called; `reason` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PinnedUrl:
    """A checked URL and the address to connect to instead of resolving again."""

    url: str  # as given (normalized), what the peer is known by
    address: str  # the resolved IP that passed the check
    host: str  # the host as written in the URL (Host header, TLS SNI)
    port: int
    scheme: str

    @property
    def base(self) -> str:
        """The URL to connect to: the checked address, never the name again."""
        literal = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{literal}:{self.port}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _unmap(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# Cloud metadata and host-agent endpoints that are not link-local, so no address
# class covers them; each sits inside a range peers may use (ULA, CGNAT, public), so
# only the exact address is refused, not its network.
METADATA_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "fd00:ec2::254/128",  # AWS instance metadata over IPv6 (IMDS)
        "100.100.100.200/32",  # Alibaba Cloud instance metadata
        "168.63.129.16/32",  # Azure WireServer (host agent, instance metadata)
    )
)


def forbidden_reason(address: IPAddress) -> str | None:
    """Why the default policy refuses `address`, or None if it may be called."""
    address = _unmap(address)
    if any(address.version == n.version and address in n for n in METADATA_NETWORKS):
        return "metadata"
    checks = (
        ("loopback", address.is_loopback),
        ("link_local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
    )
    for reason, hit in checks:
        if hit:
            return reason
    if isinstance(address, ipaddress.IPv4Address) and address in _BROADCAST:
        return "reserved"
    return None


_BROADCAST = ipaddress.ip_network("255.255.255.255/32")


async def _system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class PeerUrlGuard:
    """Checks URLs before the peer calls them (see the module docstring)."""

    def __init__(
        self,
        peer_networks: Iterable[str] = (),
        *,
        resolve_hostnames: bool = True,
        resolver: Resolver | None = None,
        resolve_timeout_s: float = DEFAULT_RESOLVE_TIMEOUT_S,
    ) -> None:
        self.networks: list[IPNetwork] = [
            ipaddress.ip_network(n, strict=False) for n in peer_networks
        ]
        self.resolve_hostnames = resolve_hostnames
        self.resolver = resolver or _system_resolver
        self.resolve_timeout_s = resolve_timeout_s

    def check_address(self, address: IPAddress) -> None:
        """Raise UrlRefused unless the policy lets the peer call `address`."""
        plain = _unmap(address)
        if self.networks:
            if not any(plain.version == n.version and plain in n for n in self.networks):
                raise UrlRefused("not_allowed", f"{address} is outside the allowed peer networks")
            return
        reason = forbidden_reason(plain)
        if reason is not None:
            raise UrlRefused(
                reason,
                f"{address} is a {reason.replace('_', '-')} address "
                "(list its network in the peer_networks config to allow it)",
            )

    async def check(self, url: str) -> PinnedUrl:
        """Validate, resolve once and check `url`; raise UrlRefused if it may not be called."""
        try:
            url = validate_http_url(url)
        except ValueError as exc:
            raise UrlRefused("invalid_url", f"url: {exc}") from None
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            self.check_address(literal)
            return PinnedUrl(url, str(literal), host, port, parts.scheme)
        if not self.resolve_hostnames:
            raise UrlRefused("hostname", "this peer accepts only IP addresses in peer URLs")
        try:
            found = await asyncio.wait_for(self.resolver(host, port), self.resolve_timeout_s)
        except (OSError, TimeoutError, UnicodeError) as exc:
            raise UrlRefused("unresolvable", f"cannot resolve {host}: {exc}") from None
        if not found:
            raise UrlRefused("unresolvable", f"cannot resolve {host}")
        # Every address the name has must pass: a name that also points at a
        # forbidden address could be steered to it on another lookup.
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]
        for address in addresses:
            self.check_address(address)
        return PinnedUrl(url, str(addresses[0]), host, port, parts.scheme)
