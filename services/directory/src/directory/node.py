"""The running peer as the directory sees it: its parts, built and wired once.

Created once per app in the lifespan; routers reach it through `deps.NodeDep`. The
parts live in their own modules: `transport` (the one HTTP client to peers), `auth`
(the cluster token), `forwarding` (searches sent on), `membership` + `peercalls`
(who we know), `search` (the router), `summary` + `summarysync` (routing summaries: ours,
our neighbours', and the loop that keeps both fresh), `health` (this peer's health).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from directory.auth import PeerAuth
from directory.forwarding import SearchForwarder
from directory.health import HealthReport, TransferProbe
from directory.identity import KeyBook, PeerKey
from directory.membership import FilePeerMemory, Membership
from directory.metrics import SearchMetrics, SummaryMetrics
from directory.peercalls import RestPeerCalls
from directory.peers import PeerTable
from directory.ratelimit import RateLimiter
from directory.search import SearchPolicy, SearchRouter
from directory.summary import SummaryBook
from directory.summarysync import SummaryFetcher, SummaryUpkeep
from directory.transport import PeerHttp
from directory.urlguard import PeerUrlGuard
from peerfind.config import PeerSettings
from peerfind.index import FileEntry, IndexReader

__all__ = [
    "FORWARD_RATE_FACTOR",
    "INLINE_SEARCH_BUDGET_S",
    "SEARCH_QUEUE",
    "SEARCH_THREADS",
    "Node",
    "SearchBusy",
]

logger = logging.getLogger(__name__)

# Forwarded searches get their own, larger per-address budget: one busy entry peer
# forwards every client's search from a single address.
FORWARD_RATE_FACTOR = 10
# A local search runs on the event loop for up to this long; one that takes longer
# (a common substring in a very large index) is abandoned and run again on a thread.
# Most take less than the hop to a worker thread and back (docs/benchmarks.md).
INLINE_SEARCH_BUDGET_S = 0.001
# Searches that go to a thread get threads of their own, so that a burst of slow ones (a
# common two-character substring in a large index) cannot take the default executor's
# threads that /health, /files and content lookups use; and at most SEARCH_QUEUE of them
# wait at once, more fail at once (a partial answer, not a queue that outlives deadlines).
SEARCH_THREADS = 2
SEARCH_QUEUE = 64


class SearchBusy(RuntimeError):
    """Too many local searches are waiting for a thread."""


class Node:
    def __init__(self, settings: PeerSettings) -> None:
        self.settings = settings
        self.reader = IndexReader(settings.index_path)
        self.auth = PeerAuth(settings.cluster_token.get_secret_value())
        self.http = PeerHttp(
            host=settings.host, ca_file=settings.tls_ca_file, timeout_s=settings.request_timeout_s
        )
        self.table = PeerTable(
            settings.peer_id,
            ttl_s=settings.peer_ttl_s,
            max_peers=settings.active_view,
            friend_urls=settings.friends,
            max_per_network=settings.max_peers_per_network,
        )
        self.membership = Membership(
            settings,
            self.table,
            RestPeerCalls(
                self.http,
                self.auth,
                self_url=settings.self_url,
                timeout_s=settings.request_timeout_s,
            ),
            PeerUrlGuard(settings.peer_networks, resolve_hostnames=settings.resolve_hostnames),
            FilePeerMemory(settings.peers_path),
            key=PeerKey.load_or_create(settings.identity_path),
            keys=KeyBook(settings.keys_path),
        )
        self.forward = SearchForwarder(self.http, self.auth)
        self.search_policy = SearchPolicy(
            default_fanout=settings.default_fanout,
            max_fanout=settings.max_fanout,
            default_ttl=settings.default_ttl,
            max_ttl=settings.max_ttl,
            default_timeout_ms=settings.search_timeout_ms,
            adaptive_timeout_ms=settings.adaptive_search_timeout_ms,
            walk_ttl=settings.walk_ttl,
            max_walk_ttl=settings.max_walk_ttl,
            default_budget=settings.search_budget,
            max_budget=settings.max_search_budget,
            max_results=settings.max_results,
        )
        self.summaries = SummaryBook(
            settings.peer_id, SummaryFetcher(self.http, self.auth), events=SummaryMetrics()
        )
        self.summary_upkeep = SummaryUpkeep(
            self.summaries,
            self.reader,
            self.table.peers,
            interval_s=settings.summary_refresh_s,
        )
        self.router = SearchRouter(
            peer_id=settings.peer_id,
            rest_url=settings.self_url,
            grpc_address=settings.grpc_advertise,
            table=self.table,
            local_search=self.local_search,
            forward=self.forward,
            max_results=settings.max_results,
            events=SearchMetrics(),
            summaries=self.summaries,
        )
        self.limiter = RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst)
        self.forward_limiter = RateLimiter(
            settings.rate_limit_rps * FORWARD_RATE_FACTOR,
            settings.rate_limit_burst * FORWARD_RATE_FACTOR,
        )
        self.transfer = TransferProbe(settings)
        self.health = HealthReport(
            settings, self.reader, self.table, self.transfer, self.membership.key.key_id
        )
        self._background: list[asyncio.Task[None]] = []
        self._search_pool = ThreadPoolExecutor(SEARCH_THREADS, thread_name_prefix="search")
        self._search_slots = asyncio.BoundedSemaphore(SEARCH_QUEUE)

    def start_background(self) -> None:
        """Start bootstrap + heartbeat and the summaries' upkeep (once the REST server
        accepts connections)."""
        if not self._background:
            self._background = [
                asyncio.create_task(self.membership.run()),
                asyncio.create_task(self.summary_upkeep.run()),
            ]

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.membership.close()
        await self.http.close()
        await self.transfer.close()
        self._search_pool.shutdown(wait=False, cancel_futures=True)

    async def local_search(self, query: str, limit: int) -> list[FileEntry]:
        found = self.reader.try_search(query, limit, INLINE_SEARCH_BUDGET_S)
        if found is not None:
            return found
        if self._search_slots.locked():
            raise SearchBusy(f"{SEARCH_QUEUE} local searches already waiting")
        async with self._search_slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._search_pool, self.reader.search, query, limit)
