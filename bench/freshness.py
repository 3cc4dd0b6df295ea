"""Freshness: a file created in the shared folder, until `/search` finds it.

One real peer (every service, default settings: inotify watcher, 50 ms debounce)
on 127.0.0.41 shares 2,000 files. 50 times: create a file with a new name, then
ask `GET /search?query=<that name>&fanout=0` every 10 ms until it is a hit. No
baseline: the figure is absolute (p50 and p99 over the 50 files).
"""

from __future__ import annotations

import time
import uuid

import httpx

from bench.core import Context, Result, percentile
from bench.search import make_shared
from peerfind_devnet import Devnet, PeerSpec, wait_for

__all__ = ["run"]

HOST = "127.0.0.41"
FILES = 50
POLL_S = 0.01
DEADLINE_S = 15.0


def run(ctx: Context) -> list[Result]:
    root = ctx.scratch("freshness")
    shared = make_shared(root, 1)
    spec = PeerSpec.on_free_ports(
        "fresh",
        HOST,
        shared,
        root / "state",
        log_format="text",
        log_level="WARNING",
        rate_limit_rps=0,
    )
    count = 15 if ctx.quick else FILES
    latencies: list[float] = []
    with Devnet(root, [spec]).running(), httpx.Client(trust_env=False, timeout=5) as http:
        url = f"{spec.url}/search"
        for _ in range(count):
            name = f"fresh-{uuid.uuid4().hex[:12]}.txt"
            path = shared / name
            path.write_bytes(b"x")
            created = time.perf_counter()

            def found(name: str = name) -> bool:
                body = http.get(url, params={"query": name, "fanout": 0}).json()
                return any(hit["name"] == name for hit in body["hits"])

            wait_for(found, DEADLINE_S, step_s=POLL_S, what=f"/search to find {name}")
            latencies.append(time.perf_counter() - created)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    ctx.log(f"freshness over {count} files: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    return [
        Result.absolute(
            "freshness.p50",
            p50,
            "s",
            below=1.0,
            aim="p50 < 1 s",
            context={
                "what": f"file created -> found by /search, {count} files, polled every "
                f"{POLL_S * 1000:.0f} ms",
                "p99_s": p99,
                "max_s": max(latencies),
                "min_s": min(latencies),
                "all_s": latencies,
            },
        )
    ]
