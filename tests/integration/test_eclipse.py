"""Eclipse: a swarm of sybil peers floods a real peer with joins. The real peer's longest-
serving neighbours keep their places (a newcomer only ever displaces one of the rest), so
its searches still reach the real network, and a real newcomer is still taken in."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from helpers import FakeIdentities, aiohttp_in_thread, build_specs, get

from peerfind_devnet import Devnet, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SYBIL_HOST = "127.0.6.1"
SYBILS = 40
ROUNDS = 5


@contextlib.contextmanager
def sybil_swarm(count: int) -> Iterator[list[str]]:
    """`count` fake peers on SYBIL_HOST, one port each: every one answers /health with an
    id of its own, accepts every overlay message and answers every search with nothing."""

    keys = FakeIdentities()

    def me(request: web.Request) -> tuple[str, str]:
        port = request.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
        return f"sybil{port}", f"http://{SYBIL_HOST}:{port}"

    async def health(request: web.Request) -> web.Response:
        peer_id, url = me(request)
        return web.json_response(keys.answer(request.headers, peer_id, url))

    async def overlay(request: web.Request) -> web.Response:
        peer_id, url = me(request)
        kind = (await request.json())["message"]["kind"]
        return web.json_response(
            keys.answer(request.headers, peer_id, url, kind=kind, accepted=True)
        )

    async def search(request: web.Request) -> web.Response:
        peer_id, _ = me(request)
        body = {
            "query": request.query.get("query", ""),
            "query_id": request.query.get("qid", "x" * 8),
            "peer_id": peer_id,
            "hits": [],
            "peers_answered": [peer_id],
            "peers_failed": [],
            "partial": False,
            "truncated": False,
            "duplicate": False,
            "took_ms": 0.0,
        }
        return web.json_response(body)

    app = web.Application()
    app.add_routes(
        [web.get("/health", health), web.post("/overlay", overlay), web.get("/search", search)]
    )
    # Sockets bound here, each to a port the system picks: distinct by construction.
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((SYBIL_HOST, 0))
        sock.listen(128)
        sockets.append(sock)
    ports = [sock.getsockname()[1] for sock in sockets]
    with aiohttp_in_thread(app, sockets, "the sybil swarm"):
        yield [f"http://{SYBIL_HOST}:{port}" for port in ports]


def test_a_join_flood_of_sybils_does_not_eclipse_a_peer(tmp_path: Path) -> None:
    hosts = [f"127.0.6.{k}" for k in range(11, 16)]
    specs = build_specs(tmp_path, 5, hosts=hosts)
    late = specs.pop()  # joins after the flood
    net = Devnet(tmp_path, specs)
    with net.running(deadline_s=120), sybil_swarm(SYBILS) as sybils:
        p1 = net["peer1"].spec.url
        real = {"peer2", "peer3", "peer4"}
        wait_for(lambda: real <= {p["peer_id"] for p in get(f"{p1}/peers")["peers"]}, 30,
                 what="peer1 to hold the three real peers")  # fmt: skip
        # Past one ping period (0.5 s here): they have served, and are protected.
        wait_for(lambda: get(f"{p1}/health")["uptime_s"] > 3, 30, what="peer1 to serve a while")
        with httpx.Client(timeout=10, trust_env=False) as client:
            for _ in range(ROUNDS):
                for url in sybils:  # each sybil joins peer1 again and again
                    answer = client.post(f"{p1}/register", json={"url": url})
                    assert answer.status_code in (200, 429), answer.text
        view = {p["peer_id"] for p in get(f"{p1}/peers")["peers"]}
        assert real <= view, view  # the three longest-serving neighbours kept their places
        body = get(f"{p1}/search", query="hello", fanout=6, ttl=3, timeout_ms=5000)
        owners = {h["peer_id"] for h in body["hits"]}
        assert owners == {"peer1", *real}, body
        newcomer = Devnet(tmp_path / "late", [late])
        try:  # and a real newcomer joining through the flooded peer is still taken in
            late.friend_primary, late.friend_backup = p1, ""
            newcomer.start()
            wait_for(
                lambda: any(
                    not p["peer_id"].startswith("sybil") for p in get(f"{late.url}/peers")["peers"]
                ),
                30,
                what="the newcomer to have a real neighbour",
            )
        finally:
            newcomer.stop()
