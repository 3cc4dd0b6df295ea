"""HyParView's decisions (directory.overlay) against a scripted fake link."""

from __future__ import annotations

import random

from directory.overlay import Descriptor, Overlay, OverlayConfig


def peer(n: int) -> Descriptor:
    return Descriptor(f"p{n}", f"http://10.0.0.{n}:8000")


class Link:
    """Records every message; `down` peers raise, `refuse` peers answer NEIGHBOR no."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.down: set[str] = set()
        self.refuse: set[str] = set()

    def _go(self, kind: str, target: Descriptor) -> None:
        self.sent.append((kind, target.peer_id))
        if target.peer_id in self.down:
            raise ConnectionRefusedError(target.peer_id)

    async def join(
        self, target: Descriptor, new: Descriptor
    ) -> tuple[Descriptor, list[Descriptor]]:
        self._go("join", target)
        return target, []

    async def forward_join(
        self, target: Descriptor, new: Descriptor, ttl: int, sender: Descriptor
    ) -> None:
        self._go("forward_join", target)

    async def neighbor(self, target: Descriptor, me: Descriptor, high: bool) -> bool:
        self._go("neighbor", target)
        return high or target.peer_id not in self.refuse

    async def disconnect(self, target: Descriptor, me: Descriptor) -> None:
        self._go("disconnect", target)

    async def shuffle(
        self,
        target: Descriptor,
        origin: Descriptor,
        entries: list[Descriptor],
        ttl: int,
        sender: Descriptor,
    ) -> None:
        self._go("shuffle", target)

    async def shuffle_reply(
        self, target: Descriptor, me: Descriptor, entries: list[Descriptor]
    ) -> None:
        self._go("shuffle_reply", target)

    async def ping(self, target: Descriptor, me: Descriptor) -> bool:
        self._go("ping", target)
        return True


def overlay(active: int = 3, passive: int = 5) -> tuple[Overlay, Link]:
    link = Link()
    config = OverlayConfig(active_size=active, passive_size=passive)
    return Overlay(peer(0), link, config, random.Random(1)), link


async def test_a_full_active_view_makes_room_instead_of_refusing() -> None:
    node, link = overlay(active=2)
    for n in (1, 2, 3):
        await node.on_join(peer(n))
    assert len(node.active) == 2 and "p3" in node.active
    demoted = next(p for p in ("p1", "p2") if p not in node.active)
    assert demoted in node.passive
    assert ("disconnect", demoted) in link.sent
    # The newcomer's walk went to the other neighbours, not back to the newcomer.
    assert ("forward_join", "p3") not in link.sent


async def test_low_priority_neighbour_requests_are_refused_when_full_high_ones_never() -> None:
    node, _ = overlay(active=2)
    await node.on_join(peer(1))
    await node.on_join(peer(2))
    assert not await node.on_neighbor(peer(3), high=False)
    assert "p3" in node.passive and "p3" not in node.active
    assert await node.on_neighbor(peer(4), high=True)
    assert "p4" in node.active and len(node.active) == 2


async def test_a_failed_neighbour_is_replaced_from_the_passive_view() -> None:
    node, link = overlay(active=2, passive=5)
    await node.on_join(peer(1))
    await node.on_join(peer(2))
    for n in (5, 6):
        node._add_passive(peer(n))
    link.down.add("p5")  # a stale passive entry: tried, then forgotten
    await node.failed("p1")
    assert "p1" not in node.active and len(node.active) == 2
    assert "p6" in node.active and "p5" not in node.passive
    assert node.stats.failures == 1 and node.stats.replacements == 1


async def test_pings_detect_failures_and_cost_one_message_per_neighbour() -> None:
    node, link = overlay(active=3, passive=5)
    for n in (1, 2, 3):
        await node.on_join(peer(n))
    link.sent.clear()
    await node.ping_neighbours()
    assert sorted(t for k, t in link.sent if k == "ping") == ["p1", "p2", "p3"]
    link.down.add("p2")
    await node.ping_neighbours()
    assert "p2" not in node.active


async def test_the_passive_view_stays_bounded_and_never_holds_active_peers_or_self() -> None:
    node, _ = overlay(active=2, passive=3)
    await node.on_join(peer(1))
    await node.on_shuffle_reply([peer(n) for n in range(0, 12)])
    assert len(node.passive) == 3
    assert "p0" not in node.passive and "p1" not in node.passive


async def test_a_flood_of_joins_never_displaces_friends_the_longest_serving_or_tried_peers() -> (
    None
):
    """Eclipse: 300 sybils join one after another. The friend (`keep`) and the three
    longest-serving neighbours stay; real neighbours demoted to the passive view after
    serving a while (tried) are not flushed out by the sybils' hearsay."""
    link = Link()
    config = OverlayConfig(active_size=6, passive_size=12, protected=3)
    node = Overlay(peer(0), link, config, random.Random(1), keep=lambda p: p.peer_id == "p1")
    for n in range(1, 7):
        await node.on_join(peer(n))
    for peer_id in node._since:  # they have served for a while
        node._since[peer_id] -= 100
    await node.on_join(peer(7))  # a real newcomer takes one of the two free places
    demoted = {f"p{n}" for n in range(5, 8)} - set(node.active)
    assert demoted and demoted <= set(node.passive) and demoted <= node._tried
    for n in range(100, 400):
        await node.on_join(peer(n))
        await node.on_shuffle(peer(n), [peer(n + 1000), peer(n + 2000)], 0, peer(n))
    assert {"p1", "p2", "p3", "p4"} <= set(node.active)  # the friend and the three oldest
    assert demoted <= set(node.passive)  # tried entries survived 600 sybil entries
    assert len(node.active) <= 6 and len(node.passive) <= 12
