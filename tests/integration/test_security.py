"""Cluster token and SSRF guard with real processes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from helpers import NetworkFactory, build_specs, get

from peerfind_devnet import Devnet, wait_for

pytestmark = pytest.mark.integration
TOKEN = "X-Peerfind-Token"


def test_peers_sharing_a_token_converge_and_outsiders_are_refused(
    make_network: NetworkFactory, tmp_path: Path
) -> None:
    specs = build_specs(tmp_path / "specs", count=3, cluster_token="s3cret-token")
    specs[2].extra["cluster_token"] = "another-token"  # peer3 holds the wrong secret
    net = make_network(specs=specs[:2])
    net.start()
    net.wait_converged()
    p1 = specs[0].url
    found = get(f"{p1}/search", query="hello")
    assert {h["peer_id"] for h in found["hits"]} == {"peer1", "peer2"}  # forwarding carries it

    anonymous = httpx.post(f"{p1}/register", json={"url": specs[1].url}, trust_env=False)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "unauthorized"
    forged = httpx.get(
        f"{p1}/search",
        params={"query": "hello", "qid": "abcdefgh1234", "sender": "peer2"},
        headers={TOKEN: "guess"},
        trust_env=False,
    )
    assert forged.status_code == 401

    outsider = Devnet(tmp_path / "outsider", [specs[2]])
    try:
        outsider.start()
        answer = httpx.post(
            f"{specs[2].url}/bootstrap",
            headers={TOKEN: "another-token"},
            timeout=30,
            trust_env=False,
        ).json()
        assert answer["ok"] is False
        assert answer["errors"]
        assert all("wrong X-Peerfind-Token" in e for e in answer["errors"])
        peers = {p["peer_id"] for p in get(f"{p1}/peers")["peers"]}
        assert "peer3" not in peers
    finally:
        outsider.stop()


def test_register_refuses_metadata_and_outside_networks(make_network: NetworkFactory) -> None:
    net = make_network(count=1)
    net.start()
    url = net["peer1"].spec.url
    for target, reason in [
        ("http://169.254.169.254", "not_allowed"),
        ("http://10.0.0.1:8000", "not_allowed"),
        ("http://[::1]:8000", "not_allowed"),
        ("gopher://127.0.0.1:70", "invalid_url"),
    ]:
        response = httpx.post(f"{url}/register", json={"url": target}, timeout=10, trust_env=False)
        assert response.status_code == 400, target
        assert response.json()["error"] == reason
    wait_for(lambda: get(f"{url}/peers")["peers"] == [], 5, what="an unchanged peer table")
