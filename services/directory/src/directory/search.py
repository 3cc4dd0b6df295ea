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
import logging
import random
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from directory.lru import BoundedLru
from directory.peers import Peer, PeerTable
from peerfind.api import FailedPeer, FileInfo, SearchHit, SearchRequest, SearchResponse
from peerfind.errors import short_error
from peerfind.index import FileEntry

__all__ = [
    "FORWARD_MARGIN_S",
    "FORWARD_SHARE",
    "MIN_FORWARD_BUDGET_S",
    "NO_EVENTS",
    "Forwarder",
    "LocalSearch",
    "SearchEvents",
    "SearchParams",
    "SearchPolicy",
    "SearchRouter",
    "SeenQueries",
    "describe",
    "new_query_id",
]

logger = logging.getLogger(__name__)

# Each hop hands its neighbours a deadline this much shorter than its own, so
# their answers (even "I ran out of time") arrive before it has to answer.
FORWARD_MARGIN_S = 0.05
FORWARD_SHARE = 0.8
MIN_FORWARD_BUDGET_S = 0.05

_Info = TypeVar("_Info", bound=FileInfo)
LocalSearch = Callable[[str, int], Coroutine[Any, Any, list[FileEntry]]]


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

    def to_request(self) -> SearchRequest:
        """The request a neighbour receives when these parameters are forwarded to it."""
        return SearchRequest(
            query=self.query,
            fanout=self.fanout,
            ttl=self.ttl,
            timeout_ms=max(int(self.timeout_s * 1000), 1),
            qid=self.query_id,
            sender=self.sender,
        )


@dataclass(frozen=True, slots=True)
class SearchPolicy:
    """A peer's defaults and clamps for the searches it receives."""

    default_fanout: int
    max_fanout: int
    default_ttl: int
    max_ttl: int
    default_timeout_ms: int

    def params(
        self, request: SearchRequest, new_id: Callable[[], str] | None = None
    ) -> SearchParams:
        """`request` with this peer's defaults filled in and its clamps applied."""
        fanout = self.default_fanout if request.fanout is None else request.fanout
        ttl = self.default_ttl if request.ttl is None else request.ttl
        timeout_ms = self.default_timeout_ms if request.timeout_ms is None else request.timeout_ms
        return SearchParams(
            query=request.query,
            fanout=min(fanout, self.max_fanout),
            ttl=min(ttl, self.max_ttl),
            timeout_s=timeout_ms / 1000,
            query_id=request.qid or (new_id or new_query_id)(),
            sender=request.sender,
            forwarded=request.is_forwarded,
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
            "content_url": f"{rest_url}/files/{quote(entry.name, safe='')}/content",
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


class SearchRouter:
    """Answers one search: local hits plus the hits of up to `fanout` neighbours."""

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

    async def _forward_within(
        self, peer: Peer, params: SearchParams, budget_s: float
    ) -> SearchResponse:
        # asyncio.timeout rather than wait_for: no second task, so the request goes
        # out as soon as this task first runs.
        async with asyncio.timeout(budget_s):
            return await self.forward(peer, params)

    async def search(self, params: SearchParams) -> SearchResponse:
        # One clock for the whole search: the loop's, which asyncio.timeout also uses.
        clock = asyncio.get_running_loop().time
        started = clock()
        role = "forwarded" if params.forwarded else "entry"
        events = self.events
        events.received(role)
        # A query seen before (it came by another route too) is answered from the
        # local index only and never forwarded again: no loops, and the asker still
        # gets our hits when the route that brought the first copy is slow or dead.
        # Askers merge hits by (peer, path), so nothing is counted twice.
        duplicate = not self.seen.first_time(params.query_id)
        if duplicate:
            events.duplicate()
        deadline = started + params.timeout_s
        targets = self.table.choose(
            params.fanout if params.ttl > 0 and not duplicate else 0,
            exclude=[params.sender] if params.sender else (),
            rng=self.rng,
        )
        budget = params.timeout_s * FORWARD_SHARE - FORWARD_MARGIN_S
        if budget < MIN_FORWARD_BUDGET_S:
            targets = []
        child = SearchParams(
            query=params.query,
            fanout=params.fanout,
            ttl=params.ttl - 1,
            timeout_s=budget,
            query_id=params.query_id,
            sender=self.peer_id,
            forwarded=True,
        )
        forwards = {
            asyncio.create_task(self._forward_within(peer, child, budget)): peer for peer in targets
        }
        if forwards:
            events.forwarded(len(forwards))

        hits: dict[tuple[str, str], SearchHit] = {}
        answered: dict[str, None] = {}  # an ordered set: merging stays linear in a big flood
        failed: dict[str, FailedPeer] = {}
        truncated = False
        if forwards:
            # Let the forwards go out first, so that the neighbours are already at
            # work while the local index answers.
            await asyncio.sleep(0)
        try:
            async with asyncio.timeout(max(deadline - clock(), 0.001)):
                local = await self.local_search(params.query, self.max_results + 1)
            truncated = len(local) > self.max_results
            for entry in local[: self.max_results]:
                hits[(self.peer_id, entry.path)] = describe(
                    entry, self.peer_id, self.rest_url, self.grpc_address, SearchHit
                )
            answered[self.peer_id] = None
        except Exception as exc:  # the local index failing is a partial answer too
            logger.warning("local search failed: %s", short_error(exc))
            failed[self.peer_id] = FailedPeer(
                peer_id=self.peer_id, url=self.rest_url, error=short_error(exc)
            )

        if forwards:
            done, pending = await asyncio.wait(forwards, timeout=max(deadline - clock(), 0.001))
            for task in pending:
                task.cancel()
            for task in forwards:
                peer = forwards[task]
                error: BaseException | None = (
                    task.exception() if task in done and not task.cancelled() else TimeoutError()
                )
                if error is not None:
                    self.table.mark_failed(peer.peer_id)
                    failed[peer.peer_id] = FailedPeer(
                        peer_id=peer.peer_id, url=peer.url, error=short_error(error)
                    )
                    events.forward_failed()
                    continue
                self.table.mark_alive(peer.peer_id)
                answer: SearchResponse = task.result()
                truncated = truncated or answer.truncated
                answered.update(dict.fromkeys(answer.peers_answered))
                for fp in answer.peers_failed:
                    failed.setdefault(fp.peer_id, fp)
                for hit in answer.hits:
                    hits.setdefault((hit.peer_id, hit.path), hit)
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

        for peer_id in answered:  # answered through another route after all
            failed.pop(peer_id, None)
        merged = list(hits.values())
        if len(merged) > self.max_results:
            merged, truncated = merged[: self.max_results], True
        took = clock() - started
        outcome = "partial" if failed else "complete"
        events.answered(role, outcome, seconds=took, hits=len(merged), failed=len(failed))
        return SearchResponse(
            query=params.query,
            query_id=params.query_id,
            peer_id=self.peer_id,
            hits=merged,
            peers_answered=list(answered),
            peers_failed=list(failed.values()),
            partial=bool(failed),
            truncated=truncated,
            duplicate=duplicate,
            took_ms=took * 1000,
        )
