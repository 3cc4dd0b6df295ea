"""PeerTable: admission, bounds, state changes, pruning, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from directory.peers import PeerTable, TableFullError, load_remembered, save_remembered


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_table(clock: Clock, max_peers: int = 10, friends: tuple[str, ...] = ()) -> PeerTable:
    return PeerTable("me", ttl_s=30, max_peers=max_peers, friend_urls=friends, clock=clock)


def test_upsert_adds_then_refreshes(clock: Clock) -> None:
    table = make_table(clock)
    peer, added = table.upsert("p2", "http://h2:8000/", "h2:50051")
    assert added and peer.url == "http://h2:8000" and peer.state == "alive"
    clock.now += 5
    peer, added = table.upsert("p2", "http://h2:9000", "")
    assert not added
    assert peer.url == "http://h2:9000"
    assert peer.grpc_address == "h2:50051"  # kept when the refresh does not say
    assert peer.last_seen == clock.now


def test_self_is_refused(clock: Clock) -> None:
    with pytest.raises(ValueError, match="itself"):
        make_table(clock).upsert("me", "http://x:1")


def test_url_answering_with_new_id_replaces_old_entry(clock: Clock) -> None:
    table = make_table(clock)
    table.upsert("old", "http://h:1")
    table.upsert("new", "http://h:1")
    assert [p.peer_id for p in table.peers()] == ["new"]


def test_full_table_refuses_newcomers_but_admits_friends(clock: Clock) -> None:
    table = make_table(clock, max_peers=2, friends=("http://friend:1",))
    table.upsert("a", "http://a:1")
    table.upsert("b", "http://b:1")
    with pytest.raises(TableFullError):
        table.upsert("c", "http://c:1")
    assert {p.peer_id for p in table.peers()} == {"a", "b"}  # nobody was evicted
    table.upsert("a", "http://a:2")  # known peers still refresh
    friend, added = table.upsert("f", "http://friend:1")
    assert added and friend.friend


def test_failure_makes_suspect_and_contact_revives(clock: Clock) -> None:
    table = make_table(clock)
    table.upsert("p", "http://p:1")
    table.mark_failed("p")
    assert table.get("p").state == "suspect"  # type: ignore[union-attr]
    assert table.mark_alive("p") is True
    assert table.mark_alive("p") is False
    table.mark_failed("unknown")  # ignored


def test_prune_drops_stale_non_friends_and_keeps_friends_down(clock: Clock) -> None:
    table = make_table(clock, friends=("http://f:1",))
    table.upsert("p", "http://p:1")
    table.upsert("f", "http://f:1")
    table.upsert("fresh", "http://fresh:1")
    clock.now += 20
    table.mark_alive("fresh")
    clock.now += 11
    pruned = table.prune()
    assert [p.peer_id for p in pruned] == ["p"]
    assert table.get("f").state == "down"  # type: ignore[union-attr]
    assert table.get("fresh").state == "alive"  # type: ignore[union-attr]
    assert [p.peer_id for p in table.reachable()] == ["fresh"]
    assert table.counts() == {"alive": 1, "suspect": 0, "down": 1}


def test_remembered_peers_round_trip(tmp_path: Path, clock: Clock) -> None:
    table = make_table(clock)
    table.upsert("p2", "http://h2:1", "h2:2")
    path = tmp_path / "state" / "peers.json"
    save_remembered(path, table.peers())
    assert load_remembered(path) == [("p2", "http://h2:1", "")]  # addresses are re-verified
    path.write_text("{not json")
    assert load_remembered(path) == []
    assert load_remembered(tmp_path / "missing.json") == []


def test_per_network_bound(clock: Clock) -> None:
    table = PeerTable("me", ttl_s=30, max_peers=10, clock=clock, max_per_network=2)
    table.upsert("a", "http://10.0.0.1:1", network="10.0.0.0/24")
    table.upsert("b", "http://10.0.0.2:1", network="10.0.0.0/24")
    with pytest.raises(TableFullError, match=r"10\.0\.0\.0/24"):
        table.upsert("c", "http://10.0.0.3:1", network="10.0.0.0/24")
    table.upsert("d", "http://10.0.1.3:1", network="10.0.1.0/24")
    table.upsert("a", "http://10.0.0.1:2", network="10.0.0.0/24")  # known peers refresh
    assert len(table) == 3
