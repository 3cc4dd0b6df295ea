"""The search modes, summaries, the visited filter and the message budget, on routers wired
in memory (tests/test_search.py covers the flood's merging, deadlines and failures)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from directory.peers import Peer, PeerTable
from directory.search import SearchParams, SearchPolicy, SearchRouter, Visited
from directory.summary import SummaryBook
from peerfind.api import SearchRequest, SearchResponse, SummaryDoc, TraceNode
from peerfind.index import FileEntry


class Net:
    """Routers with summaries; `calls` records every forward."""

    def __init__(self, files: dict[str, list[str]], links: dict[str, list[str]]) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.dead: set[str] = set()
        self.routers: dict[str, SearchRouter] = {}
        for peer_id, names in files.items():
            table = PeerTable(peer_id, ttl_s=60, max_peers=10)
            for other in links.get(peer_id, []):
                table.upsert(other, f"http://{other}")
            book = SummaryBook(peer_id, self._fetch)
            book.set_names(names)
            self.routers[peer_id] = SearchRouter(
                peer_id=peer_id,
                rest_url=f"http://{peer_id}",
                grpc_address=f"{peer_id}:50051",
                table=table,
                local_search=self._local(names),
                forward=self._forward(peer_id),
                max_results=100,
                summaries=book,
            )
        self.queries = 0

    async def _fetch(self, peer: Peer, etag: str | None) -> SummaryDoc | None:
        return self.routers[peer.peer_id].summaries.document()  # type: ignore[union-attr]

    async def publish(self) -> None:
        for _ in range(2):
            for router in self.routers.values():
                await router.summaries.refresh(router.table.peers())  # type: ignore[union-attr]

    @staticmethod
    def _local(names: list[str]):  # type: ignore[no-untyped-def]
        async def search(query: str, limit: int) -> list[FileEntry]:
            found = [n for n in names if query.lower() in n.lower()]
            return [FileEntry(path=n, name=n, size=1, mtime=1.0) for n in found][:limit]

        return search

    def _forward(self, sender: str):  # type: ignore[no-untyped-def]
        async def forward(peer: Peer, params: SearchParams) -> SearchResponse:
            self.calls.append((sender, peer.peer_id, params.mode))
            if peer.peer_id in self.dead:
                raise ConnectionRefusedError("connection refused")
            await asyncio.sleep(0)
            return await self.routers[peer.peer_id].search(params)

        return forward

    async def search(self, entry: str, query: str, **kw: object) -> SearchResponse:
        self.queries += 1
        params = SearchParams(
            query=query,
            fanout=kw.pop("fanout", 2),  # type: ignore[arg-type]
            ttl=kw.pop("ttl", 3),  # type: ignore[arg-type]
            timeout_s=5.0,
            query_id=f"query-{self.queries:04d}",
            explain=True,
        )
        return await self.routers[entry].search(replace(params, **kw))  # type: ignore[arg-type]


def line(n: int, far: str = "far-away.txt") -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """p1 - p2 - ... - pn, the file on pn only."""
    ids = [f"p{i}" for i in range(1, n + 1)]
    files: dict[str, list[str]] = {i: [f"junk-{i}.bin"] for i in ids}
    files[ids[-1]].append(far)
    links = {
        i: [j for j in (ids[k - 1] if k else None, ids[k + 1] if k + 1 < n else None) if j]
        for k, i in enumerate(ids)
    }
    return files, links


def depth(node: TraceNode) -> int:
    return 1 + max((depth(c) for c in node.children), default=0)


async def test_a_walk_reaches_a_file_far_down_a_line_and_counts_its_messages() -> None:
    net = Net(*line(9))
    await net.publish()
    answer = await net.search("p1", "far-away", mode="walk", ttl=10, wanted=1, budget=100)
    assert [h.peer_id for h in answer.hits] == ["p9"]
    assert answer.mode == "walk"
    assert answer.messages == 2 * len(net.calls) == 16  # 8 hops, a request and an answer each
    assert answer.trace is not None and depth(answer.trace) == 9
    assert {mode for *_, mode in net.calls} == {"walk"}


async def test_a_walk_stops_at_its_first_hit() -> None:
    files, links = line(6)
    files["p3"].append("far-away-too.txt")
    net = Net(files, links)
    await net.publish()
    answer = await net.search("p1", "far-away", mode="walk", ttl=10, wanted=1, budget=100)
    assert [h.peer_id for h in answer.hits] == ["p3"]
    assert [t for _, t, _ in net.calls] == ["p2", "p3"]


async def test_the_budget_bounds_a_walk() -> None:
    net = Net(*line(9))
    await net.publish()
    answer = await net.search("p1", "far-away", mode="walk", ttl=10, wanted=1, budget=6)
    assert answer.hits == []
    assert len(net.calls) == 3 and answer.messages == 6


async def test_summaries_keep_the_last_hop_away_from_peers_that_cannot_match() -> None:
    files = {"p1": [], "p2": ["hello.txt"], "p3": ["other.bin"]}
    net = Net(files, {"p1": ["p2", "p3"], "p2": ["p1"], "p3": ["p1"]})
    await net.publish()
    answer = await net.search("p1", "hello", mode="flood", ttl=1, fanout=8)
    assert [t for _, t, _ in net.calls] == ["p2"]
    assert answer.trace is not None
    assert [(s.peer_id, s.reason) for s in answer.trace.skipped] == [("p3", "summary_miss")]
    assert [h.name for h in answer.hits] == ["hello.txt"]


async def test_a_peer_without_a_summary_may_match() -> None:
    files = {"p1": [], "p2": ["hello.txt"], "p3": ["other.bin"]}
    net = Net(files, {"p1": ["p2", "p3"], "p2": ["p1"], "p3": ["p1"]})
    await net.publish()
    del net.routers["p1"].summaries.neighbours["p3"]  # type: ignore[union-attr]  # an older peer
    await net.search("p1", "hello", mode="flood", ttl=1, fanout=8)
    assert sorted(t for _, t, _ in net.calls) == ["p2", "p3"]


async def test_siblings_do_not_forward_to_each_other() -> None:
    files = {"p1": [], "p2": ["a.txt"], "p3": ["b.txt"], "p4": ["c.txt"]}
    links = {"p1": ["p2", "p3"], "p2": ["p1", "p3", "p4"], "p3": ["p1", "p2", "p4"], "p4": []}
    net = Net(files, links)
    await net.publish()
    await net.search("p1", ".txt", mode="flood", ttl=3, fanout=8)
    assert ("p2", "p3", "flood") not in net.calls and ("p3", "p2", "flood") not in net.calls
    assert sorted(t for _, t, _ in net.calls) == ["p2", "p3", "p4", "p4"]


async def test_a_flood_s_budget_caps_its_forwards() -> None:
    files = {"p1": [], "p2": ["a.txt"], "p3": ["a.txt"], "p4": ["a.txt"]}
    net = Net(files, {"p1": ["p2", "p3", "p4"]})
    answer = await net.search("p1", "a.txt", mode="flood", ttl=1, fanout=8, budget=4)
    assert len(net.calls) == 2 and answer.messages == 4
    assert answer.trace is not None
    assert [s.reason for s in answer.trace.skipped] == ["budget"]


async def test_a_walker_whose_neighbour_is_down_goes_elsewhere() -> None:
    files = {"p1": [], "p2": [], "p3": [], "p4": [], "p5": ["far.txt"]}
    links = {"p1": ["p2"], "p2": ["p3", "p4"], "p3": ["p5"], "p4": ["p5"], "p5": []}
    net = Net(files, links)
    net.dead.add("p3")
    answer = await net.search("p1", "far.txt", mode="walk", ttl=5, wanted=1, budget=100)
    assert [h.peer_id for h in answer.hits] == ["p5"]
    assert ("p2", "p4", "walk") in net.calls


async def test_walkers_are_replaced_while_hits_are_short() -> None:
    # p1 has four neighbours, each a dead end with one copy two hops out.
    files: dict[str, list[str]] = {"p1": []}
    links: dict[str, list[str]] = {"p1": []}
    for i in range(4):
        a, b = f"a{i}", f"b{i}"
        files[a], files[b] = [], [f"song-{i}.mp3"]
        links["p1"].append(a)
        links[a], links[b] = [b], []
    net = Net(files, links)
    answer = await net.search("p1", "song", mode="walk", ttl=4, fanout=1, wanted=3, budget=100)
    assert len(answer.hits) == 3  # each walker found one copy and was replaced by one
    first = [t for s, t, _ in net.calls if s == "p1"]
    assert len(first) == 3 and len(set(first)) == 3  # each walker avoided the earlier ones


async def test_dynamic_probes_where_summaries_match_then_widens_one_neighbour_at_a_time() -> None:
    net = Net(*line(6))
    await net.publish()
    answer = await net.search("p1", "far-away", mode="dynamic", ttl=5, wanted=1, budget=100)
    assert [h.peer_id for h in answer.hits] == ["p6"]
    assert answer.mode == "dynamic"
    assert {mode for *_, mode in net.calls} == {"flood"}


async def test_a_forwarded_request_runs_one_step_whatever_mode_it_names() -> None:
    policy = SearchPolicy(
        default_fanout=2, max_fanout=8, default_ttl=3, max_ttl=5, default_timeout_ms=2000
    )
    forged = SearchRequest(query="x", qid="q" * 16, sender="p9", mode="dynamic", budget=10**5)
    params = policy.params(forged)
    assert params.mode == "flood" and params.forwarded
    assert params.budget == policy.max_budget
    walker = policy.params(SearchRequest(query="x", qid="q" * 16, mode="walk", ttl=16))
    assert walker.mode == "walk" and walker.ttl == policy.max_walk_ttl
    entry = policy.params(SearchRequest(query="x"))
    assert entry.mode in ("walk", "dynamic", "flood") and not entry.forwarded


def test_the_visited_filter_round_trips_and_remembers() -> None:
    visited = Visited().with_(["p1", "p2"])
    again = Visited.decode(visited.encode())
    assert "p1" in again and "p2" in again and "p3" not in again
    assert SearchRequest(query="x", visited=visited.encode()).visited == visited.encode()


async def test_a_walker_stops_when_its_asker_hangs_up() -> None:
    from starlette.requests import Request

    from directory.routers.search import _unless_hung_up

    hang_up = asyncio.Event()

    async def receive() -> dict[str, object]:
        await hang_up.wait()
        return {"type": "http.disconnect"}

    request = Request({"type": "http", "method": "GET", "headers": []}, receive)
    stopped = asyncio.Event()

    async def walking() -> SearchResponse:
        try:
            await asyncio.Event().wait()  # a walk that would go on and on
        finally:
            stopped.set()
        raise AssertionError("unreachable")

    pending = asyncio.ensure_future(_unless_hung_up(request, walking()))
    await asyncio.sleep(0)
    assert not pending.done()
    hang_up.set()
    assert await asyncio.wait_for(pending, 5) is None
    assert stopped.is_set()


async def test_an_answer_before_any_hang_up_is_returned() -> None:
    from starlette.requests import Request

    from directory.routers.search import _unless_hung_up

    async def receive() -> dict[str, object]:
        await asyncio.Event().wait()
        return {}

    request = Request({"type": "http", "method": "GET", "headers": []}, receive)
    net = Net(*line(3))
    answer = await _unless_hung_up(request, net.search("p1", "far-away", mode="walk", wanted=1))
    assert answer is not None and [h.peer_id for h in answer.hits] == ["p3"]


async def test_dynamic_widens_through_a_neighbour_its_probe_already_reached() -> None:
    files, links = line(6)
    files["p3"].append("far-away-too.txt")
    net = Net(files, links)
    await net.publish()
    answer = await net.search("p1", "far-away", mode="dynamic", ttl=5, wanted=2, budget=100)
    assert sorted(h.peer_id for h in answer.hits) == ["p3", "p6"]
    assert [t for s, t, _ in net.calls if s == "p1"] == ["p2", "p2"]  # the probe, then wider


async def test_a_walk_for_a_missing_file_on_a_small_network_stops_when_it_runs_out_of_ground() -> (
    None
):
    files = {"p1": ["a.txt"], "p2": ["b.txt"], "p3": ["c.txt"]}
    links = {"p1": ["p2", "p3"], "p2": ["p1", "p3"], "p3": ["p1", "p2"]}
    net = Net(files, links)
    await net.publish()
    answer = await net.search("p1", "absent", mode="walk", ttl=10, wanted=1, budget=512)
    assert answer.hits == []
    # Two walkers, then two more through the visited neighbours, which have nowhere new
    # to go: four forwards, not the budget's 256.
    assert len(net.calls) == 4 and answer.messages == 8


async def test_fanout_zero_is_this_peer_only_in_every_mode() -> None:
    for mode in ("flood", "walk", "dynamic"):
        net = Net(*line(3))
        await net.publish()
        answer = await net.search("p1", "junk", mode=mode, fanout=0, wanted=5, budget=100)
        assert [h.peer_id for h in answer.hits] == ["p1"] and net.calls == [], mode


async def test_a_neighbour_that_sends_no_trace_is_a_leaf_of_the_tree() -> None:
    net = Net({"p1": [], "p2": ["old.txt"]}, {"p1": ["p2"]})
    inner = net.routers["p1"].forward

    async def older_peer(peer: Peer, params: SearchParams) -> SearchResponse:
        answer = await inner(peer, params)
        return answer.model_copy(update={"trace": None})

    net.routers["p1"].forward = older_peer
    answer = await net.search("p1", "old", mode="flood", ttl=1)
    assert answer.trace is not None
    (leaf,) = answer.trace.children
    assert (leaf.peer_id, leaf.ttl, leaf.hits, leaf.children) == ("p2", 0, 1, [])


async def test_a_walk_on_a_small_network_answers_in_full_even_with_local_hits() -> None:
    files = {"p1": ["a.txt"], "p2": ["b.txt"], "p3": ["c.txt"]}
    links = {"p1": ["p2", "p3"], "p2": ["p1", "p3"], "p3": ["p1", "p2"]}
    net = Net(files, links)
    await net.publish()
    answer = await net.search("p1", ".txt", mode="walk", ttl=10, wanted=1, budget=512)
    # The entry's own hit is one, but the summary horizon is asked first.
    assert sorted(h.name for h in answer.hits) == ["a.txt", "b.txt", "c.txt"]
    assert len(net.calls) == 2  # and no walker: enough was in
