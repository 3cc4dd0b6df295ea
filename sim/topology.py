"""The overlays a run searches over.

- `membership`: the overlay peerfind's own membership builds when peers join one by one,
  each bootstrapping through two earlier peers as friends (the product's `Membership`
  over virtual REST calls: verified joins, forward-join walks, NEIGHBOR requests, the
  active view as the search table; nothing assumed), measured after the joins and one
  heartbeat round;
- `random_regular`: every peer with the same degree d (networkx);
- `power_law`: Barabási-Albert preferential attachment (networkx), hubs and leaves;
- `hyparview`: the bounded overlay of `directory.overlay` (active views), after one-by-one
  joins and a while of pings and shuffles (`sim.overlay`).
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path

import networkx as nx

from sim.network import SimNetwork

__all__ = ["TOPOLOGIES", "build", "graph_of", "shape"]

TOPOLOGIES = ("membership", "random_regular", "power_law", "hyparview")
REGULAR_DEGREE = 8
POWER_LAW_M = 4  # edges each newcomer brings: mean degree ~2m
JOIN_SETTLE_S = 1.0
QUIET_ROUNDS = 100


async def build(net: SimNetwork, topology: str, n: int, seed: int) -> None:
    """Add n peers to `net` (files placed later) and connect them as `topology` says."""
    rng = random.Random(seed)
    if topology == "membership":
        await _join_one_by_one(net, n, rng)
        return
    if topology == "hyparview":
        from sim.overlay import active_views  # sim.overlay uses this module's shape()

        views = await active_views(n, seed)
        peers = [net.add() for _ in range(n)]
        for i, known in enumerate(views):
            for j in known:  # as the router reads them: each peer's own active view
                b = peers[j]
                peers[i].table.upsert(b.peer_id, b.url, f"{b.address}:50051")
        return
    if topology == "random_regular":
        graph = nx.random_regular_graph(REGULAR_DEGREE, n, seed=seed)
    elif topology == "power_law":
        graph = nx.barabasi_albert_graph(n, POWER_LAW_M, seed=seed)
    else:
        raise ValueError(f"unknown topology {topology!r}; choose from {', '.join(TOPOLOGIES)}")
    # A generated graph's degrees are the experiment, not the product's table bound:
    # hubs keep every link (membership-built overlays keep the real bound).
    net.max_peers = max(net.max_peers, max(d for _, d in graph.degree()))
    net.max_per_network = max(net.max_per_network, net.max_peers)
    peers = [net.add() for _ in range(n)]
    for a, b in graph.edges():
        net.link(peers[a], peers[b])


async def _join_one_by_one(net: SimNetwork, n: int, rng: random.Random) -> None:
    with tempfile.TemporaryDirectory(prefix="peerfind-sim-") as tmp:
        state = Path(tmp)
        for k in range(n):
            peer = net.add()
            earlier = net.peers[:k]
            friends = rng.sample(earlier, min(2, len(earlier)))
            membership = net.attach_membership(peer, net.settings_for(peer, friends, state))
            if friends:
                await membership.bootstrap()
            await membership.settle()
            # The join's walk and the NEIGHBOR it ends with happen at other peers: virtual
            # time is free, so give them a second (a walk takes well under one).
            await asyncio.sleep(JOIN_SETTLE_S)
        await _quiet(net)
        # Then every peer's first heartbeat: pings (which mend a view a DISCONNECT
        # overtook), a top-up, a request to friends that are not neighbours.
        await asyncio.gather(*(p.membership.heartbeat_once() for p in net.peers if p.membership))
        await _quiet(net)


async def _quiet(net: SimNetwork) -> None:
    """Until no membership has a message left to handle (each can start more elsewhere)."""
    members = [p.membership for p in net.peers if p.membership is not None]
    for _ in range(QUIET_ROUNDS):  # bounded: a repair can start another, but not for ever
        busy = [m for m in members if m.busy]
        if not busy:
            return
        await asyncio.gather(*(m.settle() for m in busy))
        await asyncio.sleep(JOIN_SETTLE_S)
    raise RuntimeError(f"membership still busy after {QUIET_ROUNDS} rounds")


def graph_of(net: SimNetwork, *, up_only: bool = False) -> nx.Graph[int]:
    """The overlay as an undirected graph: a link wherever one peer knows the other."""
    graph: nx.Graph[int] = nx.Graph()
    skip = net.down | net.hung if up_only else set()
    graph.add_nodes_from(p.index for p in net.peers if p.index not in skip)
    for peer in net.peers:
        if peer.index in skip:
            continue
        for other in peer.table.peers():
            b = net.by_id[other.peer_id].index
            if b not in skip:
                graph.add_edge(peer.index, b)
    return graph


def shape(graph: nx.Graph[int], *, samples: int = 200, seed: int = 1) -> dict[str, float | int]:
    """Components, degrees and mean shortest path (BFS from `samples` random peers)."""
    degrees = [d for _, d in graph.degree()]
    components = nx.number_connected_components(graph) if graph else 0
    rng = random.Random(seed)
    nodes = list(graph.nodes)
    sources = rng.sample(nodes, min(samples, len(nodes)))
    total = count = 0
    for source in sources:
        lengths = nx.single_source_shortest_path_length(graph, source)
        total += sum(lengths.values())
        count += len(lengths) - 1
    mean_degree = sum(degrees) / len(degrees) if degrees else 0.0
    return {
        "components": components,
        "max_degree": max(degrees, default=0),
        "mean_degree": round(mean_degree, 3),
        "mean_path_length": round(total / count, 3) if count else 0.0,
    }
