"""What counts as one client for a per-client limit: an IPv4 address, or an IPv6 /64.

    client_of("10.1.2.3")             # "10.1.2.3"
    client_of("2001:db8:1:2:aa::1")   # "2001:db8:1:2::/64" (one host commonly owns a /64)
    client_of("::ffff:10.1.2.3")      # "10.1.2.3"

The transfer slots (gRPC) and the REST connection cap share this one answer.
"""

from __future__ import annotations

import ipaddress

__all__ = ["client_of"]


def client_of(address: str) -> str:
    """The client `address` counts as; anything that is not an IP address counts as
    itself (a unix socket path, a name)."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").partition("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
