"""Memory per peer: the three processes of one peer idle, after 1 GiB of transfers, a minute later.

One real peer (indexer, transfer, directory, with PERF_ENV as everywhere) on
127.0.0.14, sharing a sparse 1 GiB file. Measured: the sum of the three processes'
RSS (what `top` and a container's memory use show; USS and PSS beside it in the
context), once idle, right after 1 GiB of transfers (one 1 GiB DummyDownload and
64 MiB of DummyUpload, 4 MiB chunks: the largest a client may ask for, the case that
keeps the most), and SETTLE_S later. The client is a plain grpc channel in this
process: its own memory is not counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import psutil  # type: ignore[import-untyped]

from bench.core import MIB, Context, Result
from peerfind.v1 import transfer_pb2, transfer_pb2_grpc
from peerfind_devnet import PeerProcesses, PeerSpec

__all__ = ["run"]

HOST = "127.0.0.14"
FILE_NAME = "big.bin"
GIB = 1024 * MIB
CHUNK = 4 * MIB
UPLOAD = 64 * MIB
SETTLE_S = 60.0
IDLE_AIM_MIB = 160.0
LIMITS_MIB = 256 + 512 + 256  # the containers' mem_limit (deploy/compose/services.yaml)


def _memory(peer: PeerProcesses) -> dict[str, Any]:
    per: dict[str, dict[str, float]] = {}
    for name, pid in peer.pids().items():
        info = psutil.Process(pid).memory_full_info()
        per[name] = {"rss": info.rss / MIB, "uss": info.uss / MIB, "pss": info.pss / MIB}
    total = {k: sum(p[k] for p in per.values()) for k in ("rss", "uss", "pss")}
    return {"total": total, "processes": per}


def _transfers(address: str) -> float:
    """1 GiB down and 64 MiB up; seconds taken."""
    options = [("grpc.max_receive_message_length", 2 * CHUNK)]
    started = time.perf_counter()
    with grpc.insecure_channel(address, options=options) as channel:
        stub = transfer_pb2_grpc.FileTransferStub(channel)
        got = sum(
            len(c.data)
            for c in stub.DummyDownload(transfer_pb2.FileRequest(name=FILE_NAME, chunk_size=CHUNK))
        )
        if got != GIB:
            raise RuntimeError(f"downloaded {got} bytes, not {GIB}")
        data = b"\0" * CHUNK

        def chunks() -> Iterator[transfer_pb2.FileChunk]:
            for i in range(UPLOAD // CHUNK):
                yield transfer_pb2.FileChunk(data=data, offset=i * CHUNK, name="bench")

        status = stub.DummyUpload(chunks())
        if status.bytes_received != UPLOAD:
            raise RuntimeError(f"uploaded {status.bytes_received} bytes, not {UPLOAD}")
    return time.perf_counter() - started


def run(ctx: Context) -> list[Result]:
    root = ctx.scratch("footprint")
    shared = root / "shared"
    shared.mkdir(exist_ok=True)
    with open(shared / FILE_NAME, "wb") as sparse:  # the size is all a dummy transfer reads
        sparse.truncate(GIB)
    spec = PeerSpec.on_free_ports(
        "fpeer", HOST, shared, root / "state", log_format="text", log_level="WARNING"
    )
    peer = PeerProcesses(spec, root)
    settle_s = 10.0 if ctx.quick else SETTLE_S
    try:
        peer.start()
        peer.wait_healthy(deadline_s=120)
        time.sleep(3.0)  # past start-up: the first scan, the first heartbeat
        idle = _memory(peer)
        seconds = _transfers(spec.grpc_address)
        after = _memory(peer)
        time.sleep(settle_s)
        later = _memory(peer)
    finally:
        peer.stop()
    idle_mib, after_mib, later_mib = (m["total"]["rss"] for m in (idle, after, later))
    ctx.log(
        f"peer memory (RSS, MiB): idle {idle_mib:.0f}, after 1 GiB {after_mib:.0f} "
        f"({seconds:.1f} s), {settle_s:.0f} s later {later_mib:.0f}"
    )
    what = "RSS of a peer's three processes (indexer + transfer + directory), MiB"
    return [
        Result.absolute(
            "footprint.peer_idle",
            idle_mib,
            "MiB",
            below=IDLE_AIM_MIB,
            aim=f"<= {IDLE_AIM_MIB:.0f} MiB",
            context={"what": f"{what}, idle", "memory": idle},
        ),
        Result.absolute(
            "footprint.peer_after_1gib",
            after_mib,
            "MiB",
            below=LIMITS_MIB,
            aim=f"< {LIMITS_MIB} MiB (the containers' limits)",
            baseline="the same peer idle",
            baseline_value=idle_mib,
            context={
                "what": f"{what}, right after 1 GiB down + 64 MiB up in 4 MiB chunks",
                "memory": after,
                "transfer_s": seconds,
            },
        ),
        Result.relative(
            "footprint.peer_settled",
            later_mib,
            "MiB",
            "the same peer idle",
            idle_mib,
            at_most=1.10,
            aim="<= 1.1x idle (back within 10%)",
            context={"what": f"{what}, {settle_s:.0f} s after the transfers", "memory": later},
        ),
    ]
