"""`TransferClient`: the typed async client of one peer's FileTransfer gRPC service."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio

from peerfind.checksum import crc32
from peerfind.client._defaults import DEFAULT_STALL_TIMEOUT_S, GRPC_MAX_MESSAGE_BYTES
from peerfind.client._errors import rpc_error
from peerfind.client._results import (
    ChunkCallback,
    ChunkSink,
    DownloadResult,
    UploadReceipt,
    UploadResult,
)
from peerfind.config import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE
from peerfind.errors import ClientError, PeerRefused, PeerStalled
from peerfind.tls import TlsFiles, channel_credentials
from peerfind.v1 import transfer_pb2, transfer_pb2_grpc

__all__ = ["TransferClient", "validate_grpc_address"]

_HOST_PORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")
_GRPC_DEFAULT_MESSAGE_BYTES = 4 * 1024 * 1024  # what a server accepts unless configured
_CHUNK_OVERHEAD = 32  # FileChunk's other fields and framing, generously
_SIZE_LIMIT_CODES = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL)


def validate_grpc_address(address: str) -> str:
    """Return `address` if it is `host:port` (IPv6 as `[::1]:port`); else ClientError."""
    address = address.strip()
    match = _HOST_PORT.match(address)
    if match is None or not 0 < int(match.group(1)) < 65536:
        raise ClientError(f"invalid gRPC address {address!r}: expected HOST:PORT")
    return address


def _nothing() -> None:
    pass


class TransferClient:
    """Async client of one peer's FileTransfer gRPC service.

    Create it inside a running event loop; `async with` closes the channel. With
    `tls=` the channel is TLS, verified against `tls.ca_file` and presenting
    `tls.cert_file` when given (mutual TLS); without it, plain text. `timeout` is each
    call's whole deadline (None: none); `stall_timeout` fails a download that receives
    nothing for that long (PeerStalled; None: wait for ever).
    """

    def __init__(
        self,
        address: str,
        *,
        tls: TlsFiles | None = None,
        timeout: float | None = None,
        stall_timeout: float | None = DEFAULT_STALL_TIMEOUT_S,
    ) -> None:
        self.address = validate_grpc_address(address)
        self.timeout = timeout
        if stall_timeout is not None and not stall_timeout > 0:
            raise ClientError("the stall timeout must be positive")
        self.stall_timeout = stall_timeout
        options = [
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
        ]
        if tls is not None and tls.enabled:
            self._channel = grpc.aio.secure_channel(
                self.address, channel_credentials(tls), options=options
            )
        else:
            self._channel = grpc.aio.insecure_channel(self.address, options=options)
        self._stub = transfer_pb2_grpc.FileTransferStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel, cancelling any call still running."""
        await self._channel.close(None)

    async def download(
        self,
        name: str,
        *,
        path: str = "",
        chunk_size: int = 0,
        offset: int = 0,
        length: int = 0,
        on_chunk: ChunkCallback | None = None,
    ) -> DownloadResult:
        """Stream `name` from the owner (DummyDownload); nothing is written anywhere.

        `path` (the hit's, relative to the owner's shared folder) names the file exactly;
        without it the owner serves the first file named `name` by path. `chunk_size` 0
        lets the server choose; `length` 0 means up to the end.
        """
        if not 0 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ClientError(f"chunk size must be 0 (server default) to {MAX_CHUNK_SIZE} bytes")
        if offset < 0 or length < 0:
            raise ClientError("offset and length must not be negative")
        request = transfer_pb2.FileRequest(
            name=name, path=path, chunk_size=chunk_size, offset=offset, length=length
        )
        served = name
        received = chunks = 0
        started = time.perf_counter()
        call = self._stub.DummyDownload(request, timeout=self.timeout)
        try:
            async with self._stall_timer() as moved:
                async for chunk in call:
                    moved()
                    data: bytes = chunk.data
                    if chunk.offset != offset + received:
                        raise PeerRefused(
                            f"{self.address} sent a chunk at offset {chunk.offset}, "
                            f"expected {offset + received}"
                        )
                    if chunks == 0 and chunk.name:
                        served = str(chunk.name)
                    received += len(data)
                    chunks += 1
                    if on_chunk is not None:
                        on_chunk(len(data))
        except TimeoutError:
            raise self._stalled(received) from None
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, self.address) from None
        finally:
            call.cancel()
        elapsed = time.perf_counter() - started
        return DownloadResult(served, received, chunks, elapsed, self.address, offset, path)

    async def fetch_range(
        self,
        name: str,
        offset: int,
        length: int,
        sink: ChunkSink,
        *,
        path: str = "",
        sha256: str = "",
        chunk_size: int = 0,
    ) -> int:
        """Stream `length` real bytes of `name` from `offset` (Download) into `sink`.

        `sink(offset, data)` is called per chunk, in order; `path` names the file
        exactly (as in `download`); `sha256` pins the version (the owner refuses any
        other). Returns the bytes received; PeerRefused when the owner sent fewer than
        asked or out of order.
        """
        request = transfer_pb2.FileRequest(
            name=name,
            path=path,
            offset=offset,
            length=length,
            sha256=sha256,
            chunk_size=chunk_size,
        )
        pos = offset
        call = self._stub.Download(request, timeout=self.timeout)
        try:
            async with self._stall_timer() as moved:
                async for chunk in call:
                    moved()
                    if chunk.offset != pos:
                        raise PeerRefused(
                            f"{self.address} sent a chunk at offset {chunk.offset}, expected {pos}"
                        )
                    data: bytes = chunk.data
                    sink(pos, data)
                    pos += len(data)
        except TimeoutError:
            raise self._stalled(pos - offset) from None
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, self.address) from None
        finally:
            call.cancel()
        if pos != offset + length:
            raise PeerRefused(
                f"{self.address} sent {pos - offset} of the {length} bytes asked at {offset}"
            )
        return pos - offset

    @contextlib.asynccontextmanager
    async def _stall_timer(self) -> AsyncIterator[Callable[[], None]]:
        """Yields `moved()`, to call per chunk; TimeoutError when `stall_timeout` passes
        without one. One timer per stream, pushed back at every chunk."""
        stall = self.stall_timeout
        if stall is None:
            yield _nothing
            return
        clock = asyncio.get_running_loop().time
        async with asyncio.timeout(clock() + stall) as timer:

            def moved() -> None:
                timer.reschedule(clock() + stall)

            yield moved

    def _stalled(self, received: int) -> PeerStalled:
        return PeerStalled(
            f"{self.address} stopped sending: nothing for {self.stall_timeout:g} s "
            f"after {received} bytes"
        )

    async def upload(
        self,
        size: int,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        name: str = "",
        on_chunk: ChunkCallback | None = None,
    ) -> UploadResult:
        """Send `size` synthetic bytes (DummyUpload) and check the server's checksum.

        One preallocated buffer of `chunk_size` bytes is sent over and over; the
        first chunk carries `name` as the upload's label. A zero `size` sends one
        empty chunk, so the label still arrives.
        """
        if size < 0:
            raise ClientError("upload size must not be negative")
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ClientError(f"chunk size must be 1 to {MAX_CHUNK_SIZE} bytes")
        pattern = bytes(range(256))
        buffer = (pattern * (chunk_size // len(pattern) + 1))[:chunk_size]
        crc = sent = chunks = 0
        # One message for every full chunk, built once: grpc.aio serializes each
        # message before the stream asks for the next, so only `offset` (and the
        # label, after the first) changes in place; a new message per chunk copied the
        # whole chunk once more (docs/benchmarks.md, "DummyUpload: crc32 was the server's
        # largest cost").
        full = transfer_pb2.FileChunk(data=buffer, name=name)

        async def stream() -> AsyncIterator[Any]:
            nonlocal crc, sent, chunks
            while chunks == 0 or sent < size:
                count = min(chunk_size, size - sent)
                if count == chunk_size:
                    message, data = full, buffer
                else:  # the last, short chunk (or the one empty chunk of a 0-byte upload)
                    data = buffer[:count]
                    message = transfer_pb2.FileChunk(data=data, name=name if chunks == 0 else "")
                message.offset = sent
                yield message
                if chunks == 0:
                    full.name = ""
                crc = crc32(data, crc)
                sent += count
                chunks += 1
                if on_chunk is not None:
                    on_chunk(count)

        started = time.perf_counter()
        try:
            status = await self._stub.DummyUpload(stream(), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            error = rpc_error(exc, self.address)
            oversized = chunk_size + _CHUNK_OVERHEAD > _GRPC_DEFAULT_MESSAGE_BYTES
            if oversized and exc.code() in _SIZE_LIMIT_CODES:
                error = type(error)(
                    f"{error} (a {chunk_size}-byte chunk may exceed the peer's gRPC message "
                    "limit; try a smaller chunk size)"
                )
            raise error from None
        elapsed = time.perf_counter() - started
        receipt = UploadReceipt(
            ok=bool(status.ok),
            bytes_received=int(status.bytes_received),
            chunks=int(status.chunks),
            checksum=str(status.checksum),
            message=str(status.message),
            name=str(status.name),
        )
        return UploadResult(
            address=self.address,
            name=name,
            bytes_sent=sent,
            chunks_sent=chunks,
            seconds=elapsed,
            checksum=f"crc32:{crc:08x}",
            receipt=receipt,
        )
