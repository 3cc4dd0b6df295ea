"""Memory: RSS of the directory and the indexer with 1,000,000 files indexed.

Two real peers (every service) in turn on 127.0.0.51: one sharing an empty folder
(the baseline), one sharing a tree of 1,000,000 empty files (1,000 folders) that
the benchmark makes. Each is measured once its index holds the whole folder and
its directory has answered a few searches (a selective one, a common one that
hits the result limit, a 2-character one, a page of /files). The aim is on the
total of the two processes; their peaks (VmHWM) are recorded beside it.

The 1M-file index this leaves behind is what `bench.query` searches.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

from bench.core import MIB, Context, Result, free_port, wait_for
from bench.tree import make_tree
from peerfind_devnet import PeerProcesses, PeerSpec

__all__ = ["FILES", "run"]

FILES = 1_000_000
HOST = "127.0.0.51"
QUERIES = ["0424242", ".txt", "ab", "report-00"]


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _measure(ctx: Context, root: Path, shared: Path, files: int, label: str) -> dict[str, Any]:
    spec = PeerSpec(
        peer_id=f"mem-{label}",
        host=HOST,
        rest_port=free_port(HOST),
        grpc_port=free_port(HOST),
        shared_dir=shared,
        state_dir=root / f"state-{label}",
        extra={
            "log_format": "text",
            "log_level": "WARNING",
            "rate_limit_rps": 0,
            "index_stale_after_s": 600,
        },
    )
    peer = PeerProcesses(spec, root)
    started = time.perf_counter()
    try:
        peer.start()
        peer.wait_healthy(deadline_s=600)

        def indexed() -> bool:
            body = httpx.get(f"{spec.url}/health", timeout=5, trust_env=False).json()
            return bool(body["index"]["files"] == files and body["index"]["last_scan_at"] > 0)

        wait_for(indexed, 600, step_s=0.5, what=f"{files:,} files in the index")
        index_s = time.perf_counter() - started
        with httpx.Client(trust_env=False, timeout=30) as http:
            for _ in range(3):
                for query in QUERIES:
                    http.get(f"{spec.url}/search", params={"query": query, "fanout": 0})
                http.get(f"{spec.url}/files", params={"limit": 1000})
        time.sleep(1.0)
        pids = peer.pids()
        rss = {
            name: psutil.Process(pids[name]).memory_info().rss / MIB
            for name in ("directory", "indexer")
        }
        peak = {name: _peak_mb(pids[name]) for name in ("directory", "indexer")}
        ctx.log(
            f"memory {label}: directory {rss['directory']:.0f} MB, indexer "
            f"{rss['indexer']:.0f} MB (peaks {peak['directory']:.0f} / "
            f"{peak['indexer']:.0f} MB), indexed in {index_s:.1f} s"
        )
        return {
            "rss_mb": rss,
            "peak_mb": peak,
            "total_mb": sum(rss.values()),
            "ready_s": index_s,
            "index_path": str(spec.state_dir / "index.sqlite3"),
        }
    finally:
        peer.stop()


def run(ctx: Context) -> list[Result]:
    root = ctx.scratch("memory")
    files = 100_000 if ctx.quick else FILES
    empty = root / "empty"
    empty.mkdir(exist_ok=True)
    tree = root / "tree"
    started = time.perf_counter()
    make_tree(tree, files)
    ctx.log(f"made {files:,} files in {time.perf_counter() - started:.1f} s")
    ctx.cleanups.append(lambda: shutil.rmtree(tree, ignore_errors=True))
    base = _measure(ctx, root, empty, 0, "empty")
    full = _measure(ctx, root, tree, files, "full")
    ctx.shared["million_index"] = (Path(full.pop("index_path")), files)
    base.pop("index_path")
    return [
        Result.absolute(
            "memory.rss_1m_files",
            full["total_mb"],
            "MB",
            below=300.0,
            aim="< 300 MB in total",
            baseline="directory + indexer RSS with an empty index",
            baseline_value=base["total_mb"],
            context={
                "what": f"RSS of directory + indexer, {files:,} files indexed (MB = MiB)",
                "full": full,
                "empty": base,
            },
        )
    ]
