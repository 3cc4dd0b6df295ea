"""Transfer slots: a bound on streams in progress, in total and per client.

    slots = StreamSlots(total=64, per_client=16)
    client = client_key(context.peer())     # "127.0.0.1", or "2001:db8:1:2::/64"
    refusal = slots.acquire(client)         # None, or why not (one line, for the status)
    ...
    slots.release(client)                   # or, for a stream that cannot be ended yet:
    slots.release_total(client)             #   its place in the total now,
    slots.release_share(client)             #   its place in the client's share when it ends

Without a per-client share, one client address holding every slot (opening streams
and then never reading or sending) locks every other client out. A client is its IPv4
address, or its IPv6 /64 (one host commonly owns a whole /64), as in the peer table's
per-network bound. Framework-free: the servicer maps a refusal to RESOURCE_EXHAUSTED.

The split release is for a download whose client stopped reading: the server gives up
on it (its handler ends), but grpc.aio cannot reset the HTTP/2 stream from the server
side, so the stream and its last unsent chunk live until the client goes away. It no
longer counts in the total, so it blocks no one else; it still counts in its client's
share, so one client can leave at most `per_client` of them behind.
"""

from __future__ import annotations

from peerfind.clients import client_of

__all__ = ["StreamSlots", "client_key"]


def client_key(peer: str) -> str:
    """The client a gRPC `context.peer()` string ("ipv4:1.2.3.4:5", "ipv6:[::1]:5",
    "unix:/path") counts as: `peerfind.clients.client_of` its address; a unix socket
    (or anything else without an address) counts as the string itself."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host = rest.rpartition(":")[0]
    return client_of(host) if host else peer


class StreamSlots:
    """Counts streams in progress; `acquire` refuses past `total`, or past `per_client`
    for one client. Every successful `acquire` must be paired with one `release`."""

    def __init__(self, total: int, per_client: int) -> None:
        if total < 1 or per_client < 1:
            raise ValueError("total and per_client must be at least 1")
        self.total = total
        self.per_client = min(per_client, total)
        self._active = 0
        self._by_client: dict[str, int] = {}  # streams in the total and lingering ones
        self._lingering = 0

    @property
    def active(self) -> int:
        """Streams in progress, all clients together."""
        return self._active

    @property
    def lingering(self) -> int:
        """Streams out of the total but still in their client's share (release_total)."""
        return self._lingering

    def held_by(self, client: str) -> int:
        """Streams counted in `client`'s share (in progress, or lingering)."""
        return self._by_client.get(client, 0)

    def acquire(self, client: str) -> str | None:
        """Take a slot for `client`; None when taken, else why not (nothing changes)."""
        if self._active >= self.total:
            return f"too many transfers in progress (limit {self.total}); retry later"
        held = self._by_client.get(client, 0)
        if held >= self.per_client:
            return (
                f"too many transfers open from {client}, in progress or stalled "
                f"(limit {self.per_client} per client); retry later"
            )
        self._active += 1
        self._by_client[client] = held + 1
        return None

    def release(self, client: str) -> None:
        """Give back a slot `acquire` gave `client`."""
        self.release_total(client)
        self.release_share(client)

    def release_total(self, client: str) -> None:
        """Give back the place in the total of a stream of `client`; its place in the
        client's share stays taken until `release_share(client)`."""
        if self._by_client.get(client, 0) <= 0 or self._active <= 0:
            raise RuntimeError(f"release without acquire for {client}")
        self._active -= 1
        self._lingering += 1

    def release_share(self, client: str) -> None:
        """Give back the place in `client`'s share of a stream `release_total` let go."""
        held = self._by_client.get(client, 0)
        if held <= 0 or self._lingering <= 0:
            raise RuntimeError(f"release_share without release_total for {client}")
        self._lingering -= 1
        if held == 1:
            del self._by_client[client]  # the table holds only clients with streams
        else:
            self._by_client[client] = held - 1
