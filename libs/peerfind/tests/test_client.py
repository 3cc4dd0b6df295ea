"""peerfind.client against a real REST server (uvicorn) and a real grpc.aio server."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from peerfind.api import FailedPeer, FileInfo, PeerInfo, PeersResponse, SearchHit, SearchResponse
from peerfind.client import (
    DEFAULT_TIMEOUT_S,
    SEARCH_MARGIN_S,
    PeerClient,
    TransferClient,
    choose_owner,
    download_from,
    locate,
    pick_version,
    resolve_transfer_address,
    upload_to,
    validate_grpc_address,
)
from peerfind.client._workflows import locate_query
from peerfind.config import MAX_CHUNK_SIZE
from peerfind.errors import (
    AmbiguousName,
    ClientError,
    FileNotLocated,
    PeerRefused,
    PeerUnreachable,
)
from peerfind_devnet.fakes import Directory, Pki, Transfer, make_hit

HitFactory = Callable[..., SearchHit]


def _file(path: str, size: int = 10) -> FileInfo:
    return FileInfo(
        name=path.rsplit("/", 1)[-1],
        path=path,
        size=size,
        mtime=1.7e9,
        peer_id="peer1",
        rest_url="http://127.0.0.1:8001",
        grpc_address="127.0.0.1:50051",
    )


# --------------------------------------------------------------------------- REST


async def test_health_parses_the_model(directory: Any) -> None:
    async with PeerClient(directory.url + "/") as peer:
        health = await peer.health()
    assert health.peer_id == "peer1"
    assert health.status == "ok"
    assert health.index.files == 3
    assert peer.base_url == directory.url  # trailing slash dropped
    assert directory.state.requests[-1][:2] == ("GET", "/health")


async def test_health_accepts_a_degraded_503(directory: Any) -> None:
    directory.advertise("127.0.0.1:50051", status="degraded")
    directory.state.health_status = 503
    async with PeerClient(directory.url) as peer:
        health = await peer.health()
    assert health.status == "degraded"


async def test_peers(directory: Any) -> None:
    directory.state.peers = [
        PeerInfo(
            peer_id="peer2", url="http://127.0.0.1:8002", state="alive", last_seen=1.0, friend=True
        ),
    ]
    async with PeerClient(directory.url) as peer:
        result = await peer.peers()
    assert [p.peer_id for p in result.peers] == ["peer2"]
    assert result.peers[0].friend is True


async def test_files_sends_limit_and_after(directory: Any) -> None:
    directory.state.files = [_file(f"d/{n}.txt") for n in "abcde"]
    async with PeerClient(directory.url) as peer:
        page = await peer.files(limit=2, after="d/a.txt")
    assert [f.path for f in page.files] == ["d/b.txt", "d/c.txt"]
    assert page.next_after == "d/c.txt"
    assert page.total == 5
    assert directory.state.requests[-1][2] == {"limit": "2", "after": "d/a.txt"}


async def test_files_without_arguments_sends_no_parameters(directory: Any) -> None:
    async with PeerClient(directory.url) as peer:
        await peer.files()
    assert directory.state.requests[-1][2] == {}


async def test_iter_files_walks_every_page(directory: Any) -> None:
    directory.state.files = [_file(f"d/{n:02d}") for n in range(7)]
    async with PeerClient(directory.url) as peer:
        paths = [f.path async for f in peer.iter_files(page_size=3)]
    assert paths == [f"d/{n:02d}" for n in range(7)]
    assert len([r for r in directory.state.requests if r[1] == "/files"]) == 3


async def test_iter_files_refuses_a_repeated_cursor(directory: Any) -> None:
    body = {"peer_id": "p", "files": [], "total": 9, "next_after": "x"}
    directory.state.override["/files"] = (200, json.dumps(body))
    async with PeerClient(directory.url) as peer:
        with pytest.raises(PeerRefused, match="repeated page cursor"):
            async for _ in peer.iter_files():
                pass


async def test_search_sends_parameters_and_parses_hits(directory: Any, hit: HitFactory) -> None:
    directory.state.hits = [hit("hello3.txt", "peer3", "127.0.0.1:50053")]
    directory.state.failed = [FailedPeer(peer_id="peer4", url="http://x:1", error="timeout")]
    async with PeerClient(directory.url) as peer:
        result = await peer.search("hello", fanout=3, timeout_ms=700)
    assert [h.grpc_address for h in result.hits] == ["127.0.0.1:50053"]
    assert result.partial is True
    assert result.peers_failed[0].peer_id == "peer4"
    assert directory.state.requests[-1][2] == {"query": "hello", "fanout": "3", "timeout_ms": "700"}


async def test_register_posts_the_url(directory: Any) -> None:
    async with PeerClient(directory.url) as peer:
        result = await peer.register("http://127.0.0.1:8009")
    method, path, _, body = directory.state.requests[-1]
    assert (method, path) == ("POST", "/register")
    assert json.loads(body) == {"url": "http://127.0.0.1:8009"}
    assert result.registered.url == "http://127.0.0.1:8009"


async def test_bootstrap(directory: Any) -> None:
    async with PeerClient(directory.url) as peer:
        result = await peer.bootstrap()
    assert result.ok is True
    assert result.friend_peer_id == "peer2"
    assert directory.state.requests[-1][:2] == ("POST", "/bootstrap")


async def test_error_response_detail_becomes_peer_refused(directory: Any) -> None:
    async with PeerClient(directory.url) as peer:
        with pytest.raises(PeerRefused) as caught:
            await peer.files(limit=0)
    message = str(caught.value)
    assert "limit must be at least 1" in message
    assert f"HTTP 422 from {directory.url}" in message


async def test_fastapi_validation_error_is_mapped_too(directory: Any) -> None:
    async with PeerClient(directory.url) as peer:
        with pytest.raises(PeerRefused, match=r"query: Field required \(HTTP 422"):
            await peer._call("GET", "/search", SearchResponse)


async def test_unknown_route_uses_fastapi_detail(directory: Any) -> None:
    async with PeerClient(directory.url) as peer:
        with pytest.raises(PeerRefused, match=r"^Not Found \(HTTP 404"):
            await peer._call("GET", "/nope", PeersResponse)


async def test_non_json_error_uses_the_status_text(directory: Any) -> None:
    directory.state.override["/peers"] = (500, "<html>oops</html>")
    async with PeerClient(directory.url) as peer:
        with pytest.raises(PeerRefused, match=r"^Internal Server Error \(HTTP 500"):
            await peer.peers()


async def test_malformed_success_body_is_refused(directory: Any) -> None:
    directory.state.override["/peers"] = (200, '{"peer_id": "p", "peers": "many"}')
    async with PeerClient(directory.url) as peer:
        with pytest.raises(PeerRefused, match="malformed answer to /peers: peers"):
            await peer.peers()


async def test_non_json_success_body_is_refused(directory: Any) -> None:
    directory.state.override["/health"] = (200, "not json")
    async with PeerClient(directory.url) as peer:
        with pytest.raises(PeerRefused, match="malformed answer to /health"):
            await peer.health()


async def test_503_without_a_health_body_is_refused(directory: Any) -> None:
    body = {"error": "unavailable", "detail": "index missing"}
    directory.state.override["/health"] = (503, json.dumps(body))
    async with PeerClient(directory.url) as peer:
        with pytest.raises(PeerRefused, match=r"index missing \(HTTP 503"):
            await peer.health()


async def test_connection_refused_is_unreachable(dead_port: int) -> None:
    url = f"http://127.0.0.1:{dead_port}"
    async with PeerClient(url) as peer:
        with pytest.raises(PeerUnreachable) as caught:
            await peer.health()
    assert str(caught.value) == f"cannot reach {url}: connection refused"


async def test_unknown_host_is_unreachable() -> None:
    async with PeerClient("http://peerfind-no-such-host.invalid:8001") as peer:
        with pytest.raises(PeerUnreachable, match="cannot reach http://peerfind-no-such-host"):
            await peer.health()


async def test_slow_peer_times_out(directory: Any) -> None:
    directory.state.delay_s = 0.5
    async with PeerClient(directory.url, timeout=0.1) as peer:
        with pytest.raises(PeerUnreachable, match=r"no answer to /peers within 0.1 s"):
            await peer.peers()


@pytest.mark.parametrize(
    "url", ["ftp://host", "127.0.0.1:8001", "http://host/path", "http://user:pw@host", ""]
)
def test_invalid_base_url_is_a_client_error(url: str) -> None:
    with pytest.raises(ClientError, match="invalid peer URL") as caught:
        PeerClient(url)
    assert not isinstance(caught.value, PeerUnreachable | PeerRefused)


async def test_a_shared_http_client_stays_open(directory: Any) -> None:
    async with httpx.AsyncClient() as http:
        async with PeerClient(directory.url, http=http) as peer:
            await peer.health()
        assert not http.is_closed
        async with PeerClient(directory.url, http=http) as peer:
            await peer.peers()


async def test_search_deadline_has_a_margin() -> None:
    seen: list[dict[str, float]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(404, json={"error": "not_found", "detail": "x"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        peer = PeerClient("http://peer.test", http=http)
        for timeout_ms in (30_000, None):
            with pytest.raises(PeerRefused):
                await peer.search("q", timeout_ms=timeout_ms)
        with pytest.raises(PeerRefused):
            await peer.peers()
    assert seen[0]["read"] == pytest.approx(30 + SEARCH_MARGIN_S)
    assert seen[1]["read"] == pytest.approx(DEFAULT_TIMEOUT_S + SEARCH_MARGIN_S)
    assert seen[2]["read"] == pytest.approx(DEFAULT_TIMEOUT_S)


# --------------------------------------------------------------------------- locate


async def test_locate_keeps_exact_names_without_duplicates(directory: Any, hit: HitFactory) -> None:
    directory.state.hits = [
        hit("hello3.txt.bak", "peer2", "127.0.0.1:50052"),
        hit("hello3.txt", "peer3", "127.0.0.1:50053"),
        hit("hello3.txt", "peer3", "127.0.0.1:50053"),
        hit("hello3.txt", "peer4", "127.0.0.1:50054"),
    ]
    hits = await locate(directory.url, "hello3.txt", fanout=2)
    assert [h.peer_id for h in hits] == ["peer3", "peer4"]
    assert directory.state.requests[-1][2] == {
        "query": "hello3.txt",
        "fanout": "2",
        "max_results": "16",
    }


async def test_locate_without_hits_names_the_entry_peer(directory: Any, hit: HitFactory) -> None:
    directory.state.hits = [hit("hello3.txt.bak", "peer2", "127.0.0.1:50052")]
    directory.state.failed = [FailedPeer(peer_id="peer4", url="http://x:1", error="timeout")]
    with pytest.raises(FileNotLocated) as caught:
        await locate(directory.url, "hello3.txt")
    assert str(caught.value) == (
        f"no peer in reach has 'hello3.txt' (searched via {directory.url}; "
        "1 peer(s) did not answer)"
    )


def test_choose_owner(hit: HitFactory) -> None:
    hits = [
        hit("a", "peer2", ""),
        hit("a", "peer3", "127.0.0.1:50053"),
        hit("a", "peer4", "127.0.0.1:50054"),
    ]
    assert choose_owner(hits).peer_id == "peer3"
    assert choose_owner(hits, "peer4").peer_id == "peer4"
    with pytest.raises(FileNotLocated, match=r"owners: peer2, peer3, peer4"):
        choose_owner(hits, "peer9")
    with pytest.raises(ClientError, match="advertises no gRPC address"):
        choose_owner(hits, "peer2")
    with pytest.raises(ClientError, match="no owner of 'a' advertises"):
        choose_owner(hits[:1])


# --------------------------------------------------------------------------- names and paths


def at(path: str, peer_id: str, sha256: str | None, grpc_address: str = "h:1") -> SearchHit:
    name = path.rpartition("/")[2]
    return make_hit(name, peer_id, grpc_address).model_copy(update={"path": path, "sha256": sha256})


def test_locate_query_is_the_longest_piece_a_search_may_hold() -> None:
    assert locate_query("plain name.txt") == "plain name.txt"
    assert locate_query("report\t2024-final.txt") == "2024-final.txt"
    assert locate_query("a\nb") == "a"
    assert locate_query("\x1b[31mred") == "[31mred"
    assert locate_query(" \t x") == " x"  # white space alone is no query
    with pytest.raises(ClientError, match="nothing but control characters"):
        locate_query("\t \n")


async def test_locate_finds_a_name_with_a_tab_by_a_piece_of_it(
    directory: Any, hit: HitFactory
) -> None:
    directory.state.hits = [hit("a\tb.txt", "peer3", "h:1"), hit("b.txt", "peer3", "h:1")]
    hits = await locate(directory.url, "a\tb.txt")
    assert [h.name for h in hits] == ["a\tb.txt"]
    assert directory.state.requests[-1][2]["query"] == "b.txt"


def test_pick_version_of_one_path_takes_most_owners_as_before() -> None:
    hits = [at("d/f", "p1", "aa"), at("d/f", "p2", "bb"), at("d/f", "p3", "bb")]
    assert pick_version(hits) == ("bb", [hits[1], hits[2]])
    assert pick_version(hits, "AA") == ("aa", [hits[0]])


def test_pick_version_refuses_a_name_in_folders_that_disagree() -> None:
    hits = [at("a/dup.txt", "p1", "aa"), at("b/dup.txt", "p1", "bb"), at("a/dup.txt", "p2", "aa")]
    with pytest.raises(AmbiguousName) as caught:
        pick_version(hits)
    assert str(caught.value) == (
        "'dup.txt' is at 2 paths that may hold different files: 'a/dup.txt' (p1, p2), "
        "'b/dup.txt' (p1); choose one with --path PATH"
    )
    assert caught.value.paths == [("p1", "a/dup.txt"), ("p1", "b/dup.txt"), ("p2", "a/dup.txt")]
    assert pick_version(hits, path="b/dup.txt") == ("bb", [hits[1]])
    assert pick_version(hits, path="a/dup.txt") == ("aa", [hits[0], hits[2]])
    assert pick_version(hits, "bb") == ("bb", [hits[1]])  # a digest names the content
    with pytest.raises(
        ClientError, match=re.escape("at 'a/dup.txt' holds the version with sha256 bb")
    ):
        pick_version(hits, "bb", "a/dup.txt")
    with pytest.raises(FileNotLocated, match=re.escape("it is at 'a/dup.txt', 'b/dup.txt'")):
        pick_version(hits, path="c/dup.txt")


def test_pick_version_takes_every_owner_of_the_bytes_at_its_own_path() -> None:
    hits = [
        at("x/same.bin", "p1", "aa"),
        at("y/same.bin", "p2", "aa"),
        at("x/same.bin", "p2", "aa"),
    ]
    assert pick_version(hits) == ("aa", [hits[0], hits[1]])
    # p2 holds it twice: the copy at the path asked for is the one asked for.
    assert pick_version(hits, path="x/same.bin") == ("aa", [hits[0], hits[2]])


def test_an_unhashed_file_in_another_folder_may_differ() -> None:
    hits = [at("a/dup.txt", "p1", "aa"), at("b/dup.txt", "p1", None)]
    with pytest.raises(AmbiguousName):
        pick_version(hits)
    assert pick_version(hits, path="a/dup.txt") == ("aa", [hits[0]])
    with pytest.raises(
        ClientError, match=re.escape("at 'b/dup.txt' is on p1, but no owner has hashed")
    ):
        pick_version(hits, path="b/dup.txt")


def test_choose_owner_by_path_and_its_ambiguity() -> None:
    hits = [at("a/dup.txt", "p1", "aa"), at("b/dup.txt", "p1", "bb"), at("c/dup.txt", "p2", None)]
    with pytest.raises(AmbiguousName, match=re.escape("'a/dup.txt' (p1), 'b/dup.txt' (p1)")):
        choose_owner(hits)
    assert choose_owner(hits, path="b/dup.txt") is hits[1]
    assert choose_owner(hits, "p2") is hits[2]  # one path at p2: nothing to choose
    with pytest.raises(FileNotLocated, match=re.escape("does not hold 'dup.txt' at 'b/dup.txt'")):
        choose_owner(hits, "p2", "b/dup.txt")
    same = [at("a/x", "p1", "aa"), at("b/x", "p1", "aa")]
    assert choose_owner(same) is same[0]  # the same bytes twice


async def test_download_and_fetch_range_send_the_path(transfer: Any) -> None:
    transfer.servicer.shared = {"a/dup.txt": b"first", "b/dup.txt": b"second"}
    got: list[bytes] = []
    async with TransferClient(transfer.address) as client:
        result = await client.download("dup.txt", path="b/dup.txt")
        await client.fetch_range("dup.txt", 1, 4, lambda _, d: got.append(d), path="b/dup.txt")
    assert (result.bytes, result.path) == (6, "b/dup.txt")
    assert got == [b"econ"]
    assert [r.path for r in transfer.servicer.requests] == ["b/dup.txt", "b/dup.txt"]
    result = await download_from(transfer.address, "dup.txt", path="a/dup.txt")
    assert (result.bytes, result.path) == (5, "a/dup.txt")


async def test_resolve_transfer_address(directory: Any) -> None:
    directory.advertise("10.0.0.5:50055")
    assert await resolve_transfer_address("127.0.0.1:50051") == "127.0.0.1:50051"
    assert await resolve_transfer_address(directory.url) == "10.0.0.5:50055"
    with pytest.raises(ClientError, match="invalid gRPC address"):
        await resolve_transfer_address("no-port")


@pytest.mark.parametrize("address", ["[::1]:50051", "peer-3.local:1", "127.0.0.1:65535"])
def test_valid_grpc_addresses(address: str) -> None:
    assert validate_grpc_address(address) == address


@pytest.mark.parametrize("address", ["", "host", "host:0", "host:70000", ":5", "http://h:1"])
def test_invalid_grpc_addresses(address: str) -> None:
    with pytest.raises(ClientError, match="invalid gRPC address"):
        validate_grpc_address(address)


# --------------------------------------------------------------------------- gRPC


async def test_download_counts_bytes_and_chunks(transfer: Any) -> None:
    progress: list[int] = []
    async with TransferClient(transfer.address) as client:
        result = await client.download("big.bin", chunk_size=3000, on_chunk=progress.append)
    assert (result.name, result.bytes, result.chunks) == ("big.bin", 10_000, 4)
    assert result.address == transfer.address
    assert progress == [3000, 3000, 3000, 1000]
    assert result.seconds > 0
    assert transfer.servicer.requests[-1].chunk_size == 3000


async def test_download_with_offset_and_length(transfer: Any) -> None:
    async with TransferClient(transfer.address) as client:
        result = await client.download("big.bin", offset=9000, length=500)
    assert (result.bytes, result.chunks, result.offset) == (500, 1, 9000)


async def test_download_of_the_largest_chunk_fits_the_message_limit(transfer: Any) -> None:
    transfer.servicer.files["huge.bin"] = MAX_CHUNK_SIZE
    async with TransferClient(transfer.address) as client:
        result = await client.download("huge.bin", chunk_size=MAX_CHUNK_SIZE)
    assert (result.bytes, result.chunks) == (MAX_CHUNK_SIZE, 1)


async def test_download_not_found(transfer: Any) -> None:
    async with TransferClient(transfer.address) as client:
        with pytest.raises(PeerRefused) as caught:
            await client.download("nope.txt")
    assert str(caught.value) == "NOT_FOUND: no file named 'nope.txt'"


async def test_download_invalid_argument(transfer: Any) -> None:
    async with TransferClient(transfer.address) as client:
        with pytest.raises(PeerRefused, match=r"^INVALID_ARGUMENT: name must not be a path$"):
            await client.download("a/b")


async def test_download_from_a_closed_port_is_unreachable(dead_port: int) -> None:
    address = f"127.0.0.1:{dead_port}"
    async with TransferClient(address) as client:
        with pytest.raises(PeerUnreachable) as caught:
            await client.download("hello3.txt")
    assert str(caught.value) == f"cannot reach {address}: connection refused"


async def test_download_checks_chunk_offsets(transfer: Any) -> None:
    transfer.servicer.bad_offsets = True
    async with TransferClient(transfer.address) as client:
        with pytest.raises(PeerRefused, match="chunk at offset 4097, expected 4096"):
            await client.download("big.bin")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"chunk_size": -1}, "chunk size"),
        ({"chunk_size": MAX_CHUNK_SIZE + 1}, "chunk size"),
        ({"offset": -1}, "negative"),
    ],
)
async def test_download_rejects_bad_arguments(
    transfer: Any, kwargs: dict[str, Any], match: str
) -> None:
    async with TransferClient(transfer.address) as client:
        with pytest.raises(ClientError, match=match):
            await client.download("big.bin", **kwargs)
    assert transfer.servicer.requests == []


async def test_upload_is_verified(transfer: Any) -> None:
    progress: list[int] = []
    async with TransferClient(transfer.address) as client:
        result = await client.upload(2500, chunk_size=1000, name="label", on_chunk=progress.append)
    pattern = bytes(range(256)) * 4
    expected = zlib.crc32(pattern[:500], zlib.crc32(pattern[:1000] * 2))
    assert result.checksum == f"crc32:{expected:08x}"
    assert result.verified is True
    assert (result.bytes_sent, result.chunks_sent) == (2500, 3)
    assert progress == [1000, 1000, 500]
    assert result.receipt.name == "label"
    assert result.receipt.bytes_received == 2500
    seen = transfer.servicer.uploads[-1]
    assert (seen.name, seen.bytes, seen.chunks, seen.crc) == ("label", 2500, 3, expected)
    assert seen.offsets_ok
    # One message is reused for every full chunk: the label must not stick to it.
    assert seen.names == ("label", "", "")


async def test_reused_upload_message_keeps_offsets_and_labels_over_many_chunks(
    transfer: Any,
) -> None:
    async with TransferClient(transfer.address) as client:
        first = await client.upload(64 * 1000 + 7, chunk_size=1000, name="one")
        second = await client.upload(3000, chunk_size=1000, name="two")
    assert first.verified and second.verified
    one, two = transfer.servicer.uploads[-2:]
    assert one.offsets_ok and one.chunks == 65 and one.names == ("one",) + ("",) * 64
    assert two.offsets_ok and two.names == ("two", "", "")


async def test_upload_of_zero_bytes_still_sends_the_label(transfer: Any) -> None:
    async with TransferClient(transfer.address) as client:
        result = await client.upload(0, name="empty")
    assert result.verified
    assert (result.bytes_sent, result.chunks_sent, result.checksum) == (0, 1, "crc32:00000000")
    assert transfer.servicer.uploads[-1].name == "empty"


async def test_upload_with_a_wrong_server_checksum_is_not_verified(transfer: Any) -> None:
    transfer.servicer.corrupt_checksum = True
    async with TransferClient(transfer.address) as client:
        result = await client.upload(5000, chunk_size=1024)
    assert result.verified is False
    assert result.receipt.checksum != result.checksum


async def test_upload_over_the_cap_is_refused(transfer: Any) -> None:
    transfer.servicer.upload_cap = 1000
    async with TransferClient(transfer.address) as client:
        with pytest.raises(PeerRefused, match=r"^RESOURCE_EXHAUSTED: upload exceeds 1000 bytes$"):
            await client.upload(5000, chunk_size=1024)


async def test_upload_to_a_closed_port_is_unreachable(dead_port: int) -> None:
    async with TransferClient(f"127.0.0.1:{dead_port}") as client:
        with pytest.raises(PeerUnreachable, match="connection refused"):
            await client.upload(10, chunk_size=5)


@pytest.mark.parametrize(("size", "chunk_size"), [(-1, 10), (10, 0), (10, MAX_CHUNK_SIZE + 1)])
async def test_upload_rejects_bad_sizes(transfer: Any, size: int, chunk_size: int) -> None:
    async with TransferClient(transfer.address) as client:
        with pytest.raises(ClientError):
            await client.upload(size, chunk_size=chunk_size)
    assert transfer.servicer.uploads == []


def test_transfer_client_validates_the_address() -> None:
    with pytest.raises(ClientError, match="invalid gRPC address 'http://x:1'"):
        TransferClient("http://x:1")


async def test_upload_hints_at_the_message_limit(transfer_default_limits: Any) -> None:
    async with TransferClient(transfer_default_limits.address) as client:
        with pytest.raises(PeerRefused, match="may exceed the peer's gRPC message limit"):
            await client.upload(MAX_CHUNK_SIZE, chunk_size=MAX_CHUNK_SIZE)
        result = await client.upload(MAX_CHUNK_SIZE, chunk_size=MAX_CHUNK_SIZE // 2)
    assert result.verified


# --------------------------------------------------------------------------- TLS


async def test_tls_is_per_client_not_per_process(https_directory: Directory, pki: Pki) -> None:
    async with PeerClient(https_directory.url, tls=pki.ca_only) as trusted:
        assert (await trusted.health()).peer_id == "peer1"
    async with PeerClient(https_directory.url) as default:  # the system's CAs
        with pytest.raises(PeerUnreachable):
            await default.health()
    async with PeerClient(https_directory.url, tls=pki.ca_only) as again:
        assert (await again.health()).peer_id == "peer1"


async def test_transfer_client_presents_its_certificate(mtls_transfer: Transfer, pki: Pki) -> None:
    async with TransferClient(mtls_transfer.address, tls=pki.client) as client:
        result = await client.download("hello3.txt")
    assert result.bytes == 6
    async with TransferClient(mtls_transfer.address, tls=pki.ca_only) as anonymous:
        with pytest.raises(ClientError):
            await anonymous.download("hello3.txt")
    async with TransferClient(mtls_transfer.address, timeout=5) as plain:
        with pytest.raises(PeerUnreachable):
            await plain.download("hello3.txt")


async def test_workflows_hand_tls_to_every_client(
    https_directory: Directory, mtls_transfer: Transfer, pki: Pki
) -> None:
    directory = https_directory
    directory.advertise(mtls_transfer.address)
    directory.state.hits = [make_hit("hello3.txt", "peer3", mtls_transfer.address)]
    hits = await locate(directory.url, "hello3.txt", tls=pki.client)
    assert await resolve_transfer_address(directory.url, tls=pki.client) == mtls_transfer.address
    downloaded = await download_from(hits[0].grpc_address, "hello3.txt", tls=pki.client)
    assert downloaded.bytes == 6
    uploaded = await upload_to(directory.url, 3000, chunk_size=1024, tls=pki.client)
    assert uploaded.verified
    assert mtls_transfer.servicer.uploads[-1].bytes == 3000


async def test_tls_and_a_shared_http_client_do_not_mix(directory: Any, pki: Pki) -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(ClientError, match="not both"):
            PeerClient(directory.url, tls=pki.ca_only, http=http)


async def test_search_sends_the_mode_the_budget_and_explain(directory: Any) -> None:
    async with PeerClient(directory.url) as peer:
        await peer.search("hello", mode="walk", max_results=3, budget=200, explain=True)
        await peer.search("hello")
    assert directory.state.requests[-2][2] == {
        "query": "hello",
        "mode": "walk",
        "max_results": "3",
        "budget": "200",
        "explain": "true",
    }
    assert directory.state.requests[-1][2] == {"query": "hello"}  # the peer's defaults


def test_a_bad_search_parameter_is_a_client_error() -> None:
    from peerfind.client import search_request

    with pytest.raises(ClientError, match=r"^invalid search: budget"):
        search_request("x", budget=-1)
