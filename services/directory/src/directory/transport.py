"""The directory's one HTTP client to other peers, configured once.

Membership (health checks, registrations) and forwarded searches go through the same
aiohttp session: our own source address, our CA, no proxies from the environment, no
redirects, keep-alive below uvicorn's, a bounded pool per neighbour. aiohttp rather
than httpx because a forwarded search is the hot path of a search (docs/benchmarks.md,
"search path").

Every call has a total deadline (a peer that drips its answer a byte at a time cannot
hold it longer) and a size cap on the answer, checked before reading when the peer
declares a length. Failures are `PeerCallError` with a short reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import aiohttp

from peerfind.errors import short_error
from peerfind.tls import TlsFiles, client_ssl_context

__all__ = [
    "DEFAULT_MAX_ANSWER_BYTES",
    "KEEPALIVE_EXPIRY_S",
    "MAX_CONNECTIONS_PER_PEER",
    "AnswerTooLarge",
    "PeerAnswer",
    "PeerCallError",
    "PeerHttp",
    "source_address",
]

# Below uvicorn's 5 s keep-alive, so pooled connections are not closed under us.
KEEPALIVE_EXPIRY_S = 4.0
# Calls in flight to one neighbour (connections to one address): a few warm ones serve a
# busy entry best (docs/benchmarks.md), and a slow peer never holds the slots of others.
MAX_CONNECTIONS_PER_PEER = 8
# A full search answer of max_results hits is well under 1 MiB.
DEFAULT_MAX_ANSWER_BYTES = 8 * 1024 * 1024


class RequestOptions(TypedDict, total=False):
    """What a call to a peer may carry besides its method and URL."""

    params: Mapping[str, str | int] | None
    json_body: Any
    headers: Mapping[str, str] | None
    server_hostname: str | None  # the TLS name when connecting to a pinned address
    max_bytes: int | None  # the answer's cap (default: max_answer_bytes)


class PeerCallError(Exception):
    """A call to a peer failed: unreachable, timed out, or an answer we refuse."""


class AnswerTooLarge(PeerCallError):
    """The peer's answer is larger than the call's `max_bytes`."""


@dataclass(frozen=True, slots=True)
class PeerAnswer:
    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON; PeerCallError when it is not."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise PeerCallError("answer is not JSON") from None


def source_address(host: str) -> str | None:
    """The address to talk from: the one we listen on, unless it is unspecified."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return None if address.is_unspecified else str(address)


class PeerHttp:
    """HTTP calls to peers. Create inside a running loop; `close()` when done."""

    def __init__(
        self,
        *,
        host: str,
        ca_file: Any = None,
        timeout_s: float,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_answer_bytes = max_answer_bytes
        source = source_address(host)
        connector = aiohttp.TCPConnector(
            limit=256,
            limit_per_host=MAX_CONNECTIONS_PER_PEER,
            keepalive_timeout=KEEPALIVE_EXPIRY_S,
            # Talk to peers from our own address (on a multi-address host, and on
            # 127.0.0.x in tests, the source then says which peer is talking).
            local_addr=(source, 0) if source else None,
            ssl=client_ssl_context(TlsFiles(ca_file=ca_file)),
            # No DNS cache: a peer whose name moved to a new address (a restarted
            # container) is reached at once, not after aiohttp's 10 s cache; pooled
            # connections keep the lookups off the hot path.
            use_dns_cache=False,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            # The backstop; each call's own deadline is tighter.
            timeout=aiohttp.ClientTimeout(total=max(timeout_s * 4, 10.0)),
        )

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self,
        method: str,
        url: str,
        *,
        timeout_s: float | None = None,
        **options: Unpack[RequestOptions],
    ) -> PeerAnswer:
        """One request with a total deadline and a capped answer. Raises PeerCallError."""
        deadline = self.timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(deadline):
                return await self.request(method, url, **options)
        except TimeoutError:
            raise PeerCallError("timeout") from None
        except aiohttp.ClientConnectorError as exc:
            raise PeerCallError(f"connection failed: {short_error(exc.os_error)}") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise PeerCallError(short_error(exc)) from None

    async def request(self, method: str, url: str, **options: Unpack[RequestOptions]) -> PeerAnswer:
        """The same request with no deadline of its own and aiohttp's errors as they are:
        for a caller that bounds the call itself (the search router's hop budget)."""
        # A pooled connection the peer closed (it restarted) is no failure: aiohttp sends
        # an idempotent request once more on a fresh one (test_forward.py shows it).
        async with self.session.request(
            method,
            url,
            params=options.get("params"),
            json=options.get("json_body"),
            headers=options.get("headers"),
            server_hostname=options.get("server_hostname"),
            allow_redirects=False,
        ) as response:
            cap = options.get("max_bytes")
            cap = self.max_answer_bytes if cap is None else cap
            return PeerAnswer(response.status, await self._read(response, cap))

    @staticmethod
    async def _read(response: aiohttp.ClientResponse, cap: int) -> bytes:
        declared = response.content_length
        if declared is not None and declared > cap:
            raise AnswerTooLarge(f"answer of {declared} bytes is too large")
        body = bytearray()
        async for data in response.content.iter_any():
            body += data
            if len(body) > cap:
                raise AnswerTooLarge(f"answer larger than {cap} bytes")
        return bytes(body)
