"""Distributed search: local lookup, then a bounded flood to neighbours.

Every query carries an id, a TTL (hops left) and a deadline. A peer that sees a
query id again answers from its local index only and never forwards it (no loops;
the entry merges hits by peer and path, so cycles add no duplicates), and it never
forwards back to the sender. Neighbours that fail or miss the
deadline never fail the search: they are listed in `peers_failed` and the
answer says `partial: true`.

Framework-free: the router takes the local search, the forwarding call and its
metrics as arguments, and keeps time on the running event loop's clock (the one its
deadlines use), so unit tests and the simulator (sim/) drive it without servers, on
virtual time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import quote

from directory.lru import BoundedLru
from directory.peers import Peer, PeerTable
from directory.summary import QueryMatch, SummaryBook
from peerfind.api import (
    ADAPTIVE_SEARCH_TIMEOUT_MS,
    DEFAULT_SEARCH_BUDGET,
    DEFAULT_WALK_TTL,
    MAX_SEARCH_BUDGET,
    MAX_WALK_TTL,
    VISITED_BITS,
    FailedPeer,
    FileInfo,
    SearchHit,
    SearchRequest,
    SearchResponse,
    Skipped,
    SkipReason,
    TraceNode,
)
from peerfind.errors import short_error
from peerfind.index import FileEntry

__all__ = [
    "AUTO_MODE",
    "DEFAULT_ADAPTIVE_TIMEOUT_MS",
    "DEFAULT_BUDGET",
    "DEFAULT_MAX_BUDGET",
    "DEFAULT_WANTED",
    "FORWARD_COST",
    "FORWARD_MARGIN_S",
    "FORWARD_SHARE",
    "MIN_FORWARD_BUDGET_S",
    "NO_EVENTS",
    "WALK_HOP_MARGIN_S",
    "Forwarder",
    "LocalSearch",
    "Mode",
    "SearchEvents",
    "SearchParams",
    "SearchPolicy",
    "SearchRouter",
    "SeenQueries",
    "Visited",
    "content_url",
    "describe",
    "new_query_id",
]

logger = logging.getLogger(__name__)

# Each hop hands its neighbours a deadline this much shorter than its own, so
# their answers (even "I ran out of time") arrive before it has to answer.
FORWARD_MARGIN_S = 0.05
FORWARD_SHARE = 0.8
MIN_FORWARD_BUDGET_S = 0.05
# A walker's next hop gets the deadline left minus this: time for its answer to come back.
WALK_HOP_MARGIN_S = 0.3
WALK_GROWTH = 2  # walkers sent in place of one that came back with nothing
WALK_TRIES = 3  # neighbours a walker tries in turn when the one it chose fails
FORWARD_COST = 2  # messages: the request and its answer
DEFAULT_BUDGET = DEFAULT_SEARCH_BUDGET
DEFAULT_MAX_BUDGET = MAX_SEARCH_BUDGET
DEFAULT_ADAPTIVE_TIMEOUT_MS = ADAPTIVE_SEARCH_TIMEOUT_MS
# A dynamic query widens to the flood's default TTL plus the two hops summaries see.
DYNAMIC_EXTRA_TTL = 2
DEFAULT_WANTED = 1  # hits after which a walk or a dynamic query stops, unless asked otherwise
Mode = Literal["flood", "walk", "dynamic"]
AUTO_MODE: Mode = "walk"
"""What `mode=auto` runs: the simulator's best at 10,000 peers (docs/scale.md)."""
_ENTRY_MODES: dict[str, Mode] = {"flood": "flood", "walk": "walk", "dynamic": "dynamic"}

_Info = TypeVar("_Info", bound=FileInfo)
LocalSearch = Callable[[str, int], Coroutine[Any, Any, list[FileEntry]]]


