"""The running peer as the directory sees it: settings, index, table, membership, search.

Created once per app in the lifespan; routers reach it through `deps.NodeDep`.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time

import aiohttp
import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from directory.membership import Membership
from directory.peers import Peer, PeerTable
from directory.ratelimit import RateLimiter
from directory.search import SearchParams, SearchRouter
from peerfind import __version__
from peerfind.api import HealthResponse, IndexHealth, SearchResponse, TransferHealth
from peerfind.config import PeerSettings
from peerfind.index import FileEntry, IndexReader
from peerfind.tls import TlsFiles, channel_credentials, client_ssl_context

__all__ = ["INLINE_SEARCH_BUDGET_S", "MAX_FORWARDS_PER_PEER", "MAX_FORWARD_ANSWER_BYTES", "Node"]

logger = logging.getLogger(__name__)

_TRANSFER_CHECK_TTL_S = 2.0
_TRANSFER_CHECK_TIMEOUT_S = 0.5
# Below uvicorn's 5 s keep-alive, so pooled connections are not closed under us.
_KEEPALIVE_EXPIRY_S = 4.0
# Forwarded searches in flight to one neighbour (connections to one address): a few
# warm ones serve a busy entry best (bench/), and a slow peer never holds the slots of
# healthy ones.
MAX_FORWARDS_PER_PEER = 8
# A neighbour's answer to a forwarded search larger than this is refused (a full
# answer of max_results hits is well under 1 MiB).
MAX_FORWARD_ANSWER_BYTES = 8 * 1024 * 1024
# Forwarded searches get their own, larger per-address budget: one busy entry peer
# forwards every client's search from a single address.
_FORWARD_RATE_FACTOR = 10
# A local search runs on the event loop for up to this long; one that takes longer
# (a common substring in a very large index) is abandoned and run again on a thread.
# Most take 0.05-0.5 ms, less than the hop to a worker thread and back (bench/).
INLINE_SEARCH_BUDGET_S = 0.001


def _source_address(host: str) -> str | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return None if address.is_unspecified else str(address)


class ForwardError(Exception):
    """A neighbour answered a forwarded search with an error status or too large an answer."""


def _forward_session(settings: PeerSettings) -> aiohttp.ClientSession:
    """The client of forwarded searches, the hot path of a search.

    aiohttp rather than httpx (which membership keeps): a forwarded GET costs ~0.25 ms
    of CPU here against ~0.9 ms (docs/benchmarks.md). Same rules as the membership
    client: our own source address, our CA, no proxies from the environment, no
    redirects (per request), keep-alive below uvicorn's.
    """
    source = _source_address(settings.host)
    connector = aiohttp.TCPConnector(
        limit=256,
        limit_per_host=MAX_FORWARDS_PER_PEER,
        keepalive_timeout=_KEEPALIVE_EXPIRY_S,
        local_addr=(source, 0) if source else None,
        ssl=client_ssl_context(TlsFiles(ca_file=settings.tls_ca_file)),
    )
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        timeout=aiohttp.ClientTimeout(total=settings.request_timeout_s),
    )


async def _read_answer(response: aiohttp.ClientResponse) -> bytes:
    """The body, refused past MAX_FORWARD_ANSWER_BYTES (before reading, when declared)."""
    declared = response.content_length
    if declared is not None and declared > MAX_FORWARD_ANSWER_BYTES:
        raise ForwardError(f"answer of {declared} bytes is too large")
    body = bytearray()
    async for data in response.content.iter_any():
        body += data
        if len(body) > MAX_FORWARD_ANSWER_BYTES:
            raise ForwardError(f"answer larger than {MAX_FORWARD_ANSWER_BYTES} bytes")
    return bytes(body)


class Node:
    def __init__(self, settings: PeerSettings) -> None:
        self.settings = settings
        self.started_at = time.time()
        self.reader = IndexReader(settings.index_path)
        limits = httpx.Limits(
            max_connections=256,
            max_keepalive_connections=64,
            keepalive_expiry=_KEEPALIVE_EXPIRY_S,
        )
        self.http = httpx.AsyncClient(
            timeout=settings.request_timeout_s,
            follow_redirects=False,
            trust_env=False,
            limits=limits,
            # Talk to peers from our own address (on a multi-address host, and
            # on 127.0.0.x in tests, the source then says which peer is talking).
            transport=httpx.AsyncHTTPTransport(
                limits=limits,
                local_address=_source_address(settings.host),
                verify=client_ssl_context(TlsFiles(ca_file=settings.tls_ca_file)),
            ),
        )
        self.table = PeerTable(
            settings.peer_id,
            ttl_s=settings.peer_ttl_s,
            max_peers=settings.max_peers,
            friend_urls=settings.friends,
            max_per_network=settings.max_peers_per_network,
        )
        self.forward_http = _forward_session(settings)
        self.membership = Membership(settings, self.table, self.http)
        self.router = SearchRouter(
            peer_id=settings.peer_id,
            rest_url=settings.self_url,
            grpc_address=settings.grpc_advertise,
            table=self.table,
            local_search=self.local_search,
            forward=self.forward,
            max_results=settings.max_results,
        )
        self.limiter = RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst)
        self.forward_limiter = RateLimiter(
            settings.rate_limit_rps * _FORWARD_RATE_FACTOR,
            settings.rate_limit_burst * _FORWARD_RATE_FACTOR,
        )
        self._token = settings.cluster_token.get_secret_value().encode()
        self._channel: grpc.aio.Channel | None = None
        self._transfer_ok = False
        self._transfer_checked = 0.0
        self._background: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------

    def start_background(self) -> None:
        """Start bootstrap + heartbeat (once the REST server accepts connections)."""
        if self._background is None:
            self._background = asyncio.create_task(self.membership.run())

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)
        await self.membership.close()
        await self.http.aclose()
        await self.forward_http.close()
        if self._channel is not None:
            await self._channel.close(grace=None)

    def token_ok(self, presented: str | None) -> bool:
        """True when no cluster token is set, or `presented` matches it (constant time)."""
        if not self._token:
            return True
        return presented is not None and hmac.compare_digest(presented.encode(), self._token)

    # -- search -----------------------------------------------------------

    async def local_search(self, query: str, limit: int) -> list[FileEntry]:
        found = self.reader.try_search(query, limit, INLINE_SEARCH_BUDGET_S)
        if found is not None:
            return found
        return await asyncio.to_thread(self.reader.search, query, limit)

    async def forward(self, peer: Peer, params: SearchParams) -> SearchResponse:
        query: dict[str, str | int] = {
            "query": params.query,
            "fanout": params.fanout,
            "ttl": params.ttl,
            "timeout_ms": max(int(params.timeout_s * 1000), 1),
            "qid": params.query_id,
            "sender": params.sender or "",
        }
        async with self.forward_http.get(
            f"{peer.url}/search",
            params=query,
            headers=self.membership.auth_headers,
            # No per-request timeout: the router bounds each forward by its hop budget
            # (SearchRouter._forward_within); the session's is the backstop.
            allow_redirects=False,
        ) as response:
            if response.status != 200:
                raise ForwardError(f"HTTP {response.status}")
            body = await _read_answer(response)
        return SearchResponse.model_validate_json(body)

    # -- health -----------------------------------------------------------

    def _transfer_channel(self) -> grpc.aio.Channel:
        settings = self.settings
        if not settings.tls:
            return grpc.aio.insecure_channel(settings.transfer_address)
        # The local transfer presents the peer's certificate, issued for the
        # advertised name; we present the same certificate as a client (mTLS).
        return grpc.aio.secure_channel(
            settings.transfer_address,
            channel_credentials(settings.tls_files),
            options=[("grpc.ssl_target_name_override", settings.grpc_tls_name)],
        )

    async def transfer_serving(self) -> bool:
        """The local transfer service's gRPC health, cached for a couple of seconds."""
        now = time.monotonic()
        if now - self._transfer_checked < _TRANSFER_CHECK_TTL_S:
            return self._transfer_ok
        if self._channel is None:
            self._channel = self._transfer_channel()
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=""), timeout=_TRANSFER_CHECK_TIMEOUT_S
            )
            ok = bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.aio.AioRpcError:
            ok = False
        self._transfer_ok, self._transfer_checked = ok, time.monotonic()
        return ok

    async def health(self) -> HealthResponse:
        stats = await asyncio.to_thread(self.reader.stats)
        age = time.time() - stats.heartbeat_at if stats.heartbeat_at else None
        stale = not stats.available or age is None or age > self.settings.index_stale_after_s
        serving = await self.transfer_serving()
        return HealthResponse(
            status="ok" if serving and not stale else "degraded",
            peer=self.settings.peer_id,
            peer_id=self.settings.peer_id,
            url=self.settings.self_url,
            grpc_address=self.settings.grpc_advertise,
            version=__version__,
            uptime_s=round(time.time() - self.started_at, 3),
            peers=len(self.table),
            index=IndexHealth(
                available=stats.available,
                files=stats.files,
                bytes=stats.bytes,
                last_scan_at=stats.last_scan_at,
                age_s=round(age, 3) if age is not None else None,
                stale=stale,
            ),
            transfer=TransferHealth(address=self.settings.transfer_address, serving=serving),
        )
