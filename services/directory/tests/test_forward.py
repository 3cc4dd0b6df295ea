"""Node.forward (aiohttp) against a real socket that answers what each test scripts."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pydantic
import pytest

from directory.forwarding import SearchForwarder
from directory.node import Node
from directory.peers import Peer
from directory.search import SearchParams
from directory.transport import DEFAULT_MAX_ANSWER_BYTES, PeerCallError
from peerfind.config import PeerSettings

ANSWER = {
    "query": "hello",
    "query_id": "q" * 16,
    "peer_id": "p2",
    "hits": [
        {
            "name": "hello.txt",
            "path": "hello.txt",
            "size": 5,
            "mtime": 1.5,
            "peer_id": "p2",
            "rest_url": "http://127.0.0.2:1",
            "grpc_address": "127.0.0.2:2",
        }
    ],
    "peers_answered": ["p2"],
    "peers_failed": [],
    "partial": False,
    "truncated": False,
    "duplicate": False,
    "took_ms": 1.0,
}


@dataclass
class FakePeer:
    """An HTTP/1.1 server on 127.0.0.2 that records each request and answers `reply`."""

    reply: Callable[[], bytes]
    requests: list[bytes] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            self.sources.append(writer.get_extra_info("peername")[0])
            writer.write(self.reply())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def response(status: str, body: bytes, headers: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{headers}"
    if "Transfer-Encoding" not in headers:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


def chunked(body: bytes, size: int = 65536) -> bytes:
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


@pytest.fixture
async def fake_peer() -> AsyncIterator[FakePeer]:
    peer = FakePeer(reply=lambda: response("200 OK", json.dumps(ANSWER).encode()))
    server = await asyncio.start_server(peer.handle, "127.0.0.2", 0)
    peer.port = server.sockets[0].getsockname()[1]
    async with server:
        yield peer


@pytest.fixture
async def node(settings: PeerSettings) -> AsyncIterator[Node]:
    settings = settings.model_copy(update={"cluster_token": pydantic.SecretStr("s3cret")})
    n = Node(settings)
    yield n
    await n.close()


def params() -> SearchParams:
    return SearchParams(
        query="hello", fanout=2, ttl=1, timeout_s=2.0, query_id="q" * 16, sender="p1"
    )


def target(fake: FakePeer) -> Peer:
    return Peer(peer_id="p2", url=f"http://127.0.0.2:{fake.port}", grpc_address="127.0.0.2:2")


async def test_forward_sends_the_query_from_our_address_with_the_token(
    node: Node, fake_peer: FakePeer
) -> None:
    answer = await node.forward(target(fake_peer), params())
    assert [h.name for h in answer.hits] == ["hello.txt"]
    head = fake_peer.requests[0].decode()
    assert head.startswith("GET /search?query=hello&fanout=2&ttl=1&timeout_ms=2000&qid=")
    assert "&sender=p1&mode=flood&" in head
    assert "x-peerfind-token: s3cret" in head.lower()
    assert fake_peer.sources == ["127.0.0.1"]  # settings.host, not whatever the OS picks


async def test_an_explained_walk_is_forwarded_with_every_new_parameter(
    node: Node, fake_peer: FakePeer
) -> None:
    from dataclasses import replace

    from directory.search import Visited
    from peerfind.api import SearchRequest

    walk = replace(
        params(), mode="walk", wanted=3, budget=40, explain=True, visited=Visited().with_(["p1"])
    )
    await node.forward(target(fake_peer), walk)
    head = fake_peer.requests[0].decode()
    line = head.split(" ")[1]
    assert "&mode=walk&max_results=3&budget=40&visited=" in line
    assert line.endswith("&explain=true")
    from urllib.parse import parse_qsl, urlsplit

    back = SearchRequest.model_validate(dict(parse_qsl(urlsplit(line).query)))
    assert back == walk.to_request()


@pytest.mark.parametrize(
    "query",
    ["a&b=c", "50% off", "plus+sign", "ñandú ü 文件", "semi;colon", "hash#tag", "a/b?c", " x "],
)
async def test_forward_carries_any_query_text_unchanged(
    node: Node, fake_peer: FakePeer, query: str
) -> None:
    await node.forward(target(fake_peer), dataclasses.replace(params(), query=query))
    request_target = fake_peer.requests[0].decode().split(" ")[1]
    received = urllib.parse.parse_qs(urllib.parse.urlsplit(request_target).query)
    assert received["query"] == [query]


async def test_forward_never_follows_a_redirect(node: Node, fake_peer: FakePeer) -> None:
    fake_peer.reply = lambda: response("302 Found", b"", "Location: http://127.0.0.9:9/x\r\n")
    with pytest.raises(PeerCallError, match="HTTP 302"):
        await node.forward(target(fake_peer), params())
    assert len(fake_peer.requests) == 1


@pytest.mark.parametrize("status", ["404 Not Found", "500 Internal Server Error"])
async def test_forward_error_status_fails_the_forward(
    node: Node, fake_peer: FakePeer, status: str
) -> None:
    fake_peer.reply = lambda: response(status, b'{"error": "x", "detail": "y"}')
    with pytest.raises(PeerCallError, match=f"HTTP {status.split()[0]}"):
        await node.forward(target(fake_peer), params())


async def test_forward_refuses_a_declared_oversized_answer(node: Node, fake_peer: FakePeer) -> None:
    big = DEFAULT_MAX_ANSWER_BYTES + 1
    # Declares more than the cap and sends nothing: refused on the header alone.
    fake_peer.reply = lambda: f"HTTP/1.1 200 OK\r\nContent-Length: {big}\r\n\r\n".encode() + b"{"
    with pytest.raises(PeerCallError, match="too large"):
        await node.forward(target(fake_peer), params())


async def test_forward_refuses_an_oversized_chunked_answer(node: Node, fake_peer: FakePeer) -> None:
    forward = SearchForwarder(node.http, node.auth, max_answer_bytes=100_000)
    body = json.dumps({**ANSWER, "hits": ANSWER["hits"] * 1000}).encode()
    assert len(body) > 100_000
    fake_peer.reply = lambda: response("200 OK", chunked(body), "Transfer-Encoding: chunked\r\n")
    with pytest.raises(PeerCallError, match="larger than 100000 bytes"):
        await forward(target(fake_peer), params())


async def test_forward_reads_a_chunked_answer_under_the_cap(
    node: Node, fake_peer: FakePeer
) -> None:
    body = json.dumps(ANSWER).encode()
    fake_peer.reply = lambda: response(
        "200 OK", chunked(body, 100), "Transfer-Encoding: chunked\r\n"
    )
    answer = await node.forward(target(fake_peer), params())
    assert answer.peers_answered == ["p2"]


@pytest.mark.parametrize(
    "body", [b"not json", b'{"hits": "nope"}', json.dumps({**ANSWER, "extra": 1}).encode()]
)
async def test_forward_refuses_an_answer_that_is_not_a_search_response(
    node: Node, fake_peer: FakePeer, body: bytes
) -> None:
    fake_peer.reply = lambda: response("200 OK", body)
    with pytest.raises(pydantic.ValidationError):
        await node.forward(target(fake_peer), params())


async def test_forward_to_a_closed_port_raises_a_client_error(node: Node) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.2", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    dead = Peer(peer_id="p2", url=f"http://127.0.0.2:{port}", grpc_address="127.0.0.2:2")
    with pytest.raises(aiohttp.ClientConnectorError, match="Cannot connect"):
        await node.forward(dead, params())


async def test_a_pooled_connection_closed_by_a_restarted_peer_is_retried_once(
    node: Node,
) -> None:
    """The first connection answers once with keep-alive, then closes on the next request
    (the peer restarted); the second forward goes out again on a fresh connection (aiohttp
    retries an idempotent request on a reused connection: this keeps us on a version that
    does)."""
    connections: list[int] = []
    body = json.dumps(ANSWER).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(0)
        first_connection = len(connections) == 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                connections[-1] += 1
                if first_connection and connections[-1] == 2:
                    return  # closed without an answer
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                writer.write(head.encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.2", 0)
    port = server.sockets[0].getsockname()[1]
    peer = Peer(peer_id="p2", url=f"http://127.0.0.2:{port}", grpc_address="127.0.0.2:2")
    async with server:
        first = await node.forward(peer, params())
        second = await node.forward(peer, params())
    assert first.peers_answered == second.peers_answered == ["p2"]
    assert connections == [2, 1]
