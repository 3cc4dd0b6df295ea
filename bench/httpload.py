"""A small HTTP/1.1 load generator: keep-alive connections, one request in flight each.

Written on asyncio streams rather than httpx so that the client side costs as
little CPU as possible on a 2-core machine: the servers under test, not the load
generator, should be what limits the figures. It is the same for our peer and
for the reference, so it never favours either.

    stats = asyncio.run(closed_loop("127.0.0.21", 8001, "/search?query=x", clients=50,
                                    duration_s=5, warmup_s=1))
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

__all__ = ["LoadStats", "closed_loop", "sequential"]


@dataclass
class LoadStats:
    """What one load run saw: latencies (seconds) of the requests in the window."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0
    flagged: int = 0  # answers whose body held `flag` (a partial search): not in latencies

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


class _Connection:
    def __init__(self, host: str, port: int, request: bytes, source: str | None) -> None:
        self.host, self.port, self.request, self.source = host, port, request, source
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        local = (self.source, 0) if self.source else None
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, local_addr=local
        )

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def fetch(self) -> tuple[int, bytes]:
        """One request; reconnects once if the server closed an idle connection."""
        for attempt in (0, 1):
            if self.writer is None:
                await self._open()
            assert self.reader is not None and self.writer is not None
            try:
                self.writer.write(self.request)
                head = await self.reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
                continue
            status = int(head[9:12])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                key = key.strip().lower()
                if key == b"content-length":
                    length = int(value)
                elif key == b"connection" and value.strip().lower() == b"close":
                    close = True
            body = await self.reader.readexactly(length)
            if close:
                await self.close()
            return status, body
        raise ConnectionError("unreachable")


def _request(host: str, port: int, target: str) -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n\r\n"
    ).encode()


async def sequential(
    host: str,
    port: int,
    target: str,
    *,
    requests: int,
    warmup: int = 20,
    flag: bytes | None = None,
    source: str | None = None,
) -> LoadStats:
    """One client, one request after another: latency with no queueing anywhere."""
    conn = _Connection(host, port, _request(host, port, target), source)
    stats = LoadStats()
    try:
        for _ in range(warmup):
            await conn.fetch()
        started = time.perf_counter()
        for _ in range(requests):
            t0 = time.perf_counter()
            status, body = await conn.fetch()
            t1 = time.perf_counter()
            if status != 200:
                stats.errors += 1
                continue
            if flag is not None and flag in body:
                stats.flagged += 1
                continue
            stats.latencies.append(t1 - t0)
        stats.seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return stats


async def closed_loop(
    host: str,
    port: int,
    target: str,
    *,
    clients: int,
    duration_s: float,
    warmup_s: float = 1.0,
    flag: bytes | None = None,
    sources: list[str] | None = None,
) -> LoadStats:
    """`clients` connections, each sending its next request as soon as one is answered.

    Requests answered within [warmup_s, warmup_s + duration_s) are counted; answers
    whose body holds `flag` are counted in `flagged` and not in `latencies`. Client
    i connects from sources[i % len(sources)] (distinct clients, as a per-client
    rate limit sees them).
    """
    request = _request(host, port, target)
    stats = LoadStats()
    start = time.perf_counter()
    window = (start + warmup_s, start + warmup_s + duration_s)

    async def client(source: str | None) -> None:
        conn = _Connection(host, port, request, source)
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= window[1]:
                    return
                try:
                    status, body = await conn.fetch()
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    stats.errors += 1
                    await conn.close()
                    await asyncio.sleep(0.01)
                    continue
                t1 = time.perf_counter()
                if window[0] <= t1 < window[1]:
                    if status != 200:
                        stats.errors += 1
                        continue
                    if flag is not None and flag in body:
                        stats.flagged += 1
                        continue
                    stats.latencies.append(t1 - t0)
        finally:
            await conn.close()

    await asyncio.gather(
        *(client(sources[i % len(sources)] if sources else None) for i in range(clients))
    )
    stats.seconds = duration_s
    return stats
