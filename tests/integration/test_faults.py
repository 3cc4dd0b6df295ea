"""Faults with real processes: dead friends, killed peers, bad config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import NetworkFactory, build_specs, get

from peerfind_devnet import Devnet, free_port, wait_for

pytestmark = pytest.mark.integration


def peer_ids(url: str) -> dict[str, str]:
    return {p["peer_id"]: p["state"] for p in get(f"{url}/peers")["peers"]}


def test_killed_peer_gives_partial_results_is_pruned_and_found_again(
    make_network: NetworkFactory,
) -> None:
    # Pings every 3 s, not FAST's 0.5: a round that pinged the dead peer3 between the kill
    # and the first search would drop it before that search could find it failing. The
    # search itself makes peer3 suspect and pings it at once, so pruning stays quick.
    net = make_network(heartbeat_interval_s=3.0, peer_ttl_s=6.0)
    net.start()
    net.wait_converged()
    p1 = net["peer1"].spec.url
    net["peer3"].kill()  # kill -9 of all three processes

    body = get(f"{p1}/search", query="hello", fanout=2, timeout_ms=1500)
    assert body["partial"] is True
    assert "peer3" in {f["peer_id"] for f in body["peers_failed"]}
    assert {h["peer_id"] for h in body["hits"]} == {"peer1", "peer2"}

    # peer3 is nobody's friend but peer... it is no friend of peer1 or peer2: pruned after the TTL.
    wait_for(lambda: "peer3" not in peer_ids(p1), 15, what="peer1 to prune peer3")
    wait_for(
        lambda: "peer3" not in peer_ids(net["peer2"].spec.url), 15, what="peer2 to prune peer3"
    )
    after = get(f"{p1}/search", query="hello", fanout=2)
    assert after["partial"] is False  # nobody left to fail

    net["peer3"].start()
    net["peer3"].wait_healthy()
    wait_for(lambda: "peer3" in peer_ids(p1), 15, what="peer3 to be known again")
    found = get(f"{p1}/search", query="hello3", fanout=2)
    assert [h["peer_id"] for h in found["hits"]] == ["peer3"]


def test_primary_friend_down_bootstrap_uses_backup(
    make_network: NetworkFactory, tmp_path: Path
) -> None:
    specs = build_specs(tmp_path / "specs", count=3)
    # peer3: primary = peer2 (never started), backup = peer1
    net = make_network(specs=[specs[0], specs[2]])
    net.start()
    p3 = net["peer3"].spec.url
    wait_for(lambda: peer_ids(p3).get("peer1") == "alive", 15, what="peer3 to know peer1")
    assert "peer3" in peer_ids(net["peer1"].spec.url)  # registration was mutual
    answer = httpx.post(f"{p3}/bootstrap", timeout=30, trust_env=False).json()
    assert answer["ok"] is True
    assert answer["friend"] == specs[0].url
    assert answer["tried"] == [specs[1].url, specs[0].url]
    assert answer["errors"] and specs[1].url in answer["errors"][0]


def test_both_friends_down_peer_serves_its_own_files_and_retries(
    make_network: NetworkFactory, tmp_path: Path
) -> None:
    specs = build_specs(tmp_path / "specs", count=3)
    net = make_network(specs=[specs[2]])  # only peer3; its friends peer2 and peer1 are down
    net.start()
    p3 = net["peer3"].spec.url
    body = get(f"{p3}/search", query="hello")
    assert [h["name"] for h in body["hits"]] == ["hello3.txt"]
    # peer1 comes up later: peer3's background bootstrap finds it, no manual step.
    late = Devnet(tmp_path / "late", [specs[0]])
    try:
        late.start()
        wait_for(lambda: peer_ids(p3).get("peer1") == "alive", 20, what="background re-bootstrap")
        found = get(f"{specs[0].url}/search", query="hello3")
        assert [h["peer_id"] for h in found["hits"]] == ["peer3"]
    finally:
        late.stop()


def test_peer_met_by_others_first_still_finds_its_late_friend(
    make_network: NetworkFactory, tmp_path: Path
) -> None:
    """Simultaneous starts (compose): peer3 registers with peer2 before peer1 is up.
    peer2 has a live peer then, but not its friend: it must keep bootstrapping."""
    specs = build_specs(tmp_path / "specs", count=3)
    net = make_network(specs=specs[1:])  # peer2 (friend peer1, down) and peer3 (friend peer2)
    net.start()
    p2, p3 = net["peer2"].spec.url, net["peer3"].spec.url
    wait_for(lambda: peer_ids(p2).get("peer3") == "alive", 20, what="peer3 meets peer2")
    late = Devnet(tmp_path / "late", [specs[0]])
    try:
        late.start()
        p1 = specs[0].url
        wait_for(lambda: peer_ids(p2).get("peer1") == "alive", 20, what="peer2 finds its friend")
        wait_for(
            lambda: set(peer_ids(p1)) == {"peer2", "peer3"} and "peer1" in peer_ids(p3),
            20,
            what="all three converge",
        )
    finally:
        late.stop()


@pytest.mark.parametrize("service", ["directory.main", "transfer.main", "indexer.main"])
def test_invalid_config_exits_2_with_one_line(tmp_path: Path, service: str) -> None:
    config = tmp_path / "bad.json"
    config.write_text(
        json.dumps(
            {
                "peer_id": "p1",
                "shared_dir": str(tmp_path),
                "state_dir": str(tmp_path / "s"),
                "rest_port": 70000,
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", service],
        env={"PEER_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "rest_port" in lines[0]


def test_directory_port_taken_exits_nonzero(tmp_path: Path) -> None:
    import socket

    host = "127.0.0.2"
    port = free_port(host)
    blocker = socket.socket()
    blocker.bind((host, port))
    blocker.listen()
    try:
        config = tmp_path / "peer.json"
        config.write_text(
            json.dumps(
                {
                    "peer_id": "p1",
                    "host": host,
                    "rest_port": port,
                    "grpc_port": free_port(host),
                    "shared_dir": str(tmp_path),
                    "state_dir": str(tmp_path / "s"),
                }
            )
        )
        proc = subprocess.run(
            [sys.executable, "-m", "directory.main"],
            env={"PEER_CONFIG": str(config)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1
        assert "Traceback" not in proc.stderr
        assert "cannot listen on" in proc.stderr
    finally:
        blocker.close()
