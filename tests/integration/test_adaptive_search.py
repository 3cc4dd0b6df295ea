"""Twelve real peers with views of three, routing by summaries: every search mode finds a
file on a far peer, `explain` draws the hop tree, a new file is findable through the
summaries within seconds (and a neighbour they rule out is not asked), and a neighbour
that publishes a broken summary is refused, as the peer's /metrics say.

One network for the module; the test that joins a fake peer into it runs last.
"""

from __future__ import annotations

import contextlib
import socket
from collections import deque
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from helpers import FakeIdentities, aiohttp_in_thread, build_specs, get

from directory.search import AUTO_MODE
from peerfind_devnet import Devnet, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

COUNT = 12
ACTIVE = 3
HOSTS = [f"127.0.8.{k}" for k in range(1, COUNT + 1)]
FAKE_HOST = "127.0.8.200"
NOTHING = "zqxwv-nowhere"  # in no peer's names: every summary rules it out
SEEN_S = 30.0  # deadline for the summaries to catch up (summary_refresh_s is 2 s)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    root = tmp_path_factory.mktemp("adaptive")
    specs = build_specs(root, COUNT, hosts=HOSTS, active_view=ACTIVE, passive_view=12)
    devnet = Devnet(root, specs)
    with devnet.running(deadline_s=120):
        wait_for(
            lambda: all(holds_all_summaries(devnet, p) for p in devnet.peers),
            SEEN_S,
            step_s=0.5,
            what="every peer to hold its neighbours' summaries",
        )
        yield devnet


# -- helpers ---------------------------------------------------------------------------


def url(net: Devnet, peer_id: str) -> str:
    return net[peer_id].spec.url


def neighbours(net: Devnet, peer_id: str) -> set[str]:
    return {p["peer_id"] for p in get(f"{url(net, peer_id)}/peers")["peers"]}


def search(net: Devnet, entry: str, query: str, **params: Any) -> Any:
    return get(f"{url(net, entry)}/search", query=query, timeout_ms=5000, **params)


def ask_neighbours(net: Devnet, entry: str, query: str) -> Any:
    """A one-hop flood to every neighbour, explained: where summaries say `query` may be."""
    return search(net, entry, query, mode="flood", ttl=1, fanout=ACTIVE, explain=True)


def summary_misses(trace: dict[str, Any]) -> set[str]:
    return {s["peer_id"] for s in trace["skipped"] if s["reason"] == "summary_miss"}


def holds_all_summaries(net: Devnet, peer_id: str) -> bool:
    """`peer_id` holds a summary of each neighbour: a one-hop query that is nowhere asks
    none of them."""
    trace = ask_neighbours(net, peer_id, NOTHING)["trace"]
    return (
        bool(trace["skipped"])
        and not trace["children"]
        and (summary_misses(trace) == neighbours(net, peer_id))
    )


def distances(net: Devnet, entry: str) -> dict[str, int]:
    """Hops from `entry` to every peer over the active views (breadth first)."""
    views = {p: neighbours(net, p) for p in net.peers}
    found, todo = {entry: 0}, deque([entry])
    while todo:
        here = todo.popleft()
        for other in views[here] - found.keys():
            found[other] = found[here] + 1
            todo.append(other)
    return found


