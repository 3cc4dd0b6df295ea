"""Virtual peers running peerfind's own code, behind a virtual transport.

Each `SimPeer` holds the product's real `PeerTable`, `SeenQueries` and `SearchRouter`
(and, for joins, its real `Membership`), wired exactly as `directory.node.Node` wires
them, except that the functions they are given talk to this module instead of a socket:

- `forward` sends a search request to another virtual peer: one-way latency there, the
  target's processing time, the target's own router, one-way latency back;
- membership's `PeerCalls` (health, register, overlay messages) travel the same way;
- the local search is a substring match over the peer's file names.

The link model (`LinkModel`): per-link one-way latency drawn once from a log-normal
distribution (seeded by the pair, so a link is as slow both ways and every run alike),
independent message loss, per-peer processing time, and peers that are down (a
connection refused after one round trip) or hung (never answer: the caller's deadline
decides). Everything random comes from seeded generators.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from directory.identity import Claim
from directory.membership import Membership, PeerUnavailable, RegistrationError
from directory.overlay import Descriptor
from directory.peers import Peer, PeerTable
from directory.search import SearchParams, SearchPolicy, SearchRouter, SeenQueries
from directory.summary import SummaryBook
from directory.urlguard import PinnedUrl
from peerfind.api import (
    OverlayAnswer,
    OverlayMessage,
    Proof,
    RegisterResponse,
    SearchMode,
    SearchRequest,
    SearchResponse,
    SummaryDoc,
)
from peerfind.config import PeerSettings
from peerfind.index import FileEntry

__all__ = ["LinkModel", "PeerCounters", "SimNetwork", "SimPeer"]

_NORMAL = statistics.NormalDist()
PEERS_PER_NETWORK = 4
_DEFAULTS = PeerSettings.model_fields


@dataclass(frozen=True, slots=True)
class LinkModel:
    """How the virtual network behaves. Times in seconds."""

    latency_median_s: float = 0.040
    latency_sigma: float = 0.5  # of the log-normal: p99 ~ 3.2x the median
    loss: float = 0.0  # per message, each way
    processing_median_s: float = 0.001
    processing_sigma: float = 0.5
    seed: int = 1

    def latency(self, a: int, b: int) -> float:
        lo, hi = (a, b) if a < b else (b, a)
        # A cheap, stable hash of the pair -> a uniform in (0, 1) -> the log-normal.
        h = (lo * 0x9E3779B1 ^ hi * 0x85EBCA77 ^ self.seed * 0xC2B2AE3D) & 0xFFFFFFFF
        h = (h ^ (h >> 15)) * 0x2C1B3C6D & 0xFFFFFFFF
        u = (h + 0.5) / 2**32
        return self.latency_median_s * math.exp(self.latency_sigma * _NORMAL.inv_cdf(u))

    def processing(self, rng: random.Random) -> float:
        return self.processing_median_s * math.exp(self.processing_sigma * rng.gauss(0.0, 1.0))


class Lost(ConnectionError):
    """The message was lost on the way (the caller sees a failed call)."""


@dataclass(slots=True)
class PeerCounters:
    """What one peer handled: requests received and answers received, by kind."""

    searches: int = 0  # search requests received
    duplicates: int = 0
    answers: int = 0  # search answers received (from the peers it forwarded to)
    membership: int = 0  # health + register requests received

    @property
    def handled(self) -> int:
        return self.searches + self.answers + self.membership


class _Events:
    """SearchEvents that count into the network's per-query tallies."""

    def __init__(self, net: SimNetwork, peer: SimPeer) -> None:
        self.net = net
        self.peer = peer

    def received(self, role: str) -> None:
        pass

    def duplicate(self) -> None:
        self.peer.counters.duplicates += 1
        self.net.tally.duplicates += 1

    def forwarded(self, count: int) -> None:
        pass

    def forward_failed(self) -> None:
        self.net.tally.forward_failures += 1

    def answered(self, role: str, outcome: str, *, seconds: float, hits: int, failed: int) -> None:
        pass


@dataclass(slots=True)
class QueryTally:
    """Counted while one query runs."""

    requests: int = 0
    answers: int = 0
    request_bytes: int = 0
    answer_bytes: int = 0
    duplicates: int = 0
    forward_failures: int = 0
    lost_to_deadline: int = 0  # forwards cancelled by a deadline before their answer came
    first_hit_s: float | None = None
    max_hops: int = 0


