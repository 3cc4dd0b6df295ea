"""What one client can hold on a real server: the stall deadline and the per-client share.

Without them, a client that opens streams and then neither reads nor sends holds every
slot for as long as it likes, and every other transfer gets RESOURCE_EXHAUSTED.

Two clients need two addresses, and on loopback every TCP client is 127.0.0.1 whatever
address it dials: the other client comes over a unix socket of the same server.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from peerfind.index import FileEntry
from peerfind.v1 import transfer_pb2, transfer_pb2_grpc
from transfer.server import server_options
from transfer.servicer import FileTransferServicer, add_to_server

from .conftest import CLIENT_OPTIONS, FILES, entries, make_settings, write_index

Waiter = Callable[..., Awaitable[None]]
# The stall deadline of these tests, and the longest a test waits for anything.
STALL_S = 0.5
WITHIN_S = 15.0
LOCAL = "ipv4:127.0.0.1:1"  # a context.peer() string of the TCP clients


@dataclass
class TwoWayServer:
    """One servicer served on 127.0.0.1 and on a unix socket (the 'other' client)."""

    servicer: FileTransferServicer
    shared: Path
    port: int
    sock: str
    channels: list[grpc.aio.Channel]

    def tcp(self) -> Any:
        """A stub on a new TCP connection (client 127.0.0.1)."""
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=CLIENT_OPTIONS)
        self.channels.append(channel)
        return transfer_pb2_grpc.FileTransferStub(channel)

    def other(self) -> Any:
        """A stub on a new unix-socket connection (another client)."""
        channel = grpc.aio.insecure_channel(self.sock, options=CLIENT_OPTIONS)
        self.channels.append(channel)
        return transfer_pb2_grpc.FileTransferStub(channel)


ServerFactory = Callable[..., Awaitable[TwoWayServer]]


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short folder for a unix socket (AF_UNIX paths: at most 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="pf-", dir="/tmp") as folder:
        yield Path(folder)


@pytest.fixture
async def two_way(tmp_path: Path, sock_dir: Path) -> AsyncIterator[ServerFactory]:
    started: list[tuple[grpc.aio.Server, TwoWayServer]] = []

    async def start(**overrides: Any) -> TwoWayServer:
        settings = make_settings(tmp_path, **overrides)
        sub = settings.shared_dir / "sub"
        sub.mkdir()
        with (sub / "big.bin").open("wb") as f:
            f.truncate(1024**3)  # sparse: far more than the flow-control windows hold
        st = (sub / "big.bin").stat()
        big = FileEntry("sub/big.bin", "big.bin", st.st_size, st.st_mtime, st.st_ino)
        write_index(settings, [*entries(FILES), big])
        server = grpc.aio.server(options=server_options(settings))
        servicer = FileTransferServicer(settings)
        add_to_server(servicer, server)  # as transfer.server registers it
        port = server.add_insecure_port("127.0.0.1:0")
        sock = f"unix:{sock_dir / 't.sock'}"
        server.add_insecure_port(sock)
        await server.start()
        running = TwoWayServer(servicer, settings.shared_dir, port, sock, [])
        started.append((server, running))
        return running

    yield start
    for server, running in started:
        for channel in running.channels:
            await channel.close(None)
        await server.stop(None)


def limited(limit: str) -> float:
    return REGISTRY.get_sample_value("peerfind_transfer_limited_total", {"limit": limit}) or 0.0


async def test_an_upload_that_stops_sending_is_ended_and_frees_its_slot(
    make_peer: Any, wait_for: Waiter
) -> None:
    peer = await make_peer(stream_stall_timeout_s=STALL_S, max_concurrent_streams=1)
    before = limited("stall")
    call = peer.stub.DummyUpload()  # no deadline of its own: only the server's stall one
    await call.write(transfer_pb2.FileChunk(data=bytes(1000), name="slow"))
    # Then nothing more: the server ends the stream with a status naming the setting.
    err = await asyncio.wait_for(_error(call), WITHIN_S)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    details = err.details() or ""
    assert "stream_stall_timeout_s" in details
    assert "after 1000 bytes" in details
    servicer = peer.running.servicer
    await wait_for(lambda: servicer.active_streams == 0, WITHIN_S, "the slot to be freed")
    assert limited("stall") == before + 1
    # The only slot is free again, for the same client too: the next upload goes through.
    status = await peer.stub.DummyUpload(_chunks([b"abc"]), timeout=WITHIN_S)
    assert status.bytes_received == 3


@pytest.mark.parametrize(
    ("method", "name"), [("DummyDownload", "huge.iso"), ("Download", "big.bin")]
)
async def test_a_download_nobody_reads_gives_its_slot_back(
    two_way: ServerFactory, wait_for: Waiter, method: str, name: str
) -> None:
    server = await two_way(
        stream_stall_timeout_s=STALL_S, max_concurrent_streams=2, max_streams_per_client=2
    )
    servicer = server.servicer
    before = limited("stall")
    stalled = [getattr(server.tcp(), method)(transfer_pb2.FileRequest(name=name)) for _ in "ab"]
    for call in stalled:
        await call.read()  # then stop reading: flow control blocks the server's writes
    assert servicer.active_streams == 2  # every slot taken
    await wait_for(lambda: servicer.active_streams == 0, WITHIN_S, "the stall to free them")
    assert limited("stall") == before + 2
    # Both are out of the total, so another client gets every slot...
    other = server.other()
    assert await _fetch_size(other, "small.txt") == 10
    # ...but still in their own client's share (grpc.aio cannot reset a stream from the
    # server side: each ends when its blocked write returns), so 127.0.0.1 gets no more.
    assert (servicer.stalled_streams, servicer.streams_of(LOCAL)) == (2, 2)
    err = await _error(
        server.tcp().DummyDownload(transfer_pb2.FileRequest(name="small.txt")).read()
    )
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit 2 per client" in (err.details() or "")
    # One stalled client reads again: what was in flight, then a status that says why.
    err = await _error(_read_to_the_end(stalled[0]))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "stream_stall_timeout_s" in (err.details() or "")
    # The other one goes away: its share comes back too.
    stalled[1].cancel()
    await wait_for(lambda: servicer.streams_of(LOCAL) == 0, WITHIN_S, "the share back")
    assert servicer.stalled_streams == 0
    assert await _fetch_size(server.tcp(), "small.txt") == 10


async def test_a_client_that_reads_slowly_but_steadily_is_not_cut(make_peer: Any) -> None:
    # The deadline is on silence, not on the whole transfer: reading a chunk well within
    # the stall deadline keeps the stream alive for several times the deadline.
    peer = await make_peer(stream_stall_timeout_s=STALL_S * 4)
    request = transfer_pb2.FileRequest(name="huge.iso", length=12 * 64 * 1024, chunk_size=64 * 1024)
    call = peer.stub.DummyDownload(request)
    got = 0
    async for chunk in call:
        got += len(chunk.data)
        await asyncio.sleep(STALL_S / 2)  # paces the reader; no result depends on it
    assert got == 12 * 64 * 1024
    assert await call.code() == grpc.StatusCode.OK


async def test_one_client_cannot_take_every_slot(two_way: ServerFactory) -> None:
    server = await two_way(
        max_concurrent_streams=4, max_streams_per_client=2, stream_stall_timeout_s=60
    )
    servicer = server.servicer
    before = limited("client_slots")
    held = []
    for _ in range(2):
        call = server.tcp().DummyDownload(transfer_pb2.FileRequest(name="huge.iso"))
        await call.read()  # running, then stalled by flow control
        held.append(call)
    assert servicer.active_streams == 2
    third = server.tcp()
    err = await _error(third.DummyDownload(transfer_pb2.FileRequest(name="small.txt")).read())
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit 2 per client" in (err.details() or "")
    err = await _error(third.DummyUpload(_chunks([b"x"])))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert limited("client_slots") == before + 2
    # Half the slots are still free, and another client gets them.
    other = server.other()
    assert await _fetch_size(other, "small.txt") == 10
    status = await other.DummyUpload(_chunks([b"xyz"]), timeout=WITHIN_S)
    assert status.bytes_received == 3
    assert servicer.active_streams == 2  # the refusals took nothing
    for call in held:
        call.cancel()


# --- helpers -------------------------------------------------------------------------


async def _error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(call, WITHIN_S)
    return info.value


async def _read_to_the_end(call: Any) -> None:
    while await call.read() is not grpc.aio.EOF:
        pass


async def _chunks(payloads: list[bytes]) -> AsyncIterator[transfer_pb2.FileChunk]:
    for data in payloads:
        yield transfer_pb2.FileChunk(data=data)


async def _fetch_size(stub: Any, name: str) -> int:
    request = transfer_pb2.FileRequest(name=name)
    return sum([len(c.data) async for c in stub.DummyDownload(request, timeout=WITHIN_S)])
