"""Twelve real peers on 127.0.0.x (`make local-up PEERS=12`'s wiring): the overlay keeps
every active view within its bound (so twelve peers are not a full mesh), symmetric and
connected, and a search that floods the views reaches every peer from any entry point."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import build_specs, get

from peerfind_devnet import Devnet, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]
COUNT = 12
HOSTS = [f"127.0.0.{60 + k}" for k in range(1, COUNT + 1)]
PEERS = [f"peer{k}" for k in range(1, COUNT + 1)]


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    root = tmp_path_factory.mktemp("many")
    # Enough fanout to ask every other peer at the first hop.
    specs = build_specs(root, COUNT, hosts=HOSTS, max_peers_per_network=64)
    net = Devnet(root, specs)
    with net.running(deadline_s=120):  # starts one by one, then waits for convergence
        yield net


def test_the_standard_wiring_chains_friends_back_to_peer1(many: Devnet) -> None:
    for k, peer_id in enumerate(PEERS, start=1):
        spec = many[peer_id].spec
        assert spec.friend_primary == (many[f"peer{k - 1}"].spec.url if k > 1 else "")
        assert spec.friend_backup == (many["peer1"].spec.url if k > 2 else "")


def test_active_views_are_bounded_symmetric_and_the_passive_views_know_more(
    many: Devnet,
) -> None:
    def snapshot() -> dict[str, set[str]] | None:
        """Every view, read peer by peer; None while a link formed between two reads
        (the overlay is live: top-ups go on while views have room)."""
        views = {}
        for peer_id in PEERS:
            body = get(f"{many[peer_id].spec.url}/peers")
            views[peer_id] = {p["peer_id"] for p in body["peers"]}
            assert 1 <= len(views[peer_id]) <= body["active_size"] == 6
            assert len(body["passive"]) <= body["passive_size"]
            assert not views[peer_id] & {p["peer_id"] for p in body["passive"]}
        symmetric = all(p in views[o] for p, view in views.items() for o in view)
        return views if symmetric else None

    views = wait_for(snapshot, 30, step_s=0.5, what="a symmetric snapshot of the views")
    assert sum(len(v) for v in views.values()) < COUNT * (COUNT - 1)  # not a mesh


@pytest.mark.parametrize("entry", ["peer1", "peer6", "peer12"])
def test_a_search_from_any_peer_reaches_every_peer(many: Devnet, entry: str) -> None:
    body = get(f"{many[entry].spec.url}/search", query="hello", fanout=6, ttl=5, timeout_ms=10000)
    assert body["partial"] is False, body["peers_failed"]
    owners = {h["name"]: h["peer_id"] for h in body["hits"]}
    assert owners == {f"hello{k}.txt": f"peer{k}" for k in range(1, COUNT + 1)}
