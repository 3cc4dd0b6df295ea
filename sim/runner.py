"""One simulated run: a network, a workload, a strategy; queries in, figures out."""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from peerfind.api import SearchMode
from sim.network import LinkModel, SimNetwork
from sim.topology import build, graph_of, shape
from sim.workload import Catalogue, place

__all__ = ["REPLICATIONS", "Case", "World", "make_world", "run_case"]

REPLICATIONS = (0.001, 0.01, 0.1)
FILES_PER_CLASS = 20
CHURN_EPOCHS = 10  # the down set is drawn anew this many times per run (leave and join)


@dataclass
class World:
    """A built network with its files: reused by every case on the same size/topology."""

    net: SimNetwork
    catalogue: Catalogue
    topology: str
    seed: int
    build_s: float = 0.0  # virtual seconds the joins took (membership only)
    shape: dict[str, float | int] = field(default_factory=dict)


async def make_world(
    peers: int, topology: str, *, seed: int = 1, model: LinkModel | None = None
) -> World:
    import asyncio

    net = SimNetwork(model or LinkModel(seed=seed), seed=seed)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await build(net, topology, peers, seed)
    built = loop.time() - started
    catalogue = place(net, REPLICATIONS, FILES_PER_CLASS, seed + 1)
    await net.publish_summaries()
    world = World(net, catalogue, topology, seed, built)
    world.shape = shape(graph_of(net), seed=seed)
    return world


@dataclass(frozen=True)
class Case:
    replication: float = 0.01
    popularity: str = "uniform"
    churn: float = 0.0
    queries: int = 1000
    fanout: int | None = 2  # None: the peer's default for the mode (so for ttl and the rest)
    ttl: int | None = 3
    timeout_ms: int | None = None
    mode: SearchMode = "flood"
    wanted: int | None = None
    budget: int | None = None
    summaries: bool = True  # False: the routers ignore them (the flood as it was before)
    seed: int = 7


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_case(world: World, case: Case) -> tuple[dict[str, Any], list[int]]:
    """The run's figures, and every peer's load (messages handled) for the charts."""
    net, catalogue = world.net, world.catalogue
    rng = random.Random(case.seed)
    pick = catalogue.picker(case.replication, case.popularity, rng)
    n = len(net.peers)
    for peer in net.peers:
        peer.counters.__init__()  # type: ignore[misc]
        peer.router.summaries = peer.summaries if case.summaries else None
    per_epoch = max(1, case.queries // CHURN_EPOCHS)
    successes = 0
    recalls: list[float] = []
    times: list[float] = []
    first_hits: list[float] = []
    messages = request_bytes = answer_bytes = duplicates = requests = lost = 0
    hops: list[int] = []
    reached: list[int] = []
    partial = 0
    # Summaries as real peers would hold them (they refetch every 2 s): an earlier case's
    # failures changed some views, and each churn epoch takes peers down.
    await net.publish_summaries(rebuild=False)
    for q in range(case.queries):
        if case.churn and q % per_epoch == 0:
            net.down = set(rng.sample(range(n), round(case.churn * n)))
            await net.publish_summaries(rebuild=False)
        up = [i for i in range(n) if i not in net.down] if net.down else None
        entry = net.peers[rng.choice(up) if up is not None else rng.randrange(n)]
        name = pick()
        answer, tally, took = await net.search(
            entry,
            name,
            fanout=case.fanout,
            ttl=case.ttl,
            timeout_ms=case.timeout_ms,
            mode=case.mode,
            wanted=case.wanted,
            budget=case.budget,
        )
        live = catalogue.holders[name] - net.down
        found = {net.by_id[h.peer_id].index for h in answer.hits if h.name == name}
        if found:
            successes += 1
        if live:
            recalls.append(len(found & live) / len(live))
        times.append(took)
        if tally.first_hit_s is not None:
            first_hits.append(tally.first_hit_s)
        messages += tally.requests + tally.answers
        requests += tally.requests
        request_bytes += tally.request_bytes
        answer_bytes += tally.answer_bytes
        duplicates += tally.duplicates
        lost += tally.lost_to_deadline
        hops.append(tally.max_hops)
        reached.append(len(answer.peers_answered))
        partial += answer.partial
    net.down = set()
    if case.churn:
        await net.publish_summaries(rebuild=False)
    last = net.last_params
    resolved = (
        {
            "mode": last.mode,
            "fanout": last.fanout,
            "ttl": last.ttl,
            "budget": last.budget,
            "wanted": last.wanted,
            "timeout_ms": round(last.timeout_s * 1000),
        }
        if last is not None
        else {}
    )
    for peer in net.peers:
        peer.router.summaries = peer.summaries
    loads = [p.counters.handled for p in net.peers]
    mean_load = statistics.fmean(loads)
    queries = case.queries
    return {
        "mode": case.mode,
        "wanted": case.wanted,
        "budget": case.budget,
        "summaries": case.summaries,
        "peers": n,
        "topology": world.topology,
        "replication": case.replication,
        "copies": max(1, round(case.replication * n)),
        "popularity": case.popularity,
        "churn": case.churn,
        "queries": queries,
        "fanout": case.fanout,
        "ttl": case.ttl,
        "timeout_ms": case.timeout_ms,
        "resolved": resolved,
        "success_rate": round(successes / queries, 4),
        "recall": round(statistics.fmean(recalls), 4) if recalls else 0.0,
        "messages_per_query": round(messages / queries, 2),
        "bytes_per_query": round((request_bytes + answer_bytes) / queries, 1),
        "duplicate_share": round(duplicates / requests, 4) if requests else 0.0,
        "first_hit_p50_ms": round(_quantile(first_hits, 0.5) * 1000, 1) if first_hits else None,
        "p50_ms": round(_quantile(times, 0.5) * 1000, 1),
        "p99_ms": round(_quantile(times, 0.99) * 1000, 1),
        "reach_mean": round(statistics.fmean(reached), 1),
        "reach_share": round(statistics.fmean(reached) / n, 5),
        "hops_mean": round(statistics.fmean(hops), 2),
        "hops_max": max(hops, default=0),
        "lost_to_deadline_per_query": round(lost / queries, 3),
        "partial_share": round(partial / queries, 4),
        "mean_peer_load": round(mean_load, 2),
        "p99_peer_load": _quantile(loads, 0.99),
        "max_peer_load": max(loads),
        "seed": case.seed,
    }, loads
