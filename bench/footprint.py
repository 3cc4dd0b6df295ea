"""Memory per peer: the three processes of one peer idle, after 1 GiB of transfers, a minute later.

One real peer (indexer, transfer, directory, with PERF_ENV as everywhere) on
127.0.0.14, sharing a sparse 1 GiB file. Measured: the physical memory its three
processes hold, every page counted once however many of them map it (the page frames
of /proc/PID/pagemap; PSS when they are hidden), which is what a machine gives the
peer; the RSS sum, which counts a shared page once per process, is reported beside it,
and USS and PSS per process are in the context. Once idle, right after 1 GiB of
transfers (one 1 GiB DummyDownload and 64 MiB of DummyUpload, 4 MiB chunks: the largest
a client may ask for, the case that keeps the most), and SETTLE_S later; then with
three more idle peers started beside it, what each of the four holds; and the same
transfers from this peer and from one with glibc's default malloc arenas, alternating
(the transfer's two arenas are what lets its idle trim return most of its buffers: it must not
cost transfer speed). The client is a
plain grpc channel in this process: its own memory is not counted.
"""

from __future__ import annotations

import os
import statistics
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil  # type: ignore[import-untyped]

from bench.core import MIB, Context, Result
from peerfind.v1 import transfer_pb2, transfer_pb2_grpc
from peerfind_devnet import PeerProcesses, PeerSpec

__all__ = ["run"]

HOST_PREFIX, HOST_BASE = "127.0.0.", 14  # the peer on .14, the crowd on .15-.17
CROWD = 4
SPEED_ROUNDS = 5
SPEED_TIE = 0.95  # the tie band of the transfer rows (docs/benchmarks.md)
FILE_NAME = "big.bin"
GIB = 1024 * MIB
CHUNK = 4 * MIB
UPLOAD = 64 * MIB
SETTLE_S = 60.0
IDLE_AIM_MIB = 160.0
LIMITS_MIB = 256 + 512 + 256  # the containers' mem_limit (deploy/compose/services.yaml)


