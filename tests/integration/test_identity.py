"""Peer ids bound to keys, on real peers: a real peer process that claims another's id
(issue 17: `peer2` from another address, re-registering again and again) never takes its
place, its address or its friend flag, and searches keep naming the real owner."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from helpers import FAST, build_specs, get

from peerfind_devnet import Devnet, PeerSpec, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

IMPOSTOR_HOST = "127.0.7.9"
ATTEMPTS = 20


def test_a_peer_claiming_a_known_id_never_takes_its_place(tmp_path: Path) -> None:
    specs = build_specs(tmp_path, 3, hosts=["127.0.7.1", "127.0.7.2", "127.0.7.3"])
    net = Devnet(tmp_path, specs)
    with net.running(deadline_s=120):
        p1, p2 = net["peer1"].spec.url, net["peer2"].spec.url
        key2 = get(f"{p2}/health")["key_id"]

        def holds_peer2() -> bool:
            return any(p["peer_id"] == "peer2" for p in get(f"{p1}/peers")["peers"])

        wait_for(holds_peer2, 30, what="peer1 to hold peer2")
        shared = tmp_path / "impostor-share"
        shared.mkdir()
        (shared / "hello2.txt").write_text("forged\n")
        (shared / "only-the-impostor.txt").write_text("forged\n")
        impostor = PeerSpec.on_free_ports(
            "peer2",
            IMPOSTOR_HOST,
            shared,
            tmp_path / "impostor-state",
            peer_networks=["127.0.0.0/8"],
            **FAST,
        )
        impostor.friend_primary = p1  # it joins the real network through peer1
        fake = Devnet(tmp_path / "impostor", [impostor])
        fake.start()
        try:
            wait_for(lambda: get(f"{impostor.url}/health")["index"]["files"] == 2, 30,
                     what="the impostor to index its share")  # fmt: skip
            assert get(f"{impostor.url}/health")["key_id"] != key2
            refused = []
            with httpx.Client(timeout=10, trust_env=False) as client:
                for _ in range(ATTEMPTS):  # as the attacker: register again and again
                    answer = client.post(f"{p1}/register", json={"url": impostor.url})
                    refused.append((answer.status_code, answer.json().get("error")))
                    entry = next(p for p in get(f"{p1}/peers")["peers"] if p["peer_id"] == "peer2")
                    assert (entry["url"], entry["key_id"]) == (p2, key2), entry
            assert set(refused) == {(409, "peer_id_taken")}, refused
            # The impostor's own bootstrap through peer1 is refused as well.
            boot = httpx.post(f"{impostor.url}/bootstrap", timeout=30, trust_env=False).json()
            assert not boot["ok"] and "held by key" in " ".join(boot["errors"]), boot
            for entry in (p1, net["peer3"].spec.url):  # searches name the real owner only
                body = get(f"{entry}/search", query="hello2", fanout=4, ttl=3)
                owners = {(h["peer_id"], h["rest_url"]) for h in body["hits"]}
                assert owners == {("peer2", p2)}, body
                assert not get(f"{entry}/search", query="only-the-impostor", fanout=4)["hits"]
            metrics = httpx.get(f"{p1}/metrics", trust_env=False).text
            taken = 'peerfind_directory_identity_checks_total{outcome="peer_id_taken"}'
            line = next(x for x in metrics.splitlines() if x.startswith(taken))
            assert float(line.split()[-1]) >= ATTEMPTS
        finally:
            fake.stop()
        # The real peer2, restarted (same state folder, so the same key), is taken back.
        net["peer2"].stop()
        net["peer2"].start()
        net["peer2"].wait_healthy(30)
        assert get(f"{p2}/health")["key_id"] == key2
        wait_for(holds_peer2, 60, what="peer1 to hold the restarted peer2")
