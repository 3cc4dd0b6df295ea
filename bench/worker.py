"""The client side of the transfer benchmarks, in its own process.

    python -m bench.worker        # reads one JSON command per line, answers one per line

Started by `bench.core.Worker` with the same PERF_ENV as the servers, so the
client of a peer and the client of a baseline run with the same process
settings. Commands (every answer has `seconds` and `bytes`, or `error`):

    {"op": "download", "client": "peerfind"|"bare", "address": "h:p", "name": "big.bin",
     "size": N, "chunk_size": C, "streams": 1,
     "method": "DummyDownload"|"Download", "sha256": "<hex, pins Download's version>"}
    {"op": "upload", "client": "peerfind"|"bare", "address": "h:p", "size": N, "chunk_size": C}
    {"op": "raw_download"|"raw_upload", "host": "h", "port": P, "size": N}
    {"op": "hash", "root": "/dir", "names": ["a.bin", ...]}   # also answers `digests`

`client: "peerfind"` is the product's own `peerfind.client.TransferClient` (what
`peerfind download` / `upload` run); `bare` is the least a grpc.aio client can
do: one channel, iterate the stream, or send one preallocated message per chunk.
With `streams` > 1, that many downloads of `size` bytes each run at once over
separate clients and `seconds` is the wall time until the last one finished.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from bench.baselines import RAW_BLOCK, recv_exactly
from peerfind.client import GRPC_MAX_MESSAGE_BYTES, TransferClient
from peerfind.v1 import transfer_pb2, transfer_pb2_grpc

_OPTIONS = [
    ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
]


async def _bare_download(
    address: str, name: str, size: int, chunk_size: int, method: str = "DummyDownload", **pin: Any
) -> int:
    # A local subchannel pool: a connection of its own, as a separate client would have
    # (channels with the same target and options otherwise share one connection).
    options = [*_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = transfer_pb2_grpc.FileTransferStub(channel)
        request = transfer_pb2.FileRequest(name=name, chunk_size=chunk_size, length=size, **pin)
        call = stub.Download if method == "Download" else stub.DummyDownload
        received = 0
        async for chunk in call(request):
            received += len(chunk.data)
        return received


async def _peerfind_download(
    address: str, name: str, size: int, chunk_size: int, method: str = "DummyDownload", **pin: Any
) -> int:
    if method != "DummyDownload":
        raise ValueError("the peerfind client's download() is DummyDownload")
    async with TransferClient(address) as client:
        result = await client.download(name, chunk_size=chunk_size, length=size)
    return result.bytes


async def download(args: dict[str, Any]) -> dict[str, Any]:
    fetch = _peerfind_download if args["client"] == "peerfind" else _bare_download
    streams = int(args.get("streams", 1))
    method = str(args.get("method", "DummyDownload"))
    pin = {"sha256": args["sha256"]} if args.get("sha256") else {}
    started = time.perf_counter()
    counts = await asyncio.gather(
        *(
            fetch(
                args["address"],
                args.get("name", "x"),
                args["size"],
                args["chunk_size"],
                method,
                **pin,
            )
            for _ in range(streams)
        )
    )
    seconds = time.perf_counter() - started
    expected = args["size"] * streams
    if sum(counts) != expected:
        raise RuntimeError(f"received {sum(counts)} bytes, expected {expected}")
    return {"seconds": seconds, "bytes": sum(counts)}


async def _bare_upload(address: str, size: int, chunk_size: int, verify: bool) -> int:
    message = transfer_pb2.FileChunk(data=bytes(min(chunk_size, size)))
    full, rest = divmod(size, chunk_size)

    async def stream() -> AsyncIterator[transfer_pb2.FileChunk]:
        for _ in range(full):
            yield message
        if rest:
            yield transfer_pb2.FileChunk(data=bytes(rest))

    async with grpc.aio.insecure_channel(address, options=_OPTIONS) as channel:
        stub = transfer_pb2_grpc.FileTransferStub(channel)
        status = await stub.DummyUpload(stream())
    return int(status.bytes_received)


async def _peerfind_upload(address: str, size: int, chunk_size: int, verify: bool) -> int:
    async with TransferClient(address) as client:
        result = await client.upload(size, chunk_size=chunk_size, name="bench")
    if verify and not result.verified:
        raise RuntimeError(f"upload not verified: {result.receipt}")
    return result.receipt.bytes_received


async def upload(args: dict[str, Any]) -> dict[str, Any]:
    send = _peerfind_upload if args["client"] == "peerfind" else _bare_upload
    started = time.perf_counter()
    verify = bool(args.get("verify", True))
    received = await send(args["address"], args["size"], args["chunk_size"], verify)
    seconds = time.perf_counter() - started
    if received != args["size"]:
        raise RuntimeError(f"server received {received} bytes, expected {args['size']}")
    return {"seconds": seconds, "bytes": received}


def raw_download(args: dict[str, Any]) -> dict[str, Any]:
    size = args["size"]
    buf = memoryview(bytearray(RAW_BLOCK))
    with socket.create_connection((args["host"], args["port"])) as sock:
        started = time.perf_counter()
        sock.sendall(struct.pack("!cQ", b"D", size))
        got = 0
        recv_into = sock.recv_into
        while got < size:
            n = recv_into(buf)
            if n == 0:
                raise ConnectionError("server closed mid-download")
            got += n
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": got}


def raw_upload(args: dict[str, Any]) -> dict[str, Any]:
    size = args["size"]
    block = bytes(RAW_BLOCK)
    full, rest = divmod(size, RAW_BLOCK)
    with socket.create_connection((args["host"], args["port"])) as sock:
        started = time.perf_counter()
        sock.sendall(struct.pack("!cQ", b"U", size))
        send = sock.sendall
        for _ in range(full):
            send(block)
        if rest:
            send(block[:rest])
        (got,) = struct.unpack("!Q", recv_exactly(sock, 8))
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": got}


def hash_files(args: dict[str, Any]) -> dict[str, Any]:
    """The indexer's hasher (`indexer.hasher.Hasher`, no read budget) over `names`."""
    from indexer.hasher import Hasher
    from peerfind.index import FileEntry

    root = args["root"]
    entries = []
    for name in args["names"]:
        st = os.stat(os.path.join(root, name))
        entries.append(FileEntry(name, name, st.st_size, st.st_mtime, st.st_ino))
    hasher = Hasher(root, 0.0)
    started = time.perf_counter()
    digests = {}
    for entry in entries:
        done = hasher.hash_entry(entry)
        if done is None:
            raise RuntimeError(f"the hasher refused {entry.path}")
        digests[entry.path] = done.sha256
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": sum(e.size for e in entries), "digests": digests}


def main() -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "download": lambda a: loop.run_until_complete(download(a)),
        "upload": lambda a: loop.run_until_complete(upload(a)),
        "raw_download": raw_download,
        "raw_upload": raw_upload,
        "hash": hash_files,
        "ping": lambda a: {"seconds": 0.0, "bytes": 0},
    }
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            args = json.loads(line)
            try:
                answer = handlers[args["op"]](args)
            except Exception as exc:
                traceback.print_exc()
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        loop.close()


if __name__ == "__main__":
    main()
