"""Three real peers on 127.0.0.x: location, search, transfer, concurrency, CLI."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import get

from peerfind.v1 import transfer_pb2, transfer_pb2_grpc
from peerfind_devnet import Devnet, free_port, wait_for

pytestmark = pytest.mark.integration
PEERS = ["peer1", "peer2", "peer3"]
CLI = [sys.executable, "-m", "peerfind_cli"]


def test_each_peer_lists_its_own_files(network: Devnet) -> None:
    for i, peer_id in enumerate(PEERS, start=1):
        spec = network[peer_id].spec
        body = get(f"{spec.url}/files")
        names = {f["name"] for f in body["files"]}
        assert f"hello{i}.txt" in names
        hello = next(f for f in body["files"] if f["name"] == f"hello{i}.txt")
        assert hello["size"] == (spec.shared_dir / f"hello{i}.txt").stat().st_size
        assert hello["peer_id"] == peer_id
        assert hello["grpc_address"] == spec.grpc_address
        assert hello["rest_url"] == spec.url
        assert body["total"] == len(body["files"])


def test_health_is_ok_everywhere(network: Devnet) -> None:
    for peer_id in PEERS:
        body = get(f"{network[peer_id].spec.url}/health")
        assert body["status"] == "ok"
        assert body["peer"] == peer_id
        assert body["transfer"]["serving"] is True
        assert body["index"]["stale"] is False
        assert body["peers"] == 2


@pytest.mark.parametrize("entry", PEERS)
def test_search_from_any_peer_finds_every_peers_files_once(network: Devnet, entry: str) -> None:
    body = get(f"{network[entry].spec.url}/search", query=".txt", fanout=2)
    owners = {h["name"]: h["peer_id"] for h in body["hits"]}
    for i, peer_id in enumerate(PEERS, start=1):
        assert owners.get(f"hello{i}.txt") == peer_id
    keys = Counter((h["peer_id"], h["path"]) for h in body["hits"])
    assert max(keys.values()) == 1, f"duplicate hits in a cyclic topology: {keys}"
    assert body["partial"] is False
    assert sorted(body["peers_answered"]) == PEERS
    hello3 = next(h for h in body["hits"] if h["name"] == "hello3.txt")
    assert hello3["grpc_address"] == network["peer3"].spec.grpc_address


def test_search_is_case_insensitive_and_short_queries_work(network: Devnet) -> None:
    url = network["peer1"].spec.url
    upper = get(f"{url}/search", query="HELLO2")
    assert [h["name"] for h in upper["hits"]] == ["hello2.txt"]
    short = get(f"{url}/search", query="3.")
    assert {"hello3.txt", "list3.txt"} <= {h["name"] for h in short["hits"]}


def test_bad_search_input_is_a_json_4xx(network: Devnet) -> None:
    url = network["peer1"].spec.url
    for params in ({"query": ""}, {"query": "x" * 300}, {"query": "a", "fanout": 99}):
        response = httpx.get(f"{url}/search", params=params, trust_env=False)
        assert response.status_code == 422
        assert response.json()["error"] == "invalid_request"


def test_new_file_becomes_searchable(network: Devnet) -> None:
    spec = network["peer2"].spec
    (spec.shared_dir / "fresh-arrival.txt").write_text("new\n")
    entry = network["peer1"].spec.url

    def found() -> bool:
        hits = get(f"{entry}/search", query="fresh-arrival")["hits"]
        return [(h["peer_id"], h["size"]) for h in hits] == [("peer2", 4)]

    wait_for(found, 10, what="the new file to be found through peer1")
    (spec.shared_dir / "fresh-arrival.txt").unlink()
    wait_for(
        lambda: not get(f"{entry}/search", query="fresh-arrival")["hits"],
        10,
        what="the deleted file to disappear",
    )


async def _download(address: str, name: str, **kw: int) -> tuple[int, int]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = transfer_pb2_grpc.FileTransferStub(channel)
        total = chunks = 0
        async for chunk in stub.DummyDownload(transfer_pb2.FileRequest(name=name, **kw)):
            assert chunk.offset == total
            total += len(chunk.data)
            chunks += 1
        return total, chunks


def test_download_streams_exactly_the_indexed_size(network: Devnet) -> None:
    spec = network["peer3"].spec
    video = spec.shared_dir / "media" / "video3.mp4"
    total, chunks = asyncio.run(_download(spec.grpc_address, "video3.mp4"))
    assert total == video.stat().st_size
    assert chunks == -(-total // (1024 * 1024))
    total, chunks = asyncio.run(_download(spec.grpc_address, "hello3.txt", chunk_size=4096))
    assert (total, chunks) == ((spec.shared_dir / "hello3.txt").stat().st_size, 1)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("missing.txt", grpc.StatusCode.NOT_FOUND),
        ("hello1.txt", grpc.StatusCode.NOT_FOUND),  # it lives on peer1, not peer3
        ("../etc/passwd", grpc.StatusCode.INVALID_ARGUMENT),
        ("media/video3.mp4", grpc.StatusCode.INVALID_ARGUMENT),
        ("a\x00b", grpc.StatusCode.INVALID_ARGUMENT),
        ("", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_download_errors_map_to_grpc_codes(
    network: Devnet, name: str, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        asyncio.run(_download(network["peer3"].spec.grpc_address, name))
    assert info.value.code() == code
    # the service is still up after bad input
    assert get(f"{network['peer3'].spec.url}/health")["transfer"]["serving"] is True


def test_upload_counts_and_checksums(network: Devnet) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 7)

    async def upload() -> transfer_pb2.UploadStatus:
        async with grpc.aio.insecure_channel(network["peer2"].spec.grpc_address) as channel:
            stub = transfer_pb2_grpc.FileTransferStub(channel)

            async def chunks():  # type: ignore[no-untyped-def]
                for off in range(0, len(payload), 1024 * 1024):
                    yield transfer_pb2.FileChunk(
                        data=payload[off : off + 1024 * 1024],
                        offset=off,
                        name="it" if off == 0 else "",
                    )

            return await stub.DummyUpload(chunks())

    status = asyncio.run(upload())
    assert status.ok
    assert status.bytes_received == len(payload)
    assert status.chunks == 4
    assert status.checksum == f"crc32:{zlib.crc32(payload):08x}"


def test_transfer_health_and_reflection(network: Devnet) -> None:
    async def check() -> int:
        async with grpc.aio.insecure_channel(network["peer1"].spec.grpc_address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            return int(reply.status)

    assert asyncio.run(check()) == health_pb2.HealthCheckResponse.SERVING
    grpcurl = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    if not Path(grpcurl).exists():
        pytest.skip("grpcurl is not installed")
    out = subprocess.run(
        [grpcurl, "-plaintext", network["peer1"].spec.grpc_address, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "peerfind.v1.FileTransfer" in out
    assert "grpc.health.v1.Health" in out


def test_twenty_concurrent_searches_and_downloads(network: Devnet) -> None:
    entry = network["peer1"].spec.url
    owner = network["peer3"].spec
    # Every download comes from 127.0.0.1: one client, whose share of the owner's
    # transfer slots (max_streams_per_client) the network fixture raises to 20.
    size = (owner.shared_dir / "media" / "video3.mp4").stat().st_size

    async def search(client: httpx.AsyncClient) -> int:
        params = {"query": "hello", "fanout": 2, "mode": "flood"}
        response = await client.get(f"{entry}/search", params=params)
        response.raise_for_status()
        return len({h["peer_id"] for h in response.json()["hits"]})

    async def run() -> tuple[list[int], list[tuple[int, int]]]:
        async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
            searches = [search(client) for _ in range(20)]
            downloads = [_download(owner.grpc_address, "video3.mp4") for _ in range(20)]
            results = await asyncio.gather(*searches, *downloads)
        return list(results[:20]), list(results[20:])  # type: ignore[arg-type]

    owners, downloads = asyncio.run(run())
    assert owners == [3] * 20
    assert [d[0] for d in downloads] == [size] * 20


def test_cli_search_and_download_through_another_peer(network: Devnet) -> None:
    entry = network["peer1"].spec.url
    env = {**os.environ, "PEERFIND_PEER": entry}
    search = subprocess.run(
        [*CLI, "search", "hello", "--json"], capture_output=True, text=True, timeout=60, env=env
    )
    assert search.returncode == 0, search.stderr
    body = json.loads(search.stdout)
    assert {h["peer_id"] for h in body["hits"]} == set(PEERS)
    download = subprocess.run(
        [*CLI, "download", "hello3.txt", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert download.returncode == 0, download.stderr
    summary = json.loads(download.stdout)
    assert summary["bytes"] == (network["peer3"].spec.shared_dir / "hello3.txt").stat().st_size
    assert network["peer3"].spec.grpc_address in json.dumps(summary)
    missing = subprocess.run(
        [*CLI, "download", "no-such-file.txt"], capture_output=True, text=True, timeout=60, env=env
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("peerfind:")
    assert len(missing.stderr.strip().splitlines()) == 1
    assert "Traceback" not in missing.stderr


def test_peers_lists_everyone_alive(network: Devnet) -> None:
    for peer_id in PEERS:
        body = get(f"{network[peer_id].spec.url}/peers")
        states = {p["peer_id"]: p["state"] for p in body["peers"]}
        assert states == {p: "alive" for p in PEERS if p != peer_id}
        for p in body["peers"]:
            assert time.time() - p["last_seen"] < 30


@pytest.mark.parametrize("service", ["directory", "transfer", "indexer"])
def test_container_healthchecks_pass_on_a_live_peer_and_fail_one_line_otherwise(
    network: Devnet, service: str
) -> None:
    """`peerfind-<service> --check` is each image's HEALTHCHECK: 0 on a live peer; 1 with
    one line (no traceback) when the service is not there."""
    peer = network["peer1"]
    command = [str(Path(sys.executable).parent / f"peerfind-{service}"), "--check"]
    env = {**os.environ, "PEER_CONFIG": str(peer.config_path)}
    ok = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    # Nothing listens on these ports / no index in this state dir.
    gone = {
        "PEERFIND_REST_PORT": str(free_port(peer.spec.host)),
        "PEERFIND_GRPC_PORT": str(free_port(peer.spec.host)),
        "PEERFIND_STATE_DIR": str(peer.config_path.parent / "no-such-state"),
    }
    bad = subprocess.run(command, env=env | gone, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert bad.stderr.startswith(f"peerfind-{service}: ")
