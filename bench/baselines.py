"""Baseline transfer servers, each run as its own process by `bench.transfer`.

    python -m bench.baselines grpc --host 127.0.0.12 --port 50000
    python -m bench.baselines raw  --host 127.0.0.13 --port 50001

`grpc` is the issue's baseline (a): a bare `grpc.aio` server of the same
`peerfind.v1.FileTransfer` service that yields one preallocated message per chunk
(DummyDownload streams `request.length` bytes; DummyUpload only counts). It has no
index, no metrics, no limits: only the message-size options that 4 MiB chunks need.

`raw` is baseline (b): blocking Python sockets, 1 MiB `sendall` of one prebuilt
buffer and `recv_into` one preallocated buffer, the practical limit for Python
here. Protocol: the client sends `op` (b"D" or b"U") and the byte count as 8
bytes big-endian; for D the server sends that many bytes, for U it receives them
and answers the count back (8 bytes) once it has them all.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import struct
from collections.abc import AsyncIterator

import grpc

from peerfind.v1 import transfer_pb2, transfer_pb2_grpc

__all__ = ["RAW_BLOCK", "BareTransfer", "recv_exactly", "serve_grpc", "serve_raw"]

RAW_BLOCK = 1024 * 1024
_HEADER = struct.Struct("!cQ")
_MAX_MESSAGE = 4 * 1024 * 1024 + 64 * 1024
DownloadContext = grpc.aio.ServicerContext[transfer_pb2.FileRequest, transfer_pb2.FileChunk]
UploadContext = grpc.aio.ServicerContext[transfer_pb2.FileChunk, transfer_pb2.UploadStatus]


class BareTransfer(transfer_pb2_grpc.FileTransferServicer):  # type: ignore[misc]
    """The least a grpc.aio servicer of FileTransfer can do."""

    async def DummyDownload(
        self, request: transfer_pb2.FileRequest, context: DownloadContext
    ) -> AsyncIterator[transfer_pb2.FileChunk]:
        size, step = request.length, request.chunk_size
        message = transfer_pb2.FileChunk(data=bytes(min(step, size)))
        pos = 0
        # Offsets are set so that a checking client (peerfind's) accepts the stream;
        # grpc.aio serializes a yielded message before it asks for the next one.
        while size - pos >= step:
            message.offset = pos
            yield message
            pos += step
        if pos < size:
            yield transfer_pb2.FileChunk(data=bytes(size - pos), offset=pos)

    async def DummyUpload(
        self,
        request_iterator: AsyncIterator[transfer_pb2.FileChunk],
        context: UploadContext,
    ) -> transfer_pb2.UploadStatus:
        received = chunks = 0
        async for chunk in request_iterator:
            received += len(chunk.data)
            chunks += 1
        return transfer_pb2.UploadStatus(ok=True, bytes_received=received, chunks=chunks)


async def serve_grpc(host: str, port: int) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
        ]
    )
    transfer_pb2_grpc.add_FileTransferServicer_to_server(BareTransfer(), server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    buf = bytearray(count)
    view = memoryview(buf)
    got = 0
    while got < count:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("peer closed the connection")
        got += n
    return bytes(buf)


def _serve_raw_connection(conn: socket.socket, block: bytes, buf: memoryview) -> None:
    op, size = _HEADER.unpack(recv_exactly(conn, _HEADER.size))
    if op == b"D":
        full, rest = divmod(size, len(block))
        send = conn.sendall
        for _ in range(full):
            send(block)
        if rest:
            send(block[:rest])
    elif op == b"U":
        got = 0
        recv_into = conn.recv_into
        while got < size:
            n = recv_into(buf, min(len(buf), size - got))
            if n == 0:
                raise ConnectionError("client closed mid-upload")
            got += n
        conn.sendall(struct.pack("!Q", got))


def serve_raw(host: str, port: int) -> None:
    block = bytes(RAW_BLOCK)
    buf = memoryview(bytearray(RAW_BLOCK))
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with socket.create_server((host, port)) as listener:
        while True:
            conn, _ = listener.accept()
            with conn:
                try:
                    _serve_raw_connection(conn, block, buf)
                except (ConnectionError, struct.error):
                    continue


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines")
    parser.add_argument("kind", choices=["grpc", "raw"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        if args.kind == "grpc":
            asyncio.run(serve_grpc(args.host, args.port))
        else:
            serve_raw(args.host, args.port)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
