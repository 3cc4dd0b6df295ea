"""`python -m sim`: the default set of simulated runs, written to sim/results/.

    python -m sim                      # 1,000 and 10,000 peers (make sim)
    python -m sim --quick              # 150 peers, a few queries: for tests
    python -m sim --peers 100000       # the large size (memory: see docs/scale.md)

Writes `latest.json` ({"runs": [...], "worlds": [...], "meta": {...}}) and the charts
`recall_vs_messages.png` and `load.png`.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from directory.overlay import OverlayConfig
from sim import vloop
from sim.overlay import OverlayPlan, overlay_case
from sim.runner import Case, World, make_world, run_case
from sim.topology import TOPOLOGIES

RESULTS = Path(__file__).resolve().parent / "results"
GRID_FANOUTS = (2, 3, 4, 6, 8)
GRID_TTLS = (2, 3, 4, 5)
GRID_QUERIES = 200
TARGET_SUCCESS = 0.95


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    queries: int
    grid_queries: int
    seed: int = 1
    load_queries: int = 5000
    overlay_live_s: float = 40.0
    overlay_recover_s: float = 20.0
    active_sizes: tuple[int, ...] = (3, 4, 5, 6, 8)  # the view-size sweep, at the smallest size


def _cases(plan: Plan, size: int, topology: str) -> Iterator[tuple[str, Case]]:
    """The runs of one world; the grid is decided as it goes (see `_grid`)."""
    base = Case(queries=plan.queries, seed=plan.seed + 6)
    yield "defaults", base
    if topology != "membership":
        return
    for replication in (0.001, 0.1):
        yield "replication", replace(base, replication=replication)
    yield "popularity", replace(base, popularity="zipf")
    for churn in (0.1, 0.3):
        yield "churn", replace(base, churn=churn)
    # The shipped default (mode auto, every parameter the peer's: one hit wanted), on every
    # workload; then three hits wanted; then each mode with its defaults.
    auto = replace(base, mode="auto", fanout=None, ttl=None)
    for replication in (0.01, 0.001, 0.1):
        yield "adaptive", replace(auto, replication=replication)
    yield "adaptive", replace(auto, popularity="zipf")
    yield "adaptive", replace(auto, churn=0.2)
    for replication in (0.01, 0.001):
        yield "adaptive", replace(auto, replication=replication, wanted=3)
    for mode in ("flood", "walk", "dynamic"):
        for replication in (0.01, 0.001):
            yield "modes", replace(auto, mode=mode, replication=replication)


async def _grid(world: World, plan: Plan, log: Any) -> list[dict[str, Any]]:
    """The flood as it was before summaries (the baseline the adaptive modes are judged
    against), (fanout, ttl) pairs at 1% replication: for each fanout, TTLs up from 2 until
    success reaches 95% (a longer TTL then only costs more)."""
    runs = []
    for fanout in GRID_FANOUTS:
        for ttl in GRID_TTLS:
            case = Case(
                queries=plan.grid_queries,
                fanout=fanout,
                ttl=ttl,
                summaries=False,
                seed=plan.seed + 8,
            )
            run = await _run(world, case, "grid", log)
            runs.append(run)
            if run["success_rate"] >= TARGET_SUCCESS:
                break
    return runs


async def _run(world: World, case: Case, group: str, log: Any) -> dict[str, Any]:
    started = time.perf_counter()
    run, loads = await run_case(world, case)
    run["group"] = group
    run["wall_s"] = round(time.perf_counter() - started, 2)
    log(
        f"  {group:11} {world.topology:14} n={run['peers']:<6} {run['resolved']['mode']:7} "
        f"f={run['resolved']['fanout']} t={run['resolved']['ttl']} want={case.wanted} "
        f"r={case.replication:<5} churn={case.churn:<4} {case.popularity:7} "
        f"success={run['success_rate']:.3f} recall={run['recall']:.4f} "
        f"msgs={run['messages_per_query']:.1f} ({run['wall_s']} s)"
    )
    if group == "defaults":
        run["_loads"] = loads
    return run


async def simulate(plan: Plan, log: Any) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    worlds: list[dict[str, Any]] = []
    for size in plan.sizes:
        for topology in TOPOLOGIES:
            started = time.perf_counter()
            world = await make_world(size, topology, seed=plan.seed)
            built = round(time.perf_counter() - started, 1)
            worlds.append(
                {
                    "peers": size,
                    "topology": topology,
                    **world.shape,
                    "join_virtual_s": round(world.build_s, 1),
                    "build_wall_s": built,
                }
            )
            log(f"{topology} x {size}: built in {built} s: {world.shape}")
            for group, case in _cases(plan, size, topology):
                runs.append(await _run(world, case, group, log))
            if size == max(plan.sizes) and topology == "membership":
                runs.extend(await _grid(world, plan, log))
                # Every peer's load over many queries: a hot spot shows above the noise.
                load = Case(queries=plan.load_queries, mode="auto", fanout=None, ttl=None)
                runs.append(await _run(world, load, "load", log))
            del world
    overlay = await _overlays(plan, log)
    return {"runs": runs, "worlds": worlds, "overlay": overlay}


async def _overlays(plan: Plan, log: Any) -> list[dict[str, Any]]:
    """The bounded overlay (directory.overlay): its shape and traffic at every size, after
    one-by-one joins and after 30% of the peers fail at once; and a sweep of active-view
    sizes (passive = 6x active) at the smallest size."""
    rows: list[dict[str, Any]] = []
    cases = [(size, OverlayConfig()) for size in plan.sizes]
    cases += [
        (min(plan.sizes), OverlayConfig(active_size=a, passive_size=6 * a))
        for a in plan.active_sizes
        if a != OverlayConfig().active_size
    ]
    for size, config in cases:
        started = time.perf_counter()
        overlay_plan = OverlayPlan(
            peers=size, live_s=plan.overlay_live_s, recover_s=plan.overlay_recover_s
        )
        for row in await overlay_case(overlay_plan, config, seed=plan.seed):
            row["wall_s"] = round(time.perf_counter() - started, 1)
            row["group"] = "overlay" if config == OverlayConfig() else "view_sizes"
            rows.append(row)
            log(
                f"  overlay     active={config.active_size} n={size:<6} churn={row['churn']:<4} "
                f"components={row['components']} degree={row['mean_degree']}/{row['max_degree']} "
                f"path={row['mean_path_length']} msgs/peer/s="
                f"{row['membership_messages_per_peer_s']} ({row['wall_s']} s)"
            )
    return rows


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="150 peers, a few queries (tests)")
    parser.add_argument("--peers", help="comma-separated sizes (default 1000,10000)")
    parser.add_argument("--queries", type=int, help="queries per run (default 1000)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--no-charts", action="store_true")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the product's per-peer warnings: counted, not logged
    if args.quick:
        plan = Plan(
            sizes=(150,),
            queries=40,
            grid_queries=20,
            load_queries=80,
            overlay_live_s=20,
            active_sizes=(4,),
        )
    else:
        plan = Plan(sizes=(1000, 10000), queries=1000, grid_queries=GRID_QUERIES)
    if args.peers:
        try:
            sizes = tuple(int(p) for p in args.peers.split(","))
        except ValueError:
            parser.error("--peers takes comma-separated numbers")
        if any(s < 10 for s in sizes):
            parser.error("--peers: at least 10 peers")
        plan = replace(plan, sizes=sizes)
    if args.queries is not None:
        if args.queries < 1:
            parser.error("--queries must be positive")
        plan = replace(plan, queries=args.queries)

    def log(line: str) -> None:
        print(line, flush=True)

    started = time.perf_counter()
    result = vloop.run(simulate(plan, log))
    wall = time.perf_counter() - started
    loads = {
        f"{r['topology']} x {r['peers']}": r.pop("_loads") for r in result["runs"] if "_loads" in r
    }
    result["meta"] = {
        "commit": _commit(),
        "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "python": platform.python_version(),
        "wall_s": round(wall, 1),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "sizes": list(plan.sizes),
        "queries": plan.queries,
        "grid_queries": plan.grid_queries,
        "seed": plan.seed,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(result, indent=1) + "\n")
    if not args.no_charts:
        from sim.charts import draw

        draw(result, loads, args.out)
    rss = result["meta"]["max_rss_mib"]
    log(f"wrote {args.out / 'latest.json'} in {wall:.1f} s, max RSS {rss} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
