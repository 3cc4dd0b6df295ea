"""The simulated network runs the product's router: known shapes, faults, determinism."""

from __future__ import annotations

import logging

import networkx as nx
import pytest

from directory.search import FORWARD_MARGIN_S, FORWARD_SHARE
from sim import vloop
from sim.network import LinkModel, SimNetwork
from sim.runner import Case, make_world, run_case
from sim.topology import graph_of


async def _regular(n: int, d: int, seed: int, model: LinkModel | None = None) -> SimNetwork:
    net = SimNetwork(model or LinkModel(seed=seed), max_peers=d, seed=seed)
    peers = [net.add([f"file{i}.dat"]) for i in range(n)]
    for a, b in nx.random_regular_graph(d, n, seed=seed).edges():
        net.link(peers[a], peers[b])
    return net


@pytest.mark.parametrize(("d", "ttl"), [(4, 3), (6, 2), (3, 5)])
def test_a_flood_on_a_regular_graph_reaches_the_analytic_bound(d: int, ttl: int) -> None:
    """With fanout >= d the router floods: within TTL t it reaches at most
    1 + d * sum((d-1)^i, i < t) peers, and nearly that many on a large random graph
    (locally a tree)."""
    bound = 1 + d * sum((d - 1) ** i for i in range(ttl))

    async def main() -> list[int]:
        net = await _regular(20_000, d, seed=3)
        reached = []
        for entry in (net.peers[0], net.peers[777], net.peers[4242]):
            answer, _, _ = await net.search(entry, ".dat", fanout=d, ttl=ttl)
            reached.append(len(answer.peers_answered))
        return reached

    for count in vloop.run(main()):
        assert 0.9 * bound <= count <= bound


def test_the_default_flood_reaches_at_most_fifteen_peers() -> None:
    async def main() -> int:
        net = await _regular(2000, 8, seed=4)
        answer, tally, _ = await net.search(net.peers[5], ".dat", fanout=2, ttl=3)
        assert tally.requests <= 14
        return len(answer.peers_answered)

    assert 8 <= vloop.run(main()) <= 15


def test_latency_sets_the_answer_time_and_a_hung_peer_costs_the_deadline() -> None:
    model = LinkModel(latency_median_s=0.05, latency_sigma=0.0, processing_median_s=0.0)

    async def main() -> tuple[float, float, bool, int]:
        net = await _regular(50, 3, seed=5, model=model)
        entry = net.peers[0]
        _, _, quick = await net.search(entry, ".dat", fanout=3, ttl=1)
        net.hung = {net.by_id[entry.table.peers()[0].peer_id].index}
        answer, tally, slow = await net.search(entry, ".dat", fanout=3, ttl=1, timeout_ms=1000)
        return quick, slow, answer.partial, tally.lost_to_deadline

    quick, slow, partial, lost = vloop.run(main())
    assert quick == pytest.approx(0.1)  # one round trip of 2 x 50 ms
    # The hung neighbour costs the hop budget the router gives each forward.
    budget = 1.0 * FORWARD_SHARE - FORWARD_MARGIN_S
    assert slow == pytest.approx(budget, abs=0.01) and partial and lost == 1


def test_down_peers_and_loss_fail_forwards_without_failing_the_search() -> None:
    async def main() -> tuple[int, int]:
        net = await _regular(200, 4, seed=6, model=LinkModel(loss=0.3, seed=6))
        net.down = {1, 2, 3}
        failures = answered = 0
        for i in range(20):
            answer, tally, _ = await net.search(net.peers[10 + i], ".dat", fanout=4, ttl=2)
            failures += tally.forward_failures
            answered += len(answer.peers_answered)
        return failures, answered

    failures, answered = vloop.run(main())
    assert failures > 0 and answered > 20


def _figures(seed: int) -> dict[str, object]:
    async def main() -> dict[str, object]:
        world = await make_world(300, "power_law", seed=seed)
        run, _ = await run_case(world, Case(queries=60, churn=0.1, seed=seed))
        return run

    return vloop.run(main())


def test_runs_are_deterministic_for_a_seed_and_differ_across_seeds() -> None:
    first, again, other = _figures(11), _figures(11), _figures(12)
    assert first == again
    assert first != other


def test_the_membership_overlay_is_built_by_the_products_joins() -> None:
    logging.disable(logging.WARNING)
    try:

        async def main() -> tuple[int, int, int, bool]:
            world = await make_world(120, "membership", seed=2)
            net = world.net
            assert all(p.membership is not None for p in net.peers)
            # Every join went through verified joins and their walks: the tables are
            # the active views, within their bound, symmetric, and one component.
            sizes = [len(p.table) for p in net.peers]
            graph = graph_of(net)
            symmetric = all(
                p.peer_id in net.by_id[q.peer_id].table for p in net.peers for q in p.table.peers()
            )
            return max(sizes), min(sizes), nx.number_connected_components(graph), symmetric

        biggest, smallest, components, symmetric = vloop.run(main())
    finally:
        logging.disable(logging.NOTSET)
    assert biggest <= 6 and smallest >= 1
    assert components == 1 and symmetric
