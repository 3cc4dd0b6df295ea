"""Membership at the sizes where it used to break: 30 and 50 real peers on 127.0.3.x.

Each peer is the three real processes with default membership settings (active view 6,
passive 36, pings every 5 s, shuffles every 10 s) and the standard wiring (peerK joins
through peerK-1, backup peer1). Measured:

- `overlay.start_converge_30` / `_50`: seconds from the first process started to an
  overlay that `Devnet.wait_converged` accepts (symmetric, connected, all alive);
- `overlay.idle_cores_30`: CPU of all the peers' processes together over IDLE_S at rest
  (the sum of their user + system time, over wall time), aim < 0.5 core (the full-mesh
  membership this replaced used 1.5 of this machine's 2 cores at 30 peers);
- `overlay.partial_at_rest_30`: searches with the default fanout and TTL from every peer
  at rest that came back partial (aim: none);
- `overlay.recover_30pct`: seconds from SIGKILL of 30% of the peers (every third from
  peer3: 10 of 30) to the first complete answer (no peer failed, every live peer answered) of a
  search that floods the views (fanout 6, TTL 5) from peer1, aim <= 10 s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

from bench.core import PERF_ENV, Context, Result
from peerfind_devnet import Devnet, loopback_specs

__all__ = ["run"]

IDLE_S = 60.0
IDLE_AIM_CORES = 0.5
RECOVER_AIM_S = 10.0
CONVERGE_DEADLINE_S = 600.0


def _network(root: Path, count: int) -> Devnet:
    hosts = [f"127.0.3.{k}" for k in range(1, count + 1)]
    shares = []
    for k in range(1, count + 1):
        share = root / "shares" / f"peer{k}"
        share.mkdir(parents=True, exist_ok=True)
        (share / f"hello{k}.txt").write_text(f"hello from peer{k}\n")
        shares.append(share)
    specs = loopback_specs(root, hosts, shares, {"log_format": "text", "log_level": "WARNING"})
    return Devnet(root, specs, env=PERF_ENV)


def _cpu_seconds(net: Devnet) -> float:
    total = 0.0
    for peer in net.peers.values():
        for pid in peer.pids().values():
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def _search(url: str, **params: Any) -> dict[str, Any]:
    params.setdefault("mode", "flood")  # what these figures measure: the flood's reach
    answer = httpx.get(f"{url}/search", params=params, timeout=15, trust_env=False)
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    return body


def _start(net: Devnet, ctx: Context, count: int) -> float:
    started = time.perf_counter()
    net.start(deadline_s=CONVERGE_DEADLINE_S)
    net.wait_converged(deadline_s=CONVERGE_DEADLINE_S)
    took = time.perf_counter() - started
    ctx.log(f"{count} peers started and converged in {took:.0f} s")
    return took


def _thirty(ctx: Context) -> list[Result]:
    count = 30
    net = _network(ctx.scratch("overlay30"), count)
    try:
        took = _start(net, ctx, count)
        idle_s = 15.0 if ctx.quick else IDLE_S
        time.sleep(5.0)  # past the joins' wake
        cpu0, wall0 = _cpu_seconds(net), time.perf_counter()
        time.sleep(idle_s)
        cores = (_cpu_seconds(net) - cpu0) / (time.perf_counter() - wall0)
        partial = 0
        reached = []
        for peer in net.peers.values():
            body = _search(peer.spec.url, query="hello")
            partial += bool(body["partial"])
            reached.append(len(body["peers_answered"]))
        ctx.log(f"30 peers idle: {cores:.3f} cores; {partial} of {count} searches partial")
        victims = [f"peer{k}" for k in range(3, count + 1, 3)]
        for peer_id in victims:
            net[peer_id].kill()
        killed_at = time.perf_counter()
        live = {p for p in net.peers if p not in victims}
        recovered = None
        while time.perf_counter() - killed_at < 120:  # bounded
            body = _search(net["peer1"].spec.url, query="hello", fanout=6, ttl=5)
            if not body["partial"] and set(body["peers_answered"]) == live:
                recovered = time.perf_counter() - killed_at
                break
            time.sleep(0.25)
        ctx.log(f"{len(victims)} of {count} killed: complete again after {recovered} s")
    finally:
        net.stop()
    return [
        Result.absolute(
            "overlay.start_converge_30",
            took,
            "s",
            below=CONVERGE_DEADLINE_S,
            aim="converges (the full mesh took 230 s to start)",
            context={"what": "30 real peers started one by one until the overlay converged"},
        ),
        Result.absolute(
            "overlay.idle_cores_30",
            cores,
            "cores",
            below=IDLE_AIM_CORES,
            aim=f"< {IDLE_AIM_CORES} core (full mesh: 1.5)",
            context={"what": f"CPU of 30 peers' 90 processes at rest, over {idle_s:.0f} s"},
        ),
        Result.absolute(
            "overlay.partial_at_rest_30",
            partial,
            "searches",
            below=1,
            aim="none partial (full mesh: 17.5%)",
            context={
                "what": "default searches (fanout 2, TTL 3) from each of 30 peers at rest",
                "peers_answered": reached,
            },
        ),
        Result.absolute(
            "overlay.recover_30pct",
            recovered if recovered is not None else float("inf"),
            "s",
            below=RECOVER_AIM_S + 1e-9,
            aim=f"<= {RECOVER_AIM_S:.0f} s",
            context={"what": "SIGKILL of 10 of 30 peers to the first complete flood answer"},
        ),
    ]


def _fifty(ctx: Context) -> list[Result]:
    count = 20 if ctx.quick else 50
    net = _network(ctx.scratch("overlay50"), count)
    try:
        took = _start(net, ctx, count)
        cpu0, wall0 = _cpu_seconds(net), time.perf_counter()
        time.sleep(15.0)
        cores = (_cpu_seconds(net) - cpu0) / (time.perf_counter() - wall0)
        ctx.log(f"{count} peers idle: {cores:.3f} cores")
    finally:
        net.stop()
    return [
        Result.absolute(
            f"overlay.start_converge_{count}",
            took,
            "s",
            below=CONVERGE_DEADLINE_S,
            aim="converges",
            context={
                "what": f"{count} real peers started one by one until the overlay converged",
                "idle_cores": round(cores, 3),
            },
        ),
    ]


def run(ctx: Context) -> list[Result]:
    return [*_thirty(ctx), *_fifty(ctx)]
