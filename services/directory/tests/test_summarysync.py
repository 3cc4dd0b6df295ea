"""Routing summaries between real peers: the `GET /summary` route, the Node's fetch against
a real HTTP server (what it takes, what it refuses), and our own summary kept current."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import SecretStr

from directory.app import create_app
from directory.node import Node
from directory.peers import Peer
from directory.search import DEFAULT_BUDGET, DEFAULT_MAX_BUDGET, SearchPolicy
from directory.summary import Bloom, SummaryBook, query_probes
from directory.summarysync import (
    SUMMARY_MAX_BYTES,
    SummaryUpkeep,
    etag_matches,
    index_names,
)
from peerfind.api import SummaryDoc
from peerfind.config import PeerSettings
from peerfind.index import FileEntry, IndexReader, IndexStats, IndexWriter
from peerfind_devnet import eventually

TOKEN = "s3cret"


def fetches(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "peerfind_directory_summary_fetches_total", {"outcome": outcome}
    )
    return value or 0.0


def summary_of(peer_id: str, names: list[str]) -> SummaryDoc:
    book = SummaryBook(peer_id, fetch=_never)
    book.set_names(names)
    return book.document()


async def _never(peer: Peer, etag: str | None) -> SummaryDoc | None:
    raise AssertionError("not fetched")


def _built(client: TestClient) -> Node:
    """The app's node, its own summary built once (as the upkeep's first round does)."""
    node: Node = client.app.state.node  # type: ignore[attr-defined]
    assert client.portal is not None
    assert client.portal.call(node.summary_upkeep.rebuild) is True
    return node


# -- GET /summary ------------------------------------------------------------------------


def test_summary_is_503_until_built_then_200_with_its_etag_and_304_when_unchanged(
    client: TestClient, writer: IndexWriter
) -> None:
    early = client.get("/summary")
    assert early.status_code == 503 and early.json()["error"] == "summary_not_ready"
    node = _built(client)
    answer = client.get("/summary")
    assert answer.status_code == 200
    etag = answer.headers["ETag"]
    doc = SummaryDoc.model_validate_json(answer.content)
    assert etag == f'"{doc.version}"' and doc.version == node.summaries.version
    assert doc.peer_id == "p1"
    own = Bloom.from_doc(doc.own)
    assert own.may_contain(query_probes("readme") or ())
    assert not own.may_contain(query_probes("zebra") or ())
    for sent in (etag, f"W/{etag}", f'"older", {etag}', "*"):
        unchanged = client.get("/summary", headers={"If-None-Match": sent})
        assert unchanged.status_code == 304, sent
        assert unchanged.content == b"" and unchanged.headers["ETag"] == etag
    assert client.get("/summary", headers={"If-None-Match": '"older"'}).status_code == 200


def test_summary_needs_the_cluster_token_when_one_is_set(
    settings: PeerSettings, writer: IndexWriter
) -> None:
    secured = settings.model_copy(update={"cluster_token": SecretStr(TOKEN)})
    with TestClient(create_app(secured)) as c:
        _built(c)
        denied = c.get("/summary")
        assert denied.status_code == 401 and denied.json()["error"] == "unauthorized"
        assert c.get("/summary", headers={"X-Peerfind-Token": "wrong"}).status_code == 401
        assert c.get("/summary", headers={"X-Peerfind-Token": TOKEN}).status_code == 200


def test_summary_spends_the_peers_rate_budget(settings: PeerSettings, writer: IndexWriter) -> None:
    limited = settings.model_copy(update={"rate_limit_rps": 0.01, "rate_limit_burst": 1})
    with TestClient(create_app(limited)) as c:
        _built(c)
        # The peers' budget is FORWARD_RATE_FACTOR (10) times a client's.
        codes = [c.get("/summary").status_code for _ in range(11)]
        assert codes == [200] * 10 + [429]


def test_if_none_match_parsing() -> None:
    assert etag_matches('"v1"', "v1") and etag_matches(' W/"v1" ', "v1")
    assert not etag_matches("v1", "v1")  # an ETag is quoted
    assert not etag_matches(None, "v1") and not etag_matches('"v2"', "v1")


# -- the Node's fetch, against a real server -----------------------------------------


Answer = Callable[[web.Request], web.StreamResponse | Awaitable[web.StreamResponse]]


@dataclass
class Neighbour:
    """A real HTTP server playing a neighbour's /summary: `answer` decides each reply."""

    url: str
    answer: Answer
    seen: list[dict[str, str]] = field(default_factory=list)

    @property
    def peer(self) -> Peer:
        return Peer(peer_id="p2", url=self.url)


