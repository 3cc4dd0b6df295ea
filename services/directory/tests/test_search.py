"""SearchRouter with fake neighbours: merge, dedup, loops, deadlines, failures."""

from __future__ import annotations

import asyncio

import pytest

from directory.peers import Peer, PeerTable
from directory.search import SearchParams, SearchRouter, SeenQueries
from peerfind.api import SearchResponse
from peerfind.index import FileEntry


class FakeNetwork:
    """Routers wired to each other in memory; `delays` and `dead` inject faults."""

    def __init__(self, files: dict[str, list[str]], links: dict[str, list[str]]) -> None:
        self.delays: dict[str, float] = {}
        self.dead: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.searches = 0
        self.routers: dict[str, SearchRouter] = {}
        for peer_id, names in files.items():
            table = PeerTable(peer_id, ttl_s=60, max_peers=10)
            for other in links.get(peer_id, []):
                table.upsert(other, f"http://{other}")
            self.routers[peer_id] = SearchRouter(
                peer_id=peer_id,
                rest_url=f"http://{peer_id}",
                grpc_address=f"{peer_id}:50051",
                table=table,
                local_search=self._local(names),
                forward=self._forward(peer_id),
                max_results=100,
            )

    @staticmethod
    def _local(names: list[str]):  # type: ignore[no-untyped-def]
        async def search(query: str, limit: int) -> list[FileEntry]:
            found = [n for n in names if query.lower() in n.lower()]
            return [FileEntry(path=n, name=n, size=len(n), mtime=1.0) for n in found][:limit]

        return search

    def _forward(self, sender: str):  # type: ignore[no-untyped-def]
        async def forward(peer: Peer, params: SearchParams) -> SearchResponse:
            self.calls.append((sender, peer.peer_id))
            assert params.sender == sender
            if peer.peer_id in self.dead:
                raise ConnectionRefusedError("connection refused")
            await asyncio.sleep(self.delays.get(peer.peer_id, 0))
            return await self.routers[peer.peer_id].search(params)

        return forward

    async def search(
        self, entry: str, query: str, fanout: int = 2, ttl: int = 3, timeout_s: float = 2.0
    ) -> SearchResponse:
        self.searches += 1
        params = SearchParams(
            query=query,
            fanout=fanout,
            ttl=ttl,
            timeout_s=timeout_s,
            query_id=f"query-{self.searches}",
        )
        return await self.routers[entry].search(params)


RING = {"p1": ["p2", "p3"], "p2": ["p3", "p1"], "p3": ["p1", "p2"]}
FILES = {"p1": ["hello1.txt", "a.bin"], "p2": ["hello2.txt"], "p3": ["hello3.txt", "x.TXT"]}


@pytest.mark.parametrize("entry", ["p1", "p2", "p3"])
async def test_every_entry_point_finds_all_peers_files_once(entry: str) -> None:
    net = FakeNetwork(FILES, RING)
    answer = await net.search(entry, ".txt")
    names = sorted(h.name for h in answer.hits)
    assert names == ["hello1.txt", "hello2.txt", "hello3.txt", "x.TXT"]
    assert len({(h.peer_id, h.path) for h in answer.hits}) == len(answer.hits)
    assert not answer.partial and answer.peers_failed == []
    assert sorted(answer.peers_answered) == ["p1", "p2", "p3"]
    hit = next(h for h in answer.hits if h.name == "hello3.txt")
    assert (hit.peer_id, hit.grpc_address, hit.rest_url) == ("p3", "p3:50051", "http://p3")


async def test_never_forwards_back_to_sender_and_duplicates_answer_locally() -> None:
    net = FakeNetwork(FILES, RING)
    await net.search("p1", "hello")
    for sender, target in net.calls:
        assert sender != target
    # p2 and p3 were each reached twice at most (once direct, once via the other),
    # and the second arrival was a duplicate: no path back to p1 was ever taken
    # by the peer that got the query from p1.
    back_to_entry = [c for c in net.calls if c[1] == "p1"]
    assert all(sender in ("p2", "p3") for sender, _ in back_to_entry)
    dup = await net.routers["p2"].search(
        SearchParams(
            query="hello", fanout=2, ttl=3, timeout_s=1, query_id="fixed-id-1", sender="p1"
        )
    )
    before = len(net.calls)
    again = await net.routers["p2"].search(
        SearchParams(
            query="hello", fanout=2, ttl=3, timeout_s=1, query_id="fixed-id-1", sender="p3"
        )
    )
    assert dup.hits and not dup.duplicate
    # A second copy is answered from p2's own index (a slow first route must not hide
    # p2's hits from this asker) and never forwarded again (no loops).
    assert again.duplicate and {h.peer_id for h in again.hits} == {"p2"}
    assert again.peers_answered == ["p2"]
    assert len(net.calls) == before


async def test_ttl_zero_stays_local_and_fanout_limits_neighbours() -> None:
    net = FakeNetwork(FILES, RING)
    local = await net.search("p1", ".txt", ttl=0)
    assert {h.peer_id for h in local.hits} == {"p1"}
    assert net.calls == []
    await net.search("p1", ".txt", fanout=1, ttl=1)
    assert len(net.calls) == 1


async def test_dead_neighbour_gives_partial_not_error() -> None:
    line = {"p1": ["p2", "p3"], "p2": [], "p3": []}
    net = FakeNetwork(FILES, line)
    net.dead.add("p3")
    answer = await net.search("p1", "hello")
    assert answer.partial
    assert [f.peer_id for f in answer.peers_failed] == ["p3"]
    assert "refused" in answer.peers_failed[0].error
    assert {h.peer_id for h in answer.hits} == {"p1", "p2"}
    assert net.routers["p1"].table.get("p3").state == "suspect"  # type: ignore[union-attr]


async def test_slow_neighbour_is_cut_at_the_deadline() -> None:
    line = {"p1": ["p2", "p3"], "p2": [], "p3": []}
    net = FakeNetwork(FILES, line)
    net.delays["p3"] = 5.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await net.search("p1", "hello", timeout_s=0.3)
    assert loop.time() - started < 2.0  # bounded by the deadline, not by the slow peer
    assert answer.partial
    assert [(f.peer_id, f.error) for f in answer.peers_failed] == [("p3", "timeout")]
    assert {h.peer_id for h in answer.hits} == {"p1", "p2"}


async def test_result_cap_truncates() -> None:
    many = {"p1": [f"f{i}.txt" for i in range(150)]}
    net = FakeNetwork(many, {})
    answer = await net.search("p1", ".txt")
    assert len(answer.hits) == 100 and answer.truncated


def test_seen_queries_bounded_in_count_and_age() -> None:
    now = [0.0]
    seen = SeenQueries(capacity=3, ttl_s=10, clock=lambda: now[0])
    assert seen.first_time("a") and not seen.first_time("a")
    for q in ("b", "c", "d"):
        assert seen.first_time(q)
    assert len(seen) == 3
    assert seen.first_time("a")  # evicted by capacity
    now[0] = 100.0
    assert seen.first_time("b")  # expired by age
    assert len(seen) == 1
