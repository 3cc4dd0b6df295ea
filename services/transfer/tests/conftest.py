"""Fixtures: a peer with an index, a real grpc.aio server on 127.0.0.1:0, a client stub."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from peerfind.config import PeerSettings
from peerfind.index import FileEntry, IndexWriter
from peerfind.v1 import transfer_pb2, transfer_pb2_grpc
from peerfind_devnet import eventually
from transfer.server import MAX_MESSAGE_BYTES, TransferServer, start_server

MiB = 1024 * 1024

# name -> size; every test peer shares these unless it asks for others.
FILES = {
    "movie.mkv": 3 * MiB + 12_345,  # not a multiple of any chunk size
    "exact.bin": 2 * MiB,  # a multiple of the default chunk size
    "empty.txt": 0,
    "small.txt": 10,
    "huge.iso": 64 * 1024 * MiB,  # 64 GiB: only ever partly read (cancellation tests)
    "café ünïcode.pdf": 5000,
}

CLIENT_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # A connection of its own per channel, so per-connection HTTP/2 limits never
    # hide the servicer's own stream limit.
    ("grpc.use_local_subchannel_pool", 1),
]


def entries(files: dict[str, int]) -> list[FileEntry]:
    return [
        FileEntry(path=f"sub/{name}", name=name, size=size, mtime=0.0)
        for name, size in files.items()
    ]


def write_index(settings: PeerSettings, files: Iterable[FileEntry]) -> None:
    writer = IndexWriter(settings.index_path)
    try:
        writer.replace_all(files)
    finally:
        writer.close()


def make_settings(tmp_path: Path, **overrides: Any) -> PeerSettings:
    shared = tmp_path / "shared"
    shared.mkdir(exist_ok=True)
    return PeerSettings(peer_id="p1", shared_dir=shared, state_dir=tmp_path / "state", **overrides)


async def _wait_for(predicate: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    """Poll `predicate` until it holds; TimeoutError after `within` seconds."""
    await eventually(predicate, within, 0.01, what or repr(predicate))


@dataclass
class Peer:
    settings: PeerSettings
    running: TransferServer
    channel: grpc.aio.Channel
    stub: Any  # transfer_pb2_grpc.FileTransferStub

    def channel_to(self) -> grpc.aio.Channel:
        """A new channel (its own connection) to this peer; the caller closes it."""
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.running.port}", options=CLIENT_OPTIONS)

    async def download(self, name: str, **fields: int | str) -> list[transfer_pb2.FileChunk]:
        request = transfer_pb2.FileRequest(name=name, **fields)
        return [chunk async for chunk in self.stub.DummyDownload(request, timeout=30)]


PeerFactory = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def make_peer(tmp_path: Path) -> AsyncIterator[PeerFactory]:
    """Start peers: `await make_peer(files=..., index=True, **settings_overrides)`."""
    peers: list[Peer] = []

    async def make(
        files: dict[str, int] | None = None, *, index: bool = True, **overrides: Any
    ) -> Peer:
        home = tmp_path / f"peer{len(peers)}"
        home.mkdir()
        settings = make_settings(home, **overrides)
        if index:
            write_index(settings, entries(FILES if files is None else files))
        running = await start_server(settings, port=0)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=CLIENT_OPTIONS)
        peer = Peer(settings, running, channel, transfer_pb2_grpc.FileTransferStub(channel))
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        await peer.channel.close(None)
        await peer.running.stop(None)


@pytest.fixture
async def peer(make_peer: PeerFactory) -> Peer:
    """A peer sharing FILES with default settings."""
    return await make_peer()


@pytest.fixture
def files() -> dict[str, int]:
    """Name -> size of what every default test peer shares."""
    return dict(FILES)


@pytest.fixture
def wait_for() -> Callable[..., Awaitable[None]]:
    """`await wait_for(predicate, within=5.0, what="...")`: poll with a deadline."""
    return _wait_for


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., PeerSettings]:
    """Settings of a peer in its own folder, no server: `settings_for("name", **overrides)`."""

    def make(home: str, **overrides: Any) -> PeerSettings:
        folder = tmp_path / home
        folder.mkdir()
        return make_settings(folder, **overrides)

    return make


@pytest.fixture
def client_options() -> list[tuple[str, int]]:
    return list(CLIENT_OPTIONS)
