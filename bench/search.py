"""Search: an entry peer fanning out to 2 others, against a bare reference fan-out.

Ours: three real peers (`peerfind_devnet`, every service, default features: query
ids and dedup, TTL, deadline, metrics) on 127.0.0.21-23, each sharing 2,000 files
of which 10 match the query. A search enters at peer1 with fanout 2 and ttl 1, so
peer1 asks peer2 and peer3 and they answer from their own index: the same shape as
the reference. (With the default ttl of 3 the leaves would forward to each other
as well, which is more work than the reference does.)

Reference (`bench.reference`, on 127.0.0.31-33): a minimal FastAPI entry that
gathers 2 GETs over one shared httpx client from 2 minimal leaves, which answer
with the very JSON our leaves answered.

The load comes from `bench.httpload` in this process: latency with one client
(p50, p99), then requests per second with 50 clients, each round for ours then
for the reference; the best round of each counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.core import Context, Helpers, Result, free_port, percentile, wait_tcp
from bench.httpload import LoadStats, closed_loop, sequential
from peerfind_devnet import Devnet, loopback_specs

__all__ = ["QUERY", "make_shared", "run"]

QUERY = "report"
FILES_PER_PEER = 2000
MATCHES_PER_PEER = 10
PEER_HOSTS = ["127.0.0.21", "127.0.0.22", "127.0.0.23"]
REF_HOSTS = ["127.0.0.31", "127.0.0.32", "127.0.0.33"]
CLIENTS = 50
# The load clients connect from 50 addresses, as 50 clients would.
CLIENT_SOURCES = [f"127.0.0.{100 + i}" for i in range(CLIENTS)]
_WORDS = ["photo", "song", "notes", "invoice", "backup", "draft", "video", "scan", "slides"]
_EXTS = [".jpg", ".mp3", ".txt", ".pdf", ".tar", ".doc", ".mp4", ".png", ".odp"]
PEER_SETTINGS = {
    # The per-client rate limit (100/s by default) is off: one load generator would
    # trip it by design, and so do the entry's forwards to its leaves (all from one
    # address) past 100 searches/s. Everything the issue names stays on.
    "rate_limit_rps": 0,
    "log_format": "text",
    "log_level": "WARNING",
    "heartbeat_interval_s": 1.0,
    "peer_ttl_s": 10.0,
    "bootstrap_retry_s": 1.0,
}


def make_shared(root: Path, peer: int) -> Path:
    """A folder of FILES_PER_PEER empty files; MATCHES_PER_PEER contain QUERY."""
    folder = root / f"shared{peer}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(FILES_PER_PEER):
        if i < MATCHES_PER_PEER:
            name = f"{QUERY}-q{i % 4 + 1}-peer{peer}-{i:04d}.pdf"
        else:
            name = f"{_WORDS[i % len(_WORDS)]}-peer{peer}-{i:04d}{_EXTS[i * 7 % len(_EXTS)]}"
        (folder / name).touch()
    return folder


def _stats(stats: LoadStats) -> dict[str, Any]:
    ms = [x * 1000 for x in stats.latencies]
    return {
        "requests": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "requests_per_s": stats.requests_per_s,
        "errors": stats.errors,
        "partial_answers": stats.flagged,
    }


@contextlib.contextmanager
def _reference(ctx: Context, root: Path, ours: Devnet) -> Iterator[tuple[str, int]]:
    """Start the reference with our peers' own answers; yields the entry's address."""
    p1, p2, p3 = (ours.peers[f"peer{i}"].spec for i in (1, 2, 3))
    own = httpx.get(f"{p1.url}/search", params={"query": QUERY, "fanout": 0}, trust_env=False)
    (root / "entry-hits.json").write_text(json.dumps(own.json()["hits"]))
    with Helpers(root / "logs") as helpers:
        leaves = []
        for host, spec in zip(REF_HOSTS[1:], (p2, p3), strict=True):
            # The answer a leaf of ours gives to a forwarded query (ttl 0, new id).
            params: dict[str, str | int] = {
                "query": QUERY,
                "fanout": 2,
                "ttl": 0,
                "qid": uuid.uuid4().hex,
                "sender": "peer1",
            }
            body = httpx.get(f"{spec.url}/search", params=params, trust_env=False).content
            path = root / f"leaf-{host}.json"
            path.write_bytes(body)
            port = free_port(host)
            helpers.start(
                f"ref-leaf-{host}",
                "bench.reference",
                "leaf",
                "--host",
                host,
                "--port",
                str(port),
                "--body",
                str(path),
            )
            leaves.append((host, port))
        entry_host, entry_port = REF_HOSTS[0], free_port(REF_HOSTS[0])
        leaf_args = [arg for h, p in leaves for arg in ("--leaf", f"http://{h}:{p}")]
        helpers.start(
            "ref-entry",
            "bench.reference",
            "entry",
            "--host",
            entry_host,
            "--port",
            str(entry_port),
            "--body",
            str(root / "entry-hits.json"),
            *leaf_args,
        )
        for host, port in [*leaves, (entry_host, entry_port)]:
            wait_tcp(host, port, what="the reference fan-out")
        yield entry_host, entry_port


def run(ctx: Context) -> list[Result]:
    root = ctx.scratch("search")
    shared = [make_shared(root, i) for i in (1, 2, 3)]
    specs = loopback_specs(root, PEER_HOSTS, shared, PEER_SETTINGS)
    net = Devnet(root, specs)
    sequential_n, duration, rounds = (100, 2.0, 1) if ctx.quick else (400, 5.0, 3)
    ours_target = f"/search?query={QUERY}&fanout=2&ttl=1&mode=flood"
    ref_target = f"/search?query={QUERY}"
    with net.running():
        entry = net.peers["peer1"].spec
        check = httpx.get(
            f"http://{entry.host}:{entry.rest_port}{ours_target}", trust_env=False
        ).json()
        if sorted(check["peers_answered"]) != ["peer1", "peer2", "peer3"] or check["partial"]:
            raise RuntimeError(f"the search did not reach all three peers: {check}")
        hits = len(check["hits"])
        with _reference(ctx, root, net) as (ref_host, ref_port):
            seq: dict[str, list[LoadStats]] = {"ours": [], "ref": []}
            load: dict[str, list[LoadStats]] = {"ours": [], "ref": []}
            targets = {
                "ours": (entry.host, entry.rest_port, ours_target),
                "ref": (ref_host, ref_port, ref_target),
            }
            for _ in range(rounds):
                for who, (host, port, target) in targets.items():
                    ctx.quiet()
                    seq[who].append(
                        asyncio.run(
                            sequential(
                                host,
                                port,
                                target,
                                requests=sequential_n,
                                warmup=30,
                                flag=b'"partial":true',
                            )
                        )
                    )
                    ctx.quiet()
                    load[who].append(
                        asyncio.run(
                            closed_loop(
                                host,
                                port,
                                target,
                                clients=CLIENTS,
                                duration_s=duration,
                                warmup_s=1.0,
                                flag=b'"partial":true',
                                sources=CLIENT_SOURCES,
                            )
                        )
                    )
                    ctx.log(
                        f"search {who}: 1 client p50 "
                        f"{percentile(seq[who][-1].latencies, 50) * 1000:.2f} ms, "
                        f"{CLIENTS} clients {load[who][-1].requests_per_s:.0f} req/s"
                    )
    best_seq = {w: min(s, key=lambda x: percentile(x.latencies, 50)) for w, s in seq.items()}
    best_load = {w: max(s, key=lambda x: x.requests_per_s) for w, s in load.items()}
    what = (
        f"GET /search?query={QUERY} at the entry of 3 peers, fanout 2, ttl 1; "
        f"{hits} hits ({MATCHES_PER_PEER} per peer, {FILES_PER_PEER} files each)"
    )
    seq_ours, seq_ref = _stats(best_seq["ours"]), _stats(best_seq["ref"])
    load_ours, load_ref = _stats(best_load["ours"]), _stats(best_load["ref"])
    return [
        Result.relative(
            "search.p50_1_client",
            seq_ours["p50_ms"],
            "ms",
            "bare FastAPI + shared httpx fan-out to 2 minimal leaves (same JSON)",
            seq_ref["p50_ms"],
            at_most=1.0,
            context={
                "what": what,
                "ours": seq_ours,
                "reference": seq_ref,
                "p99_ms": {"ours": seq_ours["p99_ms"], "reference": seq_ref["p99_ms"]},
                "rounds": [[_stats(s) for s in seq[w]] for w in ("ours", "ref")],
            },
        ),
        Result.relative(
            "search.rps_50_clients",
            load_ours["requests_per_s"],
            "req/s",
            "the same bare reference fan-out",
            load_ref["requests_per_s"],
            at_least=1.0,
            context={
                "what": what + f"; {CLIENTS} clients, {duration:g} s window",
                "ours": load_ours,
                "reference": load_ref,
                "rounds": [[_stats(s) for s in load[w]] for w in ("ours", "ref")],
            },
        ),
    ]
