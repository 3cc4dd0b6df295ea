"""The bounded overlay (directory.overlay) over virtual peers: shape, repair, cost."""

from __future__ import annotations

import asyncio

from directory.overlay import OverlayConfig
from sim import vloop
from sim.network import LinkModel
from sim.overlay import OverlayNet, OverlayPlan, joined, overlay_case


def test_joins_one_by_one_give_one_component_of_bounded_degree() -> None:
    rows = vloop.run(overlay_case(OverlayPlan(peers=400, live_s=20, recover_s=15), seed=3))
    settled, failed = rows
    config = OverlayConfig()
    for row in rows:
        assert row["components"] == 1 and row["isolated"] == 0
        assert row["max_degree"] <= 3 * row["mean_degree"]
        assert row["max_degree"] <= config.active_size + 2  # asymmetric links at most
    assert settled["mean_degree"] >= config.active_size - 1.5
    assert failed["churn"] == 0.3


def test_a_full_contact_never_leaves_a_newcomer_isolated() -> None:
    """Tiny views, and every newcomer joins through the same peer: the contact makes room
    (demoting a neighbour to its passive view) instead of refusing."""
    config = OverlayConfig(active_size=2, passive_size=4, active_walk=3, passive_walk=1)

    async def main() -> OverlayNet:
        net = OverlayNet(LinkModel(seed=4), config, seed=4)
        contact = net.add()
        for _ in range(60):
            node = net.add()
            assert await node.join(contact.me)
            await net.settle()
        return net

    net = vloop.run(main())
    assert all(node.active for node in net.nodes)
    assert all(len(node.active) <= config.active_size for node in net.nodes)
    # (With two neighbours each the overlay is a set of paths and rings: connectivity needs
    # larger views, which test_joins_one_by_one_... and make sim show.)


def test_membership_traffic_per_peer_does_not_grow_with_the_network() -> None:
    small, large = (
        vloop.run(overlay_case(OverlayPlan(peers=n, live_s=30, recover_s=5), seed=5))[0]
        for n in (150, 900)
    )
    ratio = large["membership_messages_per_peer_s"] / small["membership_messages_per_peer_s"]
    assert 0.85 <= ratio <= 1.15


def test_the_overlay_is_deterministic_for_a_seed() -> None:
    async def views(seed: int) -> list[list[str]]:
        net = await joined(120, OverlayConfig(), seed)
        await asyncio.sleep(0)
        return [sorted(n.active) for n in net.nodes]

    assert vloop.run(views(8)) == vloop.run(views(8))
    assert vloop.run(views(8)) != vloop.run(views(9))