@pytest.fixture
async def neighbour() -> AsyncIterator[Neighbour]:
    doc = summary_of("p2", ["holiday-photos.zip"])

    def good(request: web.Request) -> web.StreamResponse:
        etag = f'"{doc.version}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(
            body=doc.model_dump_json(), content_type="application/json", headers={"ETag": etag}
        )

    state = Neighbour(url="", answer=good)

    async def handler(request: web.Request) -> web.StreamResponse:
        state.seen.append(dict(request.headers))
        reply = state.answer(request)
        return await reply if inspect.isawaitable(reply) else reply

    app = web.Application()
    app.router.add_get("/summary", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
async def node(settings: PeerSettings) -> AsyncIterator[Node]:
    node = Node(settings.model_copy(update={"cluster_token": SecretStr(TOKEN)}))
    try:
        yield node
    finally:
        await node.close()


async def test_a_neighbours_summary_is_taken_then_fetched_again_only_if_changed(
    node: Node, neighbour: Neighbour
) -> None:
    changed, unchanged = fetches("changed"), fetches("unchanged")
    await node.summaries.refresh([neighbour.peer])
    assert node.summaries.match("photos").holds("p2") == "match"
    assert node.summaries.match("zebra").holds("p2") == "miss"
    await node.summaries.refresh([neighbour.peer])
    assert node.summaries.match("zebra").holds("p2") == "miss"  # still held
    first, second = neighbour.seen
    assert first["X-Peerfind-Token"] == TOKEN and "If-None-Match" not in first
    assert second["If-None-Match"] == f'"{node.summaries.neighbours["p2"].etag}"'
    assert (fetches("changed") - changed, fetches("unchanged") - unchanged) == (1, 1)


def _oversized(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b" " * (SUMMARY_MAX_BYTES + 1), content_type="application/json")


async def _oversized_unannounced(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()  # no Content-Length: the cap is met while reading
    await response.prepare(request)
    for _ in range(SUMMARY_MAX_BYTES // 50_000 + 1):
        await response.write(b" " * 50_000)
    await response.write_eof()
    return response


def _answer(body: str, status: int = 200) -> Answer:
    return lambda request: web.Response(text=body, status=status, content_type="application/json")


_BAD_BITS = summary_of("p2", ["x"]).model_dump()
_BAD_BITS["own"]["bits"] = 1000  # not a power of two


_REFUSED: dict[str, tuple[Answer, str]] = {
    "oversized": (_oversized, "refused"),
    "oversized, no length": (_oversized_unannounced, "refused"),
    "not JSON": (_answer("<html>"), "refused"),
    "not a summary": (_answer('{"peer_id": "p2"}'), "refused"),
    "unknown field": (_answer('{"peer_id": "p2", "extra": 1}'), "refused"),
    "bad filter": (_answer(SummaryDoc.model_validate(_BAD_BITS).model_dump_json()), "refused"),
    "someone else's": (_answer(summary_of("p9", ["x"]).model_dump_json()), "refused"),
    "an error status": (_answer('{"error": "x", "detail": "y"}', 500), "failed"),
}


@pytest.mark.parametrize("case", list(_REFUSED))
async def test_a_summary_we_do_not_accept_leaves_the_neighbour_without_one(
    node: Node, neighbour: Neighbour, case: str
) -> None:
    answer, outcome = _REFUSED[case]
    await node.summaries.refresh([neighbour.peer])
    assert "p2" in node.summaries.neighbours  # a good one first
    before = fetches(outcome)
    neighbour.answer = answer
    await node.summaries.refresh([neighbour.peer])
    assert "p2" not in node.summaries.neighbours, case
    assert node.summaries.match("zebra").holds("p2") == "unknown"  # may be asked anything
    assert fetches(outcome) - before == 1, case


# -- our own summary -------------------------------------------------------------------


async def test_our_own_summary_is_rebuilt_when_the_index_changes_and_only_then(
    node: Node, writer: IndexWriter
) -> None:
    def holds(query: str) -> bool:
        probes = query_probes(query)
        assert probes is not None
        return node.summaries.own.may_contain(probes)

    count = "peerfind_directory_summary_rebuild_seconds_count"
    rebuilds = REGISTRY.get_sample_value(count) or 0.0
    assert not node.summary_upkeep.ready
    assert await node.summary_upkeep.rebuild() is True
    assert node.summary_upkeep.ready and holds("hello1") and not holds("arrival")
    version = node.summaries.version
    assert await node.summary_upkeep.rebuild() is False  # nothing changed
    assert node.summaries.version == version
    writer.upsert([FileEntry("new/late-arrival.txt", "late-arrival.txt", 3, 4.5)])
    assert await node.summary_upkeep.rebuild() is True
    assert holds("arrival") and node.summaries.version != version
    assert REGISTRY.get_sample_value(count) == rebuilds + 2
    bits = REGISTRY.get_sample_value("peerfind_directory_summary_bits")
    assert bits == node.summaries.own.bits


def test_index_names_reads_every_page(settings: PeerSettings, writer: IndexWriter) -> None:
    names = index_names(IndexReader(settings.index_path), page=2)
    assert sorted(names) == ["b.bin", "hello1.txt", "readme.TXT"]


class _FlakyReader:
    """An index whose stats fail on the first read."""

    def __init__(self, path: Path) -> None:
        self.inner = IndexReader(path)
        self.calls = 0

    def stats(self) -> IndexStats:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("disk on fire")
        return self.inner.stats()

    def list(self, limit: int, after: str = "") -> list[FileEntry]:
        return self.inner.list(limit, after)


async def test_the_upkeep_loop_survives_errors_and_keeps_refreshing(
    settings: PeerSettings, writer: IndexWriter
) -> None:
    asked: list[str] = []

    async def fetch(peer: Peer, etag: str | None) -> SummaryDoc | None:
        asked.append(peer.peer_id)
        if len(asked) == 1:
            raise ConnectionError("neighbour down")
        return summary_of("p2", ["x"]) if etag is None else None

    book = SummaryBook("p1", fetch)
    reader = _FlakyReader(settings.index_path)
    upkeep = SummaryUpkeep(
        book,
        reader,  # type: ignore[arg-type]
        lambda: [Peer(peer_id="p2", url="http://127.0.0.1:9")],
        interval_s=0.01,
    )
    task = asyncio.create_task(upkeep.run())
    try:
        await eventually(
            lambda: upkeep.ready and len(asked) >= 3 and "p2" in book.neighbours,
            10,
            what="the loop to go on after a failed rebuild and a failed fetch",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert reader.calls >= 2


# -- the settings the Node passes on ---------------------------------------------------


def test_the_search_settings_default_to_the_routers_own_defaults() -> None:
    fields = PeerSettings.model_fields
    policy = SearchPolicy(1, 1, 1, 1, 1)
    assert fields["search_budget"].default == DEFAULT_BUDGET == policy.default_budget
    assert fields["max_search_budget"].default == DEFAULT_MAX_BUDGET == policy.max_budget
    assert fields["walk_ttl"].default == policy.walk_ttl
    assert fields["max_walk_ttl"].default == policy.max_walk_ttl


async def test_the_node_passes_the_search_settings_to_its_policy_and_router(
    settings: PeerSettings,
) -> None:
    custom = settings.model_copy(
        update={
            "walk_ttl": 7,
            "max_walk_ttl": 9,
            "search_budget": 100,
            "max_search_budget": 1000,
            "max_results": 50,
        }
    )
    node = Node(custom)
    try:
        p = node.search_policy
        assert (p.walk_ttl, p.max_walk_ttl, p.default_budget, p.max_budget, p.max_results) == (
            7,
            9,
            100,
            1000,
            50,
        )
        assert node.router.summaries is node.summaries
        assert node.summary_upkeep.interval_s == custom.summary_refresh_s
    finally:
        await node.close()