@dataclass(eq=False)
class SimPeer:
    index: int
    peer_id: str
    url: str
    address: str
    files: list[str]
    table: PeerTable
    router: SearchRouter
    rng: random.Random
    counters: PeerCounters = field(default_factory=PeerCounters)
    membership: Membership | None = None
    lowered: list[str] = field(default_factory=list)
    summaries: SummaryBook | None = None

    async def local_search(self, query: str, limit: int) -> list[FileEntry]:
        q = query.casefold()
        return [
            FileEntry(path=name, name=name, size=1, mtime=0.0)
            for name, low in zip(self.files, self.lowered, strict=True)
            if q in low
        ][:limit]


class SimNetwork:
    """N virtual peers. Build with `add`, link with `link` or `join`, query with `search`."""

    def __init__(
        self,
        model: LinkModel,
        *,
        max_peers: int = _DEFAULTS["active_view"].default,
        max_per_network: int = _DEFAULTS["max_peers_per_network"].default,
        max_results: int = _DEFAULTS["max_results"].default,
        seed: int = 1,
    ) -> None:
        self.model = model
        self.max_peers = max_peers
        self.max_per_network = max_per_network
        self.max_results = max_results
        self.rng = random.Random(seed)
        self.peers: list[SimPeer] = []
        self.by_url: dict[str, SimPeer] = {}
        self.by_id: dict[str, SimPeer] = {}
        self.down: set[int] = set()  # refuse connections
        self.hung: set[int] = set()  # accept and never answer
        self.tally = QueryTally()
        self.summary_bytes = 0
        self._entry: str | None = None
        self._wanted: str | None = None
        self._settings: PeerSettings | None = None
        self._depth: dict[str, int] = {}
        self.last_params: SearchParams | None = None
        # The product's defaults, with the fanout and TTL clamps opened so that the grid
        # can ask for any pair.
        self.policy = SearchPolicy(
            default_fanout=2,
            max_fanout=32,
            default_ttl=3,
            max_ttl=16,
            default_timeout_ms=2000,
            max_results=max_results,
        )

    # -- building ------------------------------------------------------------

    def _address(self, index: int) -> str:
        # PEERS_PER_NETWORK peers to a /24 (homes and small hosts), so the product's
        # per-network bound applies as it would, without binding every table.
        net, host = divmod(index, PEERS_PER_NETWORK)
        return f"10.{(net >> 8) & 0xFF}.{net & 0xFF}.{host + 1}"

    def add(self, files: Iterable[str] = (), *, peer_id: str | None = None) -> SimPeer:
        index = len(self.peers)
        peer_id = peer_id or f"p{index}"
        address = self._address(index)
        url = f"http://{address}:8000"
        rng = random.Random(self.rng.getrandbits(64))
        table = PeerTable(
            peer_id,
            ttl_s=30.0,
            max_peers=self.max_peers,
            max_per_network=self.max_per_network,
            clock=_loop_clock,
            rng=rng,
        )
        peer = SimPeer(
            index=index,
            peer_id=peer_id,
            url=url,
            address=address,
            files=list(files),
            table=table,
            router=None,  # type: ignore[arg-type]  # set just below
            rng=rng,
        )
        peer.lowered = [f.casefold() for f in peer.files]
        peer.summaries = SummaryBook(peer_id, self._summary_fetch(peer), clock=_loop_clock)
        peer.router = SearchRouter(
            peer_id=peer_id,
            rest_url=url,
            grpc_address=f"{address}:50051",
            table=table,
            local_search=peer.local_search,
            forward=self._forwarder(peer),
            max_results=self.max_results,
            seen=SeenQueries(clock=_loop_clock),
            events=_Events(self, peer),
            summaries=peer.summaries,
        )
        self.peers.append(peer)
        self.by_url[url] = peer
        self.by_id[peer_id] = peer
        return peer

    def link(self, a: SimPeer, b: SimPeer) -> None:
        """Make a and b neighbours (as a verified registration would)."""
        a.table.upsert(b.peer_id, b.url, f"{b.address}:50051", network=_network(b.address))
        b.table.upsert(a.peer_id, a.url, f"{a.address}:50051", network=_network(a.address))

    def settings_for(self, peer: SimPeer, friends: list[SimPeer], state: Path) -> PeerSettings:
        base = self._settings
        if base is None:
            base = self._settings = PeerSettings(
                peer_id="p0",
                host="10.0.0.1",
                self_url="http://10.0.0.1:8000",
                shared_dir=state,
                state_dir=state,
                active_view=self.max_peers,
                max_peers_per_network=self.max_per_network,
            )
        return base.model_copy(
            update={
                "peer_id": peer.peer_id,
                "host": peer.address,
                "self_url": peer.url,
                "grpc_advertise": f"{peer.address}:50051",
                "friend_primary": friends[0].url if friends else "",
                "friend_backup": friends[1].url if len(friends) > 1 else "",
            }
        )

    def attach_membership(self, peer: SimPeer, settings: PeerSettings) -> Membership:
        """Give `peer` the product's Membership, over virtual calls."""
        peer.table.friend_urls = set(settings.friends)
        peer.membership = Membership(
            settings,
            peer.table,
            _Calls(self, peer),
            _Guard(),
            _NoMemory(),
            clock=_loop_clock,
            rng=random.Random(peer.rng.getrandbits(64)),
        )
        return peer.membership

    async def publish_summaries(self, rounds: int = 2, *, rebuild: bool = True) -> None:
        """Every peer builds its summary (`rebuild`), then fetches its neighbours' `rounds`
        times (the second round brings the merged filters, which need the first)."""
        for peer in self.peers if rebuild else ():
            assert peer.summaries is not None
            peer.summaries.set_names(peer.files)
        for _ in range(rounds):
            await asyncio.gather(
                *(p.summaries.refresh(p.table.peers()) for p in self.peers if p.summaries)
            )

    def _summary_fetch(self, peer: SimPeer):  # type: ignore[no-untyped-def]
        async def fetch(target: Peer, etag: str | None) -> SummaryDoc | None:
            b = self.by_id[target.peer_id]
            await self._reach(peer, b)
            b.counters.membership += 1
            assert b.summaries is not None
            await self._travel(b, peer)
            if etag == b.summaries.version:
                self.summary_bytes += 200  # a 304: headers only
                return None
            doc = b.summaries.document()
            self.summary_bytes += 200 + len(doc.own.data) + len(doc.merged.data)
            return doc

        return fetch

    # -- the transport ---------------------------------------------------------

    async def _travel(self, a: SimPeer, b: SimPeer) -> None:
        await asyncio.sleep(self.model.latency(a.index, b.index))
        if self.model.loss and self.rng.random() < self.model.loss:
            raise Lost(f"message from {a.peer_id} to {b.peer_id} lost")

    async def _reach(self, a: SimPeer, b: SimPeer) -> None:
        """The request's way there and the target's processing time (one timer: the
        simulator's cost is its timers)."""
        latency = self.model.latency(a.index, b.index)
        if b.index in self.down:
            await asyncio.sleep(2 * latency)  # a refused connection costs a round trip
            raise ConnectionRefusedError(f"{b.peer_id} refused the connection")
        if b.index in self.hung:
            await asyncio.sleep(latency)
            await asyncio.Event().wait()  # the caller's deadline ends this
        await asyncio.sleep(latency + self.model.processing(b.rng))
        if self.model.loss and self.rng.random() < self.model.loss:
            raise Lost(f"message from {a.peer_id} to {b.peer_id} lost")

    def _forwarder(self, sender: SimPeer):  # type: ignore[no-untyped-def]
        async def forward(target: Peer, params: SearchParams) -> SearchResponse:
            tally = self.tally
            b = self.by_id[target.peer_id]
            tally.requests += 1
            tally.request_bytes += _request_bytes(params)
            answered = False
            try:
                await self._reach(sender, b)
                b.counters.searches += 1
                answer = await b.router.search(params)
                await self._travel(b, sender)
                answered = True
            finally:
                if not answered and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    tally.lost_to_deadline += 1
            tally.answers += 1
            tally.answer_bytes += len(answer.model_dump_json())
            sender.counters.answers += 1
            hops = self._depth[b.peer_id] = self._depth.get(sender.peer_id, 0) + 1
            tally.max_hops = max(tally.max_hops, hops)
            if (
                tally.first_hit_s is None
                and sender.peer_id == self._entry
                and any(h.name == self._wanted for h in answer.hits)
            ):
                tally.first_hit_s = asyncio.get_running_loop().time()
            return answer

        return forward

    # -- queries ---------------------------------------------------------------

    async def search(
        self,
        entry: SimPeer,
        query: str,
        *,
        fanout: int | None,
        ttl: int | None,
        timeout_ms: int | None = None,
        mode: SearchMode = "flood",
        wanted: int | None = None,
        budget: int | None = None,
    ) -> tuple[SearchResponse, QueryTally, float]:
        """One query entering at `entry`: its answer, its tally, its virtual duration."""
        self.tally = QueryTally()
        self._entry, self._wanted = entry.peer_id, query
        request = SearchRequest(
            query=query,
            fanout=fanout,
            ttl=ttl,
            timeout_ms=timeout_ms,
            mode=mode,
            max_results=wanted,
            budget=budget,
        )
        params = self.policy.params(
            request,
            new_id=lambda: f"q{self.rng.getrandbits(64):016x}",
        )
        self.last_params = params
        self._depth = {}
        loop = asyncio.get_running_loop()
        started = loop.time()
        entry.counters.searches += 1
        answer = await entry.router.search(params)
        took = loop.time() - started
        tally = self.tally
        if tally.first_hit_s is not None:
            tally.first_hit_s -= started
        elif any(h.peer_id == entry.peer_id for h in answer.hits):
            tally.first_hit_s = 0.0
        return answer, tally, took


