"""The dev harness: a network of real peers as local processes (three processes per peer).

Used by `make local-up` / `make local-down`, the integration tests, the benchmarks
and the demo; never installed into a container. `python -m peerfind_devnet` runs the
local network (see `_cli`); `peerfind_devnet.fakes` holds fake peers for client tests.

    with Devnet(root, standard_specs(root)).running() as net:
        wait_for(lambda: net["peer3"].health()["index"]["files"], what="peer3's index")

Modules: `_wait` (poll with a deadline, TCP probes), `_peers` (a peer's config and
processes, several peers together), `_cli` (`python -m peerfind_devnet`).
"""

from __future__ import annotations

from peerfind_devnet._peers import (
    MAX_PEERS,
    PERF_ENV,
    REPO_ROOT,
    SERVICES,
    Devnet,
    PeerProcesses,
    PeerSpec,
    local_specs,
    loopback_specs,
    make_local_shares,
    peer_count,
    standard_specs,
)
from peerfind_devnet._wait import DEFAULT_DEADLINE_S, accepts, eventually, free_port, wait_for

__all__ = [
    "DEFAULT_DEADLINE_S",
    "MAX_PEERS",
    "PERF_ENV",
    "REPO_ROOT",
    "SERVICES",
    "Devnet",
    "PeerProcesses",
    "PeerSpec",
    "accepts",
    "eventually",
    "free_port",
    "local_specs",
    "loopback_specs",
    "make_local_shares",
    "peer_count",
    "standard_specs",
    "wait_for",
]