def nodes(trace: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield trace
    for child in trace["children"]:
        yield from nodes(child)


def metric(net: Devnet, peer_id: str, series: str) -> float:
    """One sample of a peer's /metrics (`name{labels}` exactly as exposed), 0 if absent."""
    text = httpx.get(f"{url(net, peer_id)}/metrics", timeout=10, trust_env=False).text
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def far(net: Devnet) -> tuple[str, str, int]:
    """(entry, the peer farthest from it, hops between them)."""
    entry = "peer1"
    hops = distances(net, entry)
    assert len(hops) == COUNT, hops  # one component
    target = max(sorted(hops), key=lambda p: hops[p])
    assert hops[target] >= 2, hops  # views of three among twelve: not a neighbour
    return entry, target, hops[target]


# -- every mode, end to end -------------------------------------------------------------


def flood_to(net: Devnet, entry: str, target: str, name: str, **params: Any) -> Any:
    """A flood far enough to reach `target` (to every neighbour, TTL its distance now), until
    it finds `name` there. Views change (shuffles, replacements) and summaries follow them
    within two refresh periods, so the distance is measured again and the search retried
    while they settle; a flood that never finds it fails the test at the deadline."""
    found: list[Any] = []

    def reached() -> bool:
        hops = distances(net, entry).get(target, 2)
        body = search(net, entry, name, mode="flood", ttl=max(hops, 2), fanout=ACTIVE, **params)
        found[:] = [body]
        return [(h["name"], h["peer_id"]) for h in body["hits"]] == [(name, target)]

    wait_for(reached, SEEN_S, step_s=1.0, what=f"a flood from {entry} to find {name}")
    return found[0]


@pytest.mark.parametrize("mode", ["flood", "walk", "dynamic", "auto"])
def test_every_mode_finds_a_file_on_a_far_peer(
    net: Devnet, far: tuple[str, str, int], mode: str
) -> None:
    entry, target, _ = far
    name = f"hello{target.removeprefix('peer')}.txt"
    params: dict[str, Any] = {"mode": mode, "max_results": 1}
    if mode == "flood":
        body = flood_to(net, entry, target, name)
    else:
        body = search(net, entry, name, **params)
    assert [(h["name"], h["peer_id"]) for h in body["hits"]] == [(name, target)], body
    assert body["mode"] == (AUTO_MODE if mode == "auto" else mode)
    assert body["messages"] > 0 and body["peer_id"] == entry
    assert body["partial"] is False, body["peers_failed"]


def test_explain_returns_the_hop_tree_rooted_at_the_entry(
    net: Devnet, far: tuple[str, str, int]
) -> None:
    entry, target, _ = far
    name = f"hello{target.removeprefix('peer')}.txt"
    body = flood_to(net, entry, target, name, explain=True)
    trace = body["trace"]
    assert trace["peer_id"] == entry and trace["ttl"] >= 2 and trace["hits"] == 0
    assert {c["peer_id"] for c in trace["children"]} <= neighbours(net, entry)
    found = [n for n in nodes(trace) if n["peer_id"] == target]
    assert found and found[0]["hits"] == 1, trace
    assert all(n["hits"] == 0 for n in nodes(trace) if n["peer_id"] != target)
    # Summaries see the last hop: nobody asked a neighbour whose own filter rules it out.
    assert all(c["peer_id"] == target for n in nodes(trace) if n["ttl"] == 1 for c in n["children"])
    assert search(net, entry, name, mode="flood")["trace"] is None  # only when asked


# -- a new file, through the summaries -------------------------------------------------


def test_a_new_file_is_found_through_the_summaries_within_seconds(net: Devnet) -> None:
    # An owner with a neighbour that has other neighbours too (to be ruled out).
    owner, entry = next(
        (o, n)
        for o in sorted(net.peers)
        for n in sorted(neighbours(net, o))
        if len(neighbours(net, n) - {o}) >= 1
    )
    name = "late-arrival-of-summaries.txt"
    assert ask_neighbours(net, entry, name)["hits"] == []
    before = get(f"{url(net, entry)}/summary")["version"]
    shared = net[owner].spec.shared_dir
    staged = shared.parent / f"staged-{name}"
    staged.write_text("arrived\n")
    staged.rename(shared / name)  # one inotify event: the file appears whole

    # The entry's merged summary takes in the owner's new own filter...
    wait_for(
        lambda: get(f"{url(net, entry)}/summary")["version"] != before,
        SEEN_S,
        step_s=0.2,
        what=f"{entry}'s summary to change after {owner}'s index did",
    )
    # ...and a one-hop query from it now goes to the owner, and only there.
    body = wait_for(
        lambda: (b := ask_neighbours(net, entry, name))["hits"] and b,
        SEEN_S,
        step_s=0.2,
        what=f"a one-hop search from {entry} to find the new file on {owner}",
    )
    assert [(h["name"], h["peer_id"]) for h in body["hits"]] == [(name, owner)]
    trace = body["trace"]
    assert [c["peer_id"] for c in trace["children"]] == [owner]
    others = neighbours(net, entry) - {owner}
    assert others and others <= summary_misses(trace), trace


# -- a neighbour with a broken summary (last: a fake joins the network) ----------------


@contextlib.contextmanager
def fake_peer(peer_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """A peer that is not one, on FAKE_HOST: it answers /health as `peer_id`, accepts every
    overlay message, finds nothing, and serves `state["summary"]` (bytes) as its /summary."""
    state: dict[str, Any] = {"summary": b"{}", "asked": 0}
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((FAKE_HOST, 0))
    sock.listen(64)
    base = f"http://{FAKE_HOST}:{sock.getsockname()[1]}"

    keys = FakeIdentities()

    async def health(request: web.Request) -> web.Response:
        return web.json_response(keys.answer(request.headers, peer_id, base))

    async def overlay(request: web.Request) -> web.Response:
        kind = (await request.json())["message"]["kind"]
        return web.json_response(
            keys.answer(request.headers, peer_id, base, kind=kind, accepted=True)
        )

    async def search(request: web.Request) -> web.Response:
        body = {
            "query": request.query.get("query", ""),
            "query_id": request.query.get("qid", "x" * 8),
            "peer_id": peer_id,
            "hits": [],
            "peers_answered": [peer_id],
            "peers_failed": [],
            "partial": False,
            "truncated": False,
            "took_ms": 0.0,
        }
        return web.json_response(body)

    async def summary(request: web.Request) -> web.Response:
        state["asked"] += 1
        return web.Response(body=state["summary"], content_type="application/json")

    app = web.Application()
    app.add_routes(
        [
            web.get("/health", health),
            web.post("/overlay", overlay),
            web.get("/search", search),
            web.get("/summary", summary),
        ]
    )
    with aiohttp_in_thread(app, [sock], "the fake peer"):
        yield base, state


REFUSED = 'peerfind_directory_summary_fetches_total{outcome="refused"}'


def test_an_oversized_or_malformed_summary_is_refused_and_its_peer_still_asked(
    net: Devnet,
) -> None:
    host = "peer5"
    with fake_peer("fake1") as (base, state):
        state["summary"] = b'{"padding": "' + b"x" * 500_000 + b'"}'  # over the 400 kB cap
        answer = httpx.post(
            f"{url(net, host)}/register", json={"url": base}, timeout=10, trust_env=False
        )
        assert answer.status_code == 200, answer.text
        wait_for(lambda: "fake1" in neighbours(net, host), SEEN_S, what=f"{host} to take fake1")
        start = metric(net, host, REFUSED)
        wait_for(
            lambda: metric(net, host, REFUSED) > start,
            SEEN_S,
            step_s=0.2,
            what=f"{host} to refuse fake1's oversized summary",
        )
        state["summary"] = b'{"peer_id": "fake1", "version": "v1", "own": {"bits": 3}}'
        oversized = metric(net, host, REFUSED)
        asked = state["asked"]
        wait_for(
            lambda: metric(net, host, REFUSED) > oversized and state["asked"] > asked,
            SEEN_S,
            step_s=0.2,
            what=f"{host} to refuse fake1's malformed summary",
        )

        # With no summary of fake1, "may match": a query that is nowhere still asks it,
        # while the real neighbours' summaries rule them out.
        def only_fake1_asked() -> bool:
            body = ask_neighbours(net, host, NOTHING)
            real = neighbours(net, host) - {"fake1"}
            return set(body["peers_answered"]) == {host, "fake1"} and (
                summary_misses(body["trace"]) == real
            )

        wait_for(only_fake1_asked, SEEN_S, step_s=0.5, what=f"{host} to ask fake1 only")