_PRESENT = 1 << 63
_PFN_MASK = (1 << 55) - 1
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _frames(pid: int) -> set[int]:
    """The physical page frames `pid` maps (resident pages), from /proc/PID/pagemap.

    Empty when the frame numbers are hidden (they read as 0 without CAP_SYS_ADMIN)."""
    frames: set[int] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if line.rstrip().endswith("[vsyscall]"):
                continue
            pagemap.seek(start // _PAGE * 8)
            data = pagemap.read((end - start) // _PAGE * 8)
            for (entry,) in struct.iter_unpack("<Q", data):
                if entry & _PRESENT and entry & _PFN_MASK:
                    frames.add(entry & _PFN_MASK)
    return frames


def _memory(peers: list[PeerProcesses]) -> dict[str, Any]:
    """Per process RSS, USS and PSS, and `held`: the physical memory the peers' processes
    map, each page counted once however many of them map it (what a machine gives the
    peers; pages shared with processes outside them, libc's, are counted whole)."""
    per: dict[str, dict[str, float]] = {}
    frames: set[int] = set()
    for peer in peers:
        for name, pid in peer.pids().items():
            info = psutil.Process(pid).memory_full_info()
            key = name if len(peers) == 1 else f"{peer.spec.peer_id}.{name}"
            per[key] = {"rss": info.rss / MIB, "uss": info.uss / MIB, "pss": info.pss / MIB}
            frames |= _frames(pid)
    total = {k: sum(p[k] for p in per.values()) for k in ("rss", "uss", "pss")}
    total["held"] = len(frames) * _PAGE / MIB if frames else total["pss"]
    return {"total": total, "processes": per, "held_from": "pagemap" if frames else "pss"}


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


def _peer(root: Path, n: int, shared: Path, env: dict[str, str] | None = None) -> PeerProcesses:
    spec = PeerSpec.on_free_ports(
        f"fpeer{n}", f"{HOST_PREFIX}{HOST_BASE + n}", shared, root / f"state{n}",
        log_format="text", log_level="WARNING",
    )  # fmt: skip
    return PeerProcesses(spec, root, env)


def _speed_rounds(
    one: PeerProcesses, default: PeerProcesses, rounds: int
) -> tuple[list[float], list[float]]:
    """MB/s of the same transfers from `one` (the transfer's few arenas) and from
    `default` (glibc's default arenas), alternating round by round."""
    moved = (GIB + UPLOAD) / 1e6
    a, b = [], []
    for _ in range(rounds):
        a.append(moved / _transfers(one.spec.grpc_address))
        b.append(moved / _transfers(default.spec.grpc_address))
    return a, b


def run(ctx: Context) -> list[Result]:
    root = ctx.scratch("footprint")
    shared = root / "shared"
    shared.mkdir(exist_ok=True)
    with open(shared / FILE_NAME, "wb") as sparse:  # the size is all a dummy transfer reads
        sparse.truncate(GIB)
    peer = _peer(root, 0, shared)
    others = [_peer(root, n, shared) for n in range(1, CROWD)]
    # glibc's own default (8 arenas per core), for the speed comparison: with
    # MALLOC_ARENA_MAX set, the transfer keeps it (transfer.memory.few_arenas).
    default = _peer(root, CROWD, shared, {"MALLOC_ARENA_MAX": str(8 * (os.cpu_count() or 1))})
    settle_s = 10.0 if ctx.quick else SETTLE_S
    try:
        peer.start()
        peer.wait_healthy(deadline_s=120)
        time.sleep(3.0)  # past start-up: the first scan, the first heartbeat
        idle = _memory([peer])
        seconds = _transfers(peer.spec.grpc_address)
        after = _memory([peer])
        time.sleep(settle_s)
        later = _memory([peer])
        for other in others:  # then a crowd: what each peer holds when several share a host
            other.start()
        for other in others:
            other.wait_healthy(deadline_s=120)
        time.sleep(3.0)
        crowd = _memory([peer, *others])
        for other in others:
            other.stop()
        default.start()  # the same peer with glibc's default number of arenas
        default.wait_healthy(deadline_s=120)
        one_mb_s, default_mb_s = _speed_rounds(peer, default, 2 if ctx.quick else SPEED_ROUNDS)
    finally:
        for p in (peer, *others, default):
            p.stop()
    idle_mib, after_mib, later_mib = (m["total"]["held"] for m in (idle, after, later))
    each_mib = crowd["total"]["held"] / CROWD
    ctx.log(
        f"peer memory (held, MiB): idle {idle_mib:.0f} (RSS {idle['total']['rss']:.0f}), "
        f"after 1 GiB {after_mib:.0f} ({seconds:.1f} s), {settle_s:.0f} s later "
        f"{later_mib:.0f}; {CROWD} idle peers {each_mib:.0f} each"
    )
    what = (
        "physical memory held by a peer's three processes (indexer + transfer + directory), "
        "each page once (pagemap), MiB"
    )
    return [
        Result.absolute(
            "footprint.peer_idle",
            idle_mib,
            "MiB",
            below=IDLE_AIM_MIB,
            aim=f"<= {IDLE_AIM_MIB:.0f} MiB",
            context={"what": f"{what}, idle", "memory": idle},
        ),
        Result.context_only(
            "footprint.peer_idle_rss",
            idle["total"]["rss"],
            "MiB",
            "the same peer's held memory",
            idle_mib,
            why="RSS counts a shared page once per process that maps it",
            context={"what": "the sum of the three processes' RSS (what top shows), idle"},
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
        Result.relative(
            "footprint.few_arenas_speed",
            statistics.median(one_mb_s),
            "MB/s",
            "the same peer with glibc's default arenas",
            statistics.median(default_mb_s),
            at_least=SPEED_TIE,
            aim=f">= {SPEED_TIE:g}x (tie band; paired median)",
            ratio=statistics.median(a / b for a, b in zip(one_mb_s, default_mb_s, strict=True)),
            context={
                "what": "1 GiB DummyDownload + 64 MiB DummyUpload in 4 MiB chunks: a peer whose "
                "transfer caps its malloc arenas (transfer.memory.few_arenas) against one "
                f"with {default.env}, alternating, medians; ratio = median of the per-round "
                "ratios",
                "few_arenas_mb_s": one_mb_s,
                "default_arenas_mb_s": default_mb_s,
            },
        ),
        Result.context_only(
            "footprint.crowd_idle_each",
            each_mib,
            "MiB",
            "one peer alone, idle",
            idle_mib,
            why=f"each of {CROWD} idle peers on one host: how many fit",
            context={"what": f"{what}, {CROWD} peers idle, per peer", "memory": crowd},
        ),
    ]
