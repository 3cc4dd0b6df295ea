"""The bounded overlay (`directory.overlay`) over thousands of virtual peers.

Each virtual peer runs the product's `Overlay` (its views and decisions) behind a virtual
`OverlayLink`: a message takes the pair's one-way latency (`LinkModel`); one-way messages
(FORWARD_JOIN, DISCONNECT, SHUFFLE, SHUFFLE_REPLY) are handled at the target on arrival
while the sender goes on; JOIN, NEIGHBOR and PING wait for the answer's way back. A down
peer refuses after a round trip.

A case: peers join one by one (each through a random earlier peer, its friend), the
overlay then lives (pings, shuffles) for a while, and its shape and its membership traffic
are measured; then a share of the peers fails at once, the rest detect it and repair, and
the shape is measured again.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import networkx as nx

from directory.overlay import Descriptor, Overlay, OverlayConfig
from sim.network import LinkModel
from sim.topology import shape

__all__ = ["OverlayNet", "OverlayPlan", "active_views", "joined", "overlay_case"]


class OverlayNet:
    def __init__(self, model: LinkModel, config: OverlayConfig, seed: int) -> None:
        self.model = model
        self.config = config
        self.rng = random.Random(seed)
        self.nodes: list[Overlay] = []
        self.index: dict[str, int] = {}
        self.down: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self) -> Overlay:
        i = len(self.nodes)
        me = Descriptor(f"p{i}", f"http://10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:8000")
        node = Overlay(me, _Link(self, i), self.config, random.Random(self.rng.getrandbits(64)))
        self.nodes.append(node)
        self.index[me.peer_id] = i
        return node

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
            # Drop the finished ones here: their done callbacks may not have run yet, and
            # a gather of finished tasks need not yield to the loop (3.13's does not).
            self._tasks.difference_update([t for t in self._tasks if t.done()])

    def graph(self) -> nx.Graph[int]:
        graph: nx.Graph[int] = nx.Graph()
        up = [i for i in range(len(self.nodes)) if i not in self.down]
        graph.add_nodes_from(up)
        for i in up:
            for peer in self.nodes[i].active.values():
                j = self.index[peer.peer_id]
                if j not in self.down:
                    graph.add_edge(i, j)
        return graph

    def messages(self) -> int:
        return sum(sum(n.stats.sent.values()) for n in self.nodes)


class _Link:
    """`OverlayLink` for virtual peer `i`."""

    def __init__(self, net: OverlayNet, i: int) -> None:
        self.net = net
        self.i = i

    async def _there(self, target: Descriptor) -> Overlay:
        j = self.net.index[target.peer_id]
        latency = self.net.model.latency(self.i, j)
        if j in self.net.down:
            await asyncio.sleep(2 * latency)
            raise ConnectionRefusedError(f"{target.peer_id} refused the connection")
        await asyncio.sleep(latency)
        return self.net.nodes[j]

    async def _back(self, target: Descriptor) -> None:
        await asyncio.sleep(self.net.model.latency(self.i, self.net.index[target.peer_id]))

    async def join(
        self, target: Descriptor, new: Descriptor
    ) -> tuple[Descriptor, list[Descriptor]]:
        node = await self._there(target)
        offered = list(node.active.values())  # as a peer's /register answer offers them
        self.net.spawn(node.on_join(new))
        await self._back(target)
        return target, offered

    async def forward_join(
        self, target: Descriptor, new: Descriptor, ttl: int, sender: Descriptor
    ) -> None:
        node = await self._there(target)
        self.net.spawn(node.on_forward_join(new, ttl, sender))

    async def neighbor(self, target: Descriptor, me: Descriptor, high: bool) -> bool:
        node = await self._there(target)
        accepted = await node.on_neighbor(me, high)
        await self._back(target)
        return accepted

    async def disconnect(self, target: Descriptor, me: Descriptor) -> None:
        node = await self._there(target)
        self.net.spawn(node.on_disconnect(me))

    async def shuffle(
        self,
        target: Descriptor,
        origin: Descriptor,
        entries: list[Descriptor],
        ttl: int,
        sender: Descriptor,
    ) -> None:
        node = await self._there(target)
        self.net.spawn(node.on_shuffle(origin, entries, ttl, sender))

    async def shuffle_reply(
        self, target: Descriptor, me: Descriptor, entries: list[Descriptor]
    ) -> None:
        node = await self._there(target)
        self.net.spawn(node.on_shuffle_reply(entries))

    async def ping(self, target: Descriptor, me: Descriptor) -> bool:
        node = await self._there(target)
        mutual = me.peer_id in node.active
        await self._back(target)
        return mutual


@dataclass(frozen=True)
class OverlayPlan:
    peers: int
    live_s: float = 60.0  # the overlay lives this long before it is measured
    fail: float = 0.3  # then this share fails at once
    recover_s: float = 30.0  # and the rest has this long to repair


async def overlay_case(
    plan: OverlayPlan, config: OverlayConfig | None = None, seed: int = 1
) -> list[dict[str, Any]]:
    """Two rows: the overlay after the joins and `live_s`, and after the failure."""
    config = config or OverlayConfig()
    net = await joined(plan.peers, config, seed)
    loop = asyncio.get_running_loop()
    runners = [loop.create_task(n.run()) for n in net.nodes]
    try:
        await asyncio.sleep(plan.live_s / 2)  # the joins' wake settles
        before = net.messages()
        await asyncio.sleep(plan.live_s / 2)
        window = plan.live_s / 2
        rate = (net.messages() - before) / plan.peers / window
        rows = [_row(net, plan, config, churn=0.0, rate=rate, seed=seed)]
        failed = net.rng.sample(range(plan.peers), round(plan.fail * plan.peers))
        net.down = set(failed)
        for i in failed:
            runners[i].cancel()
        before = net.messages()
        await asyncio.sleep(plan.recover_s)
        live = plan.peers - len(failed)
        rate = (net.messages() - before) / live / plan.recover_s
        rows.append(_row(net, plan, config, churn=plan.fail, rate=rate, seed=seed))
    finally:
        await _stop(net, runners)
    return rows


def _row(
    net: OverlayNet, plan: OverlayPlan, config: OverlayConfig, *, churn: float, rate: float,
    seed: int,
) -> dict[str, Any]:  # fmt: skip
    graph = net.graph()
    figures = shape(graph, seed=seed)
    up = [n for i, n in enumerate(net.nodes) if i not in net.down]
    passive = sum(len(n.passive) for n in up) / len(up)
    isolated = sum(1 for n in up if not n.active)
    return {
        "overlay": "hyparview",
        "peers": plan.peers,
        "churn": churn,
        **figures,
        "isolated": isolated,
        "mean_passive": round(passive, 2),
        "membership_messages_per_peer_s": round(rate, 3),
        "active_size": config.active_size,
        "passive_size": config.passive_size,
        "seconds": plan.recover_s if churn else plan.live_s,
    }


async def active_views(
    peers: int, seed: int, config: OverlayConfig | None = None, live_s: float = 20.0
) -> list[list[int]]:
    """Each peer's active view (as peer indexes) after one-by-one joins and `live_s` of
    pings and shuffles: the overlay a search runs over."""
    net = await joined(peers, config or OverlayConfig(), seed)
    runners = [asyncio.get_running_loop().create_task(n.run()) for n in net.nodes]
    try:
        await asyncio.sleep(live_s)
    finally:
        await _stop(net, runners)
    return [[net.index[p.peer_id] for p in node.active.values()] for node in net.nodes]


async def joined(peers: int, config: OverlayConfig, seed: int) -> OverlayNet:
    net = OverlayNet(LinkModel(seed=seed), config, seed)
    for k in range(peers):
        node = net.add()
        if k:
            await node.join(net.nodes[net.rng.randrange(k)].me)
            await net.settle()
    return net


async def _stop(net: OverlayNet, runners: list[asyncio.Task[None]]) -> None:
    for task in runners:
        task.cancel()
    await asyncio.gather(*runners, return_exceptions=True)
    for task in list(net._tasks):
        task.cancel()
    await asyncio.gather(*list(net._tasks), return_exceptions=True)
