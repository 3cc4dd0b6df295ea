"""Slowloris against a real directory: half-finished connections from one address.

Before connguard.py, uvicorn never closed a connection whose request headers stayed
unfinished (nor one that sent nothing), and one address could open as many as the file
descriptors allowed. Every connection here is bounded and closed at the end.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from helpers import NetworkFactory

from peerfind_devnet import wait_for

pytestmark = pytest.mark.integration

ATTACKER = "127.0.0.77"  # the one address the half-open connections come from
BYSTANDER = "127.0.0.78"  # an ordinary client
CAP = 32
CONNECTIONS = 200
PARTIAL = b"GET /health HTTP/1.1\r\nHost: peer\r\nX-Padding: "  # never finished
WITHIN_S = 30.0


@contextmanager
def half_open(
    host: str, port: int, count: int, first: bytes = PARTIAL
) -> Iterator[list[socket.socket]]:
    """`count` connections from ATTACKER that send `first` and then nothing; closed at exit."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection((host, port), timeout=5, source_address=(ATTACKER, 0))
            socks.append(sock)
            if first:
                sock.sendall(first)
        for sock in socks:
            sock.setblocking(False)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def state(sock: socket.socket, received: dict[int, bytes]) -> str:
    """'open', or 'closed' with what the server sent before closing (in `received`)."""
    try:
        while data := sock.recv(65536):
            received[sock.fileno()] = received.get(sock.fileno(), b"") + data
    except BlockingIOError:
        return "open"
    except ConnectionResetError:
        pass
    return "closed"


def health(url: str, source: str) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10, trust_env=False) as client:
        return client.get(f"{url}/health")


def test_one_address_gets_its_cap_and_the_rest_a_429(make_network: NetworkFactory) -> None:
    # A header deadline far beyond the test: every connection within the cap stays open.
    net = make_network(count=1, rest_max_connections_per_client=CAP, rest_header_timeout_s=600)
    net.start()
    peer = net["peer1"]
    host, port, url = peer.spec.host, peer.spec.rest_port, peer.spec.url
    with half_open(host, port, CONNECTIONS) as socks:
        received: dict[int, bytes] = {}

        def refused() -> int:
            return sum(state(s, received) == "closed" for s in socks)

        wait_for(lambda: refused() == CONNECTIONS - CAP, WITHIN_S, 0.1, "the refusals")
        assert [state(s, received) for s in socks].count("open") == CAP
        answers = set(received.values())
        assert len(answers) == 1
        answer = answers.pop()
        assert answer.startswith(b"HTTP/1.1 429 ")
        assert b'"error": "too_many_connections"' in answer
        # Everyone else is served, and the attacker's address is refused with the reason.
        assert health(url, BYSTANDER).status_code == 200
        capped = health(url, ATTACKER)
        assert capped.status_code == 429
        assert capped.json()["error"] == "too_many_connections"
        assert [state(s, received) for s in socks].count("open") == CAP
    # Closed by the client: the address has its connections back.
    wait_for(lambda: health(url, ATTACKER).status_code == 200, WITHIN_S, 0.1, "the cap freed")


def test_unfinished_headers_are_closed_however_slowly_they_drip(
    make_network: NetworkFactory,
) -> None:
    net = make_network(count=1, rest_header_timeout_s=1.0)  # the default cap, 64
    net.start()
    peer = net["peer1"]
    host, port, url = peer.spec.host, peer.spec.rest_port, peer.spec.url
    # 40 with unfinished headers, 10 that send nothing, and one that drips a header byte
    # at every poll (the deadline is not pushed back).
    with (
        half_open(host, port, 40) as partial,
        half_open(host, port, 10, b"") as silent,
        half_open(host, port, 1) as (drip,),
    ):
        socks = [*partial, *silent, drip]
        received: dict[int, bytes] = {}

        def all_closed() -> bool:
            if state(drip, received) == "open":
                with contextlib.suppress(OSError):  # closed since: the next poll sees it
                    drip.send(b"x")
            return all(state(s, received) == "closed" for s in socks)

        assert health(url, BYSTANDER).status_code == 200
        wait_for(all_closed, WITHIN_S, 0.1, "the half-open connections to be closed")
        assert not received  # closed without an answer (no request was made)
    # A request sent at once is answered as before, from the same address.
    assert health(url, ATTACKER).status_code == 200
