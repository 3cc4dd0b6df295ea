"""The bounded overlay on real peers: tiny views leave nobody isolated, a neighbour that
dies is replaced from the passive view, a hung one is found by the searches it stalls,
and the membership messages are what /metrics says."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from helpers import NetworkFactory, build_specs, get

from peerfind_devnet import Devnet, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def view(url: str) -> set[str]:
    return {p["peer_id"] for p in get(f"{url}/peers")["peers"]}


def views(net: Devnet) -> dict[str, set[str]]:
    return {
        peer_id: view(peer.spec.url)
        for peer_id, peer in net.peers.items()
        if peer.running("directory")
    }


def test_tiny_views_a_full_peer_makes_room_and_nobody_is_isolated(tmp_path: Path) -> None:
    """Eight peers, every one joining through peer1, whose active view holds two: each
    newcomer finds it full, and peer1 makes room instead of refusing."""
    hosts = [f"127.0.4.{k}" for k in range(1, 9)]
    specs = build_specs(tmp_path, 8, hosts=hosts, active_view=2, passive_view=4)
    for spec in specs[1:]:
        spec.friend_primary, spec.friend_backup = specs[0].url, ""
    net = Devnet(tmp_path, specs)
    with net.running(deadline_s=120):  # symmetric, connected, all alive
        seen = views(net)
        assert all(1 <= len(view) <= 2 for view in seen.values()), seen
        for peer in net.peers.values():
            body = get(f"{peer.spec.url}/peers")
            assert len(body["passive"]) <= 4 and body["active_size"] == 2
            assert not {p["peer_id"] for p in body["passive"]} & seen[peer.spec.peer_id]


def test_a_dead_neighbour_is_replaced_and_searches_are_complete_again(
    make_network: NetworkFactory,
) -> None:
    """Ten peers with views of three; three are killed (30%): the others drop them,
    take replacements from their passive views, and a flood is complete again."""
    hosts = [f"127.0.5.{k}" for k in range(1, 11)]
    net = make_network(count=10, hosts=hosts, active_view=3, passive_view=12)
    net.start()
    net.wait_converged(60)
    victims = ["peer3", "peer6", "peer9"]
    for peer_id in victims:
        net[peer_id].kill()
    live = {p for p in net.peers if p not in victims}
    entry = net["peer1"].spec.url

    def complete() -> bool:
        body = get(f"{entry}/search", query="hello", fanout=3, ttl=5, timeout_ms=3000)
        return not body["partial"] and set(body["peers_answered"]) == live

    wait_for(complete, 60, what="a complete answer from the seven live peers")
    net.wait_converged(60)
    assert all(not view & set(victims) for view in views(net).values())
    text = httpx.get(f"{entry}/metrics", timeout=10, trust_env=False).text
    sent = {
        line.split('kind="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("peerfind_directory_membership_messages_total")
        and 'direction="sent"' in line
    }
    assert sent["ping"] > 0 and sent["shuffle"] > 0


def test_a_hung_neighbour_is_dropped_after_a_search_times_out_on_it(
    make_network: NetworkFactory,
) -> None:
    """SIGSTOP peer2: the next search that waits on it makes it suspect, the ping that
    follows fails, and peer1 drops it long before the TTL (peer_ttl_s 3 s here, but the
    heartbeat is slowed to 30 s so that only the search can be what finds it)."""
    net = make_network(count=3, heartbeat_interval_s=30.0, peer_ttl_s=120.0)
    net.start()
    net.wait_converged(60)
    p1 = net["peer1"].spec.url
    net["peer2"].signal("directory", 19)  # SIGSTOP
    try:
        first = get(f"{p1}/search", query="hello", fanout=2, ttl=1, timeout_ms=1500)
        assert first["partial"] and {f["peer_id"] for f in first["peers_failed"]} == {"peer2"}
        wait_for(lambda: "peer2" not in view(p1), 15, what="peer1 to drop peer2")
        body = get(f"{p1}/search", query="hello", fanout=2, ttl=1, timeout_ms=1500)
        assert not body["partial"] and "peer2" not in body["peers_answered"]
    finally:
        net["peer2"].signal("directory", 18)  # SIGCONT