# -- membership's virtual calls ------------------------------------------------------


class _Calls:
    """`membership.PeerCalls` over the virtual network."""

    def __init__(self, net: SimNetwork, peer: SimPeer) -> None:
        self.net = net
        self.peer = peer

    async def _go(self, url: str) -> SimPeer:
        target = self.net.by_url.get(url)
        if target is None:
            raise PeerUnavailable(f"cannot reach {url}: name or service not known")
        try:
            await self.net._reach(self.peer, target)
        except (ConnectionError, Lost) as exc:
            raise PeerUnavailable(f"cannot reach {url}: {exc}") from None
        target.counters.membership += 1
        return target

    async def health(
        self, url: str, pinned: PinnedUrl | None = None, challenge: str | None = None
    ) -> tuple[Claim, Proof | None]:
        try:
            target = await self._go(url)
        except PeerUnavailable as exc:
            raise RegistrationError("unreachable", str(exc)) from None
        await self.net._travel(target, self.peer)
        claim = Claim(target.peer_id, target.url, f"{target.address}:50051")
        membership = target.membership
        return claim, membership.prove(challenge) if membership is not None else None

    async def register(
        self, url: str, pinned: PinnedUrl | None = None, challenge: str | None = None
    ) -> RegisterResponse:
        target = await self._go(url)
        if target.membership is None:
            raise PeerUnavailable(f"{url} runs no membership")
        answer = await target.membership.welcome(self.peer.url, challenge)
        await self.net._travel(target, self.peer)
        return answer

    async def overlay(
        self,
        url: str,
        message: OverlayMessage,
        pinned: PinnedUrl | None = None,
        challenge: str | None = None,
    ) -> OverlayAnswer:
        target = await self._go(url)
        if target.membership is None:
            raise PeerUnavailable(f"{url} runs no membership")
        answer = await target.membership.receive(message, challenge)
        await self.net._travel(target, self.peer)
        return answer


class _Guard:
    """The URL guard's pinning, without DNS: every virtual URL is an IP literal."""

    async def check(self, url: str) -> PinnedUrl:
        parts = urlsplit(url)
        host = parts.hostname or ""
        return PinnedUrl(url, host, host, parts.port or 80, parts.scheme)


class _NoMemory:
    def load(self) -> list[tuple[str, str, str]]:
        return []

    def save(self, peers: Iterable[Descriptor]) -> None:
        pass


def _loop_clock() -> float:
    return asyncio.get_running_loop().time()


def _network(address: str) -> str:
    return address.rsplit(".", 1)[0] + ".0/24"


def _request_bytes(params: SearchParams) -> int:
    # GET /search?query=..&fanout=..&ttl=..&timeout_ms=..&qid=..&sender=.. plus ~120 bytes
    # of request line and headers; the query as sent, percent-encoded bytes counted once.
    return 120 + sum(len(k) + len(str(v)) + 2 for k, v in params.to_request().to_params().items())