class Visited:
    """The peers a query has been to: a Bloom filter of VISITED_BITS (4096) that travels with it.

    A false positive makes a peer look visited when it was not (a flood skips it, a walk
    prefers another); it never sends a query where it has already been twice.
    """

    __slots__ = ("bits",)
    HASHES = 3

    def __init__(self, bits: int = 0) -> None:
        self.bits = bits

    @classmethod
    def decode(cls, value: str | None) -> Visited:
        if not value:
            return cls()
        raw = base64.urlsafe_b64decode(value + "=")
        return cls(int.from_bytes(raw, "little"))

    def encode(self) -> str:
        raw = self.bits.to_bytes(VISITED_BITS // 8, "little")
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def _positions(peer_id: str) -> list[int]:
        h = int.from_bytes(hashlib.blake2b(peer_id.encode(), digest_size=8).digest(), "little")
        h1, h2 = h & 0xFFFFFFFF, (h >> 32) | 1
        return [(h1 + i * h2) % VISITED_BITS for i in range(Visited.HASHES)]

    def add(self, peer_id: str) -> None:
        for p in self._positions(peer_id):
            self.bits |= 1 << p

    def __contains__(self, peer_id: object) -> bool:
        return isinstance(peer_id, str) and all(
            self.bits >> p & 1 for p in self._positions(peer_id)
        )

    def with_(self, peer_ids: Iterable[str]) -> Visited:
        out = Visited(self.bits)
        for peer_id in peer_ids:
            out.add(peer_id)
        return out

    def merge(self, other: Visited) -> None:
        self.bits |= other.bits


@dataclass(frozen=True, slots=True)
class SearchParams:
    """One search as the router runs it: every limit resolved and clamped."""

    query: str
    fanout: int
    ttl: int
    timeout_s: float
    query_id: str
    sender: str | None = None
    forwarded: bool = False
    """Came from a peer (not a client): decides the metrics' role."""
    mode: Mode = "flood"
    wanted: int = 1000
    """Hits after which a walk or a dynamic query stops."""
    limit: int = 1000
    """Hits returned at most (`max_results` when asked for, else the peer's cap)."""
    budget: int = DEFAULT_MAX_BUDGET
    """Messages the query may still cost below this peer (requests plus answers)."""
    visited: Visited = field(default_factory=Visited)
    explain: bool = False

    def to_request(self) -> SearchRequest:
        """The request a neighbour receives when these parameters are forwarded to it."""
        return SearchRequest(
            query=self.query,
            fanout=self.fanout,
            ttl=self.ttl,
            timeout_ms=max(int(self.timeout_s * 1000), 1),
            qid=self.query_id,
            sender=self.sender,
            mode=self.mode,
            max_results=self.wanted,
            budget=self.budget,
            visited=self.visited.encode() if self.visited.bits else None,
            explain=self.explain or None,
        )


@dataclass(frozen=True, slots=True)
class SearchPolicy:
    """A peer's defaults and clamps for the searches it receives."""

    default_fanout: int
    max_fanout: int
    default_ttl: int
    max_ttl: int
    default_timeout_ms: int
    walk_ttl: int = DEFAULT_WALK_TTL
    max_walk_ttl: int = MAX_WALK_TTL
    default_budget: int = DEFAULT_BUDGET
    max_budget: int = DEFAULT_MAX_BUDGET
    default_wanted: int = DEFAULT_WANTED
    max_results: int = 1000
    adaptive_timeout_ms: int = DEFAULT_ADAPTIVE_TIMEOUT_MS
    """The deadline of a walk or a dynamic query unless asked otherwise: they go on, in
    waves or one neighbour at a time, until enough is found (a flood's is one pass)."""

    def params(
        self, request: SearchRequest, new_id: Callable[[], str] | None = None
    ) -> SearchParams:
        """`request` with this peer's defaults filled in and its clamps applied.

        A forwarded request runs as one step of a flood or a walk, whatever mode it names:
        only an entry peer runs waves or a dynamic query, so a forged sender or query id
        buys no more than the budget it carries, clamped here.
        """
        forwarded = request.is_forwarded
        mode: Mode
        if forwarded:
            mode = "walk" if request.mode == "walk" else "flood"
        else:
            mode = _ENTRY_MODES.get(request.mode or "auto", AUTO_MODE)
        fanout = self.default_fanout if request.fanout is None else request.fanout
        if mode == "flood":
            ttl = min(self.default_ttl if request.ttl is None else request.ttl, self.max_ttl)
            budget = self.max_budget if request.budget is None else request.budget
        elif mode == "dynamic":  # its widenings are floods: the flood's clamp
            ttl = self.default_ttl + DYNAMIC_EXTRA_TTL if request.ttl is None else request.ttl
            ttl = min(ttl, self.max_ttl)
            budget = self.default_budget if request.budget is None else request.budget
        else:
            ttl = min(self.walk_ttl if request.ttl is None else request.ttl, self.max_walk_ttl)
            budget = self.default_budget if request.budget is None else request.budget
        if forwarded and request.budget is None:
            budget = self.max_budget  # an older peer: the flood it always sent
        if mode == "flood" or forwarded:
            wanted = self.max_results if request.max_results is None else request.max_results
        else:
            wanted = self.default_wanted if request.max_results is None else request.max_results
        timeout_ms = request.timeout_ms
        if timeout_ms is None:
            timeout_ms = self.default_timeout_ms if mode == "flood" else self.adaptive_timeout_ms
        return SearchParams(
            query=request.query,
            fanout=min(fanout, self.max_fanout),
            ttl=ttl,
            timeout_s=timeout_ms / 1000,
            query_id=request.qid or (new_id or new_query_id)(),
            sender=request.sender,
            forwarded=forwarded,
            mode=mode,
            wanted=min(wanted, self.max_results),
            limit=min(
                self.max_results if request.max_results is None else request.max_results,
                self.max_results,
            ),
            budget=min(budget, self.max_budget),
            visited=Visited.decode(request.visited),
            explain=bool(request.explain),
        )


class SearchEvents(Protocol):
    """What a router reports as it answers; the directory counts it in Prometheus."""

    def received(self, role: str) -> None: ...
    def duplicate(self) -> None: ...
    def forwarded(self, count: int) -> None: ...
    def forward_failed(self) -> None: ...
    def answered(
        self, role: str, outcome: str, *, seconds: float, hits: int, failed: int
    ) -> None: ...


class _NoEvents:
    def received(self, role: str) -> None:
        pass

    def duplicate(self) -> None:
        pass

    def forwarded(self, count: int) -> None:
        pass

    def forward_failed(self) -> None:
        pass

    def answered(self, role: str, outcome: str, *, seconds: float, hits: int, failed: int) -> None:
        pass


NO_EVENTS: SearchEvents = _NoEvents()
"""Events counted nowhere (unit tests, the simulator's peers)."""

Forwarder = Callable[[Peer, SearchParams], Coroutine[Any, Any, SearchResponse]]


def content_url(rest_url: str, entry: FileEntry) -> str:
    """The owner's URL of the entry's bytes (routers/content.py): the name as the last
    path segment, so a browser saves it by that name, and the path in the query, so the
    link names this file even where another folder holds the same name. Both are
    percent-encoded whole ('/' only kept in the path, where it means what it means in
    a shared path): a name may hold '#', '?', '%', '&', '+', spaces or newlines."""
    name = quote(entry.name, safe="")
    return f"{rest_url}/files/{name}/content?path={quote(entry.path, safe='/')}"


def describe(
    entry: FileEntry, peer_id: str, rest_url: str, grpc_address: str, model: type[_Info]
) -> _Info:
    """An index entry as the API shows it: with its owner and where to fetch it.

    Validated from a dict: pydantic-core's loop runs in Rust, `model_construct`'s in
    Python, which made it the slower (docs/benchmarks.md, "Search: three directory-side
    causes").
    """
    return model.model_validate(
        {
            "name": entry.name,
            "path": entry.path,
            "size": entry.size,
            "mtime": entry.mtime,
            "peer_id": peer_id,
            "rest_url": rest_url,
            "grpc_address": grpc_address,
            "sha256": entry.sha256,
            "content_url": content_url(rest_url, entry),
        }
    )


def new_query_id() -> str:
    return uuid.uuid4().hex


class SeenQueries:
    """Query ids seen recently: bounded in count and in age."""

    def __init__(
        self,
        capacity: int = 10000,
        ttl_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._clock = clock
        self._seen: BoundedLru[str, float] = BoundedLru(capacity)

    def __len__(self) -> int:
        return len(self._seen)

    def first_time(self, query_id: str) -> bool:
        """Record `query_id`; True if it had not been seen within the TTL."""
        now = self._clock()
        cutoff = now - self.ttl_s
        seen = self._seen
        while (oldest := seen.oldest()) is not None and oldest < cutoff:
            seen.drop_oldest()
        if query_id in seen:
            return False
        seen.put(query_id, now)
        return True


class _Gathered:
    """Everything one peer's answer is made of, merged as the forwards come back."""

    def __init__(self, visited: Visited, explain: bool) -> None:
        self.hits: dict[tuple[str, str], SearchHit] = {}
        self.answered: dict[str, None] = {}  # an ordered set: merging stays linear
        self.failed: dict[str, FailedPeer] = {}
        self.truncated = False
        self.messages = 0
        self.visited = visited
        self.explain = explain
        self.children: list[TraceNode] = []
        self.skipped: list[Skipped] = []

    def skip(self, peers: Iterable[Peer], reason: SkipReason) -> None:
        if self.explain:
            self.skipped.extend(Skipped(peer_id=p.peer_id, reason=reason) for p in peers)

    def take(self, answer: SearchResponse, child: SearchParams) -> None:
        self.messages += 2 + answer.messages  # the request, the answer, and what it cost
        self.truncated = self.truncated or answer.truncated
        self.answered.update(dict.fromkeys(answer.peers_answered))
        for fp in answer.peers_failed:
            self.failed.setdefault(fp.peer_id, fp)
        hits = self.hits
        for hit in answer.hits:
            hits.setdefault((hit.peer_id, hit.path), hit)
        if answer.visited:
            self.visited.merge(Visited.decode(answer.visited))
        if self.explain:  # a peer that sent no tree (an older one) is a leaf of ours
            self.children.append(
                answer.trace
                or TraceNode(peer_id=answer.peer_id, ttl=child.ttl, hits=len(answer.hits))
            )

    def lose(self, peer: Peer, child: SearchParams, error: str) -> None:
        self.messages += 1  # the request went; no answer came back
        self.failed[peer.peer_id] = FailedPeer(peer_id=peer.peer_id, url=peer.url, error=error)
        if self.explain:
            self.children.append(
                TraceNode(peer_id=peer.peer_id, ttl=child.ttl, hits=0, error=error)
            )


class SearchRouter:
    """Answers one search: local hits plus what the mode's forwards bring back.

    flood    every hop forwards to up to `fanout` neighbours until the TTL runs out
    walk     the summary horizon (a flood to TTL 2 that summaries prune at both hops),
             then, while hits are short of `wanted`, `fanout` walkers, each one neighbour
             at a time for up to `ttl` hops, stopping at its first hit; the entry replaces
             walkers that come back short and calls the rest back once enough is in
    dynamic  a probe that goes only where summaries match, then one neighbour at a time
             flooded to `ttl` hops until `wanted` hits are in

    In every mode summaries prune the last two hops (a neighbour whose filter rules the
    query out is not asked), walkers head for neighbours whose summaries match, a query
    carries the peers it has been to (`Visited`) and never goes there again by choice,
    and every forward spends two messages of the query's budget.
    """

    def __init__(
        self,
        *,
        peer_id: str,
        rest_url: str,
        grpc_address: str,
        table: PeerTable,
        local_search: LocalSearch,
        forward: Forwarder,
        max_results: int,
        seen: SeenQueries | None = None,
        events: SearchEvents = NO_EVENTS,
        rng: random.Random | None = None,
        summaries: SummaryBook | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.rest_url = rest_url
        self.grpc_address = grpc_address
        self.table = table
        self.local_search = local_search
        self.forward = forward
        self.max_results = max_results
        self.seen = seen or SeenQueries()
        self.events = events
        self.rng = rng  # None: the table's own
        self.summaries = summaries

    @property
    def _rng(self) -> random.Random:
        return self.rng or self.table._rng

    async def _forward_within(
        self, peer: Peer, params: SearchParams, budget_s: float
    ) -> SearchResponse:
        # asyncio.timeout rather than wait_for: no second task, so the request goes
        # out as soon as this task first runs.
        async with asyncio.timeout(budget_s):
            return await self.forward(peer, params)

    # -- choosing where a query goes --------------------------------------------

    def _candidates(self, params: SearchParams, got: _Gathered) -> tuple[list[Peer], list[Peer]]:
        """Neighbours the query may go to: (not visited, visited), the sender left out."""
        fresh: list[Peer] = []
        seen: list[Peer] = []
        down: list[Peer] = []
        visited = params.visited
        for peer in self.table.peers():
            if peer.peer_id == params.sender:
                continue
            if peer.state == "down":
                down.append(peer)
            elif peer.peer_id in visited:
                seen.append(peer)
            else:
                fresh.append(peer)
        got.skip(down, "down")
        return fresh, seen

    def _pick(self, peers: list[Peer], n: int) -> list[Peer]:
        """n of `peers` at random, alive ones first."""
        pool = list(peers)
        self._rng.shuffle(pool)
        pool.sort(key=lambda p: p.state != "alive")
        return pool[:n]

    def _afford(
        self, params: SearchParams, targets: list[Peer], got: _Gathered
    ) -> tuple[list[Peer], int]:
        """The targets the budget pays for, and the budget each of them gets."""
        n = min(len(targets), params.budget // FORWARD_COST)
        got.skip(targets[n:], "budget")
        if n == 0:
            return [], 0
        return targets[:n], (params.budget - FORWARD_COST * n) // n

    def _flood_step(
        self, params: SearchParams, match: QueryMatch, got: _Gathered
    ) -> list[tuple[Peer, SearchParams]]:
        if params.ttl <= 0:
            return []
        fresh, seen = self._candidates(params, got)
        got.skip(seen, "visited")
        left = params.ttl - 1  # the hops the neighbour will still have
        if left <= 1:  # the summaries see that far: ask only where they may match
            check = match.holds if left == 0 else match.near
            kept = [p for p in fresh if check(p.peer_id) != "miss"]
            if len(kept) < len(fresh):
                got.skip([p for p in fresh if p not in kept], "summary_miss")
            fresh = kept
        chosen = self._pick(fresh, params.fanout)
        got.skip([p for p in fresh if p not in chosen], "not_chosen")
        chosen, budget = self._afford(params, chosen, got)
        return self._children(params, chosen, left, budget, "flood")

    def _walk_step(
        self,
        params: SearchParams,
        match: QueryMatch,
        got: _Gathered,
        walkers: int,
        *,
        entry: bool = False,
    ) -> list[tuple[Peer, SearchParams]]:
        """Where `walkers` walkers go from here: to neighbours that hold a match if any (and
        stop there), else towards ones that have a match nearby, else at random, never
        where the query has been; only new walkers leaving the entry pass through visited
        neighbours (to reach past them), a walker on its way stops instead."""
        if params.ttl <= 0:
            return []
        fresh, seen = self._candidates(params, got)
        holders = [p for p in fresh if match.holds(p.peer_id) == "match"]
        if holders:
            chosen, left = holders, 0
        else:
            near = [p for p in fresh if match.near(p.peer_id) == "match"]
            rest = [p for p in fresh if p not in near]
            chosen = self._pick(near, walkers)
            chosen += self._pick(rest, walkers - len(chosen))
            if len(chosen) < walkers and entry:  # past where the others have been
                chosen += self._pick(seen, walkers - len(chosen))
            left = params.ttl - 1
        got.skip([p for p in fresh + seen if p not in chosen], "not_chosen")
        chosen, budget = self._afford(params, chosen, got)
        return self._children(params, chosen, left, budget, "walk")

    def _probe(
        self, params: SearchParams, match: QueryMatch, got: _Gathered
    ) -> list[tuple[Peer, SearchParams]]:
        """A flood to TTL 2, which summaries prune at both hops: the neighbours whose merged
        summaries may match, and from them only the neighbours whose own may."""
        return self._flood_step(replace(params, ttl=min(params.ttl, 2), mode="flood"), match, got)

    def _children(
        self, params: SearchParams, targets: list[Peer], ttl: int, budget: int, mode: Mode
    ) -> list[tuple[Peer, SearchParams]]:
        if not targets:
            return []
        # Every target goes into every child's filter: siblings do not ask each other.
        visited = params.visited.with_([self.peer_id, *(p.peer_id for p in targets)])
        child = SearchParams(
            query=params.query,
            fanout=params.fanout,
            ttl=ttl,
            timeout_s=params.timeout_s,  # set per send, from the deadline left
            query_id=params.query_id,
            sender=self.peer_id,
            forwarded=True,
            mode=mode,
            wanted=params.wanted,
            limit=params.wanted,  # what the neighbour is sent as max_results
            budget=budget,
            visited=visited,
            explain=params.explain,
        )
        return [(peer, child) for peer in targets]

    # -- sending ------------------------------------------------------------------

    async def _send(
        self,
        sends: list[tuple[Peer, SearchParams]],
        deadline: float,
        got: _Gathered,
        *,
        started: Callable[[], Coroutine[Any, Any, None]] | None = None,
        answers: list[SearchResponse] | None = None,
    ) -> int:
        """Forward to every (peer, params) at once and merge what comes back by `deadline`;
        how many answered."""
        clock = asyncio.get_running_loop().time
        remaining = deadline - clock()
        tasks: dict[asyncio.Task[SearchResponse], tuple[Peer, SearchParams]] = {}
        for peer, child in sends:
            if child.mode == "walk":  # a walk is long and thin: keep one margin per hop
                budget_s = remaining - WALK_HOP_MARGIN_S
            else:
                budget_s = remaining * FORWARD_SHARE - FORWARD_MARGIN_S
            if budget_s < MIN_FORWARD_BUDGET_S:
                got.skip([peer], "budget")
                continue
            timed = replace(child, timeout_s=budget_s)
            task = asyncio.create_task(self._forward_within(peer, timed, budget_s))
            tasks[task] = (peer, timed)
        if tasks:
            self.events.forwarded(len(tasks))
            got.visited.merge(next(iter(tasks.values()))[1].visited)
        if started is not None:
            if tasks:
                # Let the forwards go out first, so that the neighbours are already at
                # work while the local index answers.
                await asyncio.sleep(0)
            await started()
        if not tasks:
            return 0
        try:
            done, pending = await asyncio.wait(tasks, timeout=max(deadline - clock(), 0.001))
        except asyncio.CancelledError:  # our asker gave up: so do our forwards
            for task in tasks:
                task.cancel()
            got.messages += len(tasks)  # the requests went out
            raise
        for task in pending:
            task.cancel()
        answered = 0
        for task, (peer, child) in tasks.items():
            error: BaseException | None = (
                task.exception() if task in done and not task.cancelled() else TimeoutError()
            )
            if error is not None:
                self.table.mark_failed(peer.peer_id)
                got.lose(peer, child, short_error(error))
                self.events.forward_failed()
                continue
            self.table.mark_alive(peer.peer_id)
            answer = task.result()
            got.take(answer, child)
            if answers is not None:
                answers.append(answer)
            answered += 1
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return answered

    async def _local(self, params: SearchParams, deadline: float, got: _Gathered) -> int:
        """Our own hits into `got`; how many."""
        clock = asyncio.get_running_loop().time
        try:
            async with asyncio.timeout(max(deadline - clock(), 0.001)):
                local = await self.local_search(params.query, self.max_results + 1)
        except Exception as exc:  # the local index failing is a partial answer too
            logger.warning("local search failed: %s", short_error(exc))
            got.failed[self.peer_id] = FailedPeer(
                peer_id=self.peer_id, url=self.rest_url, error=short_error(exc)
            )
            return 0
        got.truncated = len(local) > self.max_results
        for entry in local[: self.max_results]:
            got.hits[(self.peer_id, entry.path)] = describe(
                entry, self.peer_id, self.rest_url, self.grpc_address, SearchHit
            )
        got.answered[self.peer_id] = None
        return min(len(local), self.max_results)

    # -- one search -----------------------------------------------------------------

    async def search(self, params: SearchParams) -> SearchResponse:
        # One clock for the whole search: the loop's, which asyncio.timeout also uses.
        clock = asyncio.get_running_loop().time
        started = clock()
        role = "forwarded" if params.forwarded else "entry"
        events = self.events
        events.received(role)
        # A query seen before (it came by another route too) is answered from the
        # local index only and never flooded again: no loops, and the asker still
        # gets our hits when the route that brought the first copy is slow or dead.
        # Askers merge hits by (peer, path), so nothing is counted twice. A walker that
        # comes back through us goes on (its route is its own) without a second lookup.
        duplicate = not self.seen.first_time(params.query_id)
        if duplicate:
            events.duplicate()
        deadline = started + params.timeout_s
        got = _Gathered(params.visited.with_([self.peer_id]), params.explain)
        match = QueryMatch(self.summaries, params.query)
        local_hits = 0

        async def local() -> None:
            nonlocal local_hits
            local_hits = await self._local(params, deadline, got)

        if params.mode == "flood":
            sends = [] if duplicate else self._flood_step(params, match, got)
            await self._send(sends, deadline, got, started=local)
        elif params.forwarded:  # one step of a walk
            if not duplicate:
                await local()
            for _ in range(WALK_TRIES):  # a neighbour that fails: the walker goes elsewhere
                if local_hits:
                    break
                step = self._walk_step(self._spent(params, got), match, got, 1)
                if not step or await self._send(step, deadline, got):
                    break
        elif params.mode == "walk":
            # The summary horizon first, whatever our own index holds: every neighbour whose
            # summaries may match within two hops (nothing is sent where none does), so that
            # a small network answers in full; then walkers while hits are short.
            await self._send(self._probe(params, match, got), deadline, got, started=local)
            if params.fanout:
                await self._walkers(params, match, got, deadline)
        else:
            await local()
            await self._dynamic(params, match, got, deadline)

        for peer_id in got.answered:  # answered through another route after all
            got.failed.pop(peer_id, None)
        merged = list(got.hits.values())
        truncated = got.truncated
        cap = min(self.max_results, params.limit)
        if len(merged) > cap:
            merged, truncated = merged[:cap], True
        took = clock() - started
        failed = got.failed
        outcome = "partial" if failed else "complete"
        events.answered(role, outcome, seconds=took, hits=len(merged), failed=len(failed))
        trace = None
        if params.explain:
            trace = TraceNode(
                peer_id=self.peer_id,
                ttl=params.ttl,
                hits=local_hits,
                duplicate=duplicate,
                children=got.children,
                skipped=got.skipped,
            )
        return SearchResponse(
            query=params.query,
            query_id=params.query_id,
            peer_id=self.peer_id,
            hits=merged,
            peers_answered=list(got.answered),
            peers_failed=list(failed.values()),
            partial=bool(failed),
            truncated=truncated,
            duplicate=duplicate,
            took_ms=took * 1000,
            mode=params.mode,
            messages=got.messages,
            visited=got.visited.encode() if params.mode != "flood" else None,
            trace=trace,
        )

    def _spent(self, params: SearchParams, got: _Gathered) -> SearchParams:
        return replace(params, budget=max(params.budget - got.messages, 0), visited=got.visited)

    async def _walkers(
        self, params: SearchParams, match: QueryMatch, got: _Gathered, deadline: float
    ) -> None:
        """Walkers that check back: each one's answer comes back here and, while hits are
        short, one that found something is replaced by one new walker and one that found
        nothing by WALK_GROWTH (they avoid every peer any walker has
        been to), as long as budget and time remain. When
        enough is in, the walkers still out are called back."""
        loop = asyncio.get_running_loop()
        running: dict[asyncio.Task[int], int] = {}  # a walker -> the budget it holds
        per_walker = FORWARD_COST * (params.ttl + 3)

        async def walk(send: tuple[Peer, SearchParams]) -> int:
            """How many walkers go out in its place: 1 after a hit (or a failed neighbour),
            WALK_GROWTH after new ground without one, 0 after none (a walker that passed
            through a visited neighbour and found nothing new there: the region is spent)."""
            answers: list[SearchResponse] = []
            await self._send([send], deadline, got, answers=answers)
            if not answers:
                return 1
            answer = answers[0]
            if answer.hits:
                return 1
            return WALK_GROWTH if answer.messages or not answer.duplicate else 0

        def launch(n: int) -> None:
            left = params.budget - got.messages - sum(running.values())
            n = min(n, left // FORWARD_COST)
            if n <= 0 or deadline - loop.time() - WALK_HOP_MARGIN_S < MIN_FORWARD_BUDGET_S:
                return  # (so every walker launched is sent: the loop below always ends)
            now = replace(self._spent(params, got), budget=min(left, n * per_walker))
            for send in self._walk_step(now, match, got, n, entry=True):
                got.visited.add(send[0].peer_id)  # the next walker goes elsewhere
                running[asyncio.create_task(walk(send))] = send[1].budget + FORWARD_COST

        if len(got.hits) >= params.wanted:
            return
        launch(params.fanout)
        try:
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                more = 0
                for task in done:
                    del running[task]
                    more += task.result()
                if len(got.hits) >= params.wanted:
                    break
                launch(more)
        finally:
            # Enough is in (or we are cancelled ourselves): call the others back. Hanging
            # up on a walker's request stops it, hop by hop (routers/search.py).
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _dynamic(
        self, params: SearchParams, match: QueryMatch, got: _Gathered, deadline: float
    ) -> None:
        """Gnutella's dynamic query on summaries: a probe where they match, then one
        neighbour at a time, flooded to `ttl` hops, until `wanted` hits are in."""
        clock = asyncio.get_running_loop().time
        if len(got.hits) >= params.wanted or params.fanout == 0:  # fanout 0: this peer only
            return
        await self._send(self._probe(params, match, got), deadline, got)
        neighbours = [
            p for p in self.table.peers() if p.peer_id != params.sender and p.state != "down"
        ]
        order = self._pick(neighbours, len(neighbours))
        for step, peer in enumerate(order, 1):
            if len(got.hits) >= params.wanted or deadline - clock() <= MIN_FORWARD_BUDGET_S:
                break
            # Each widening is a query of its own (the probe may have reached this neighbour
            # and its neighbours, which would take it for a copy and not forward it), but
            # it skips every peer the query has been to.
            now = replace(
                self._spent(params, got), mode="flood", query_id=_phase_id(params.query_id, step)
            )
            if now.budget < FORWARD_COST:
                break
            sends = self._children(now, [peer], params.ttl - 1, now.budget - FORWARD_COST, "flood")
            await self._send(sends, deadline, got)


def _phase_id(query_id: str, step: int) -> str:
    """The id of the `step`th widening of a dynamic query."""
    suffix = f"-{step}"
    return query_id[: 64 - len(suffix)] + suffix
