"""Real peers as real processes on 127.0.0.x, each with its own shared folder.

`network` is one three-peer network shared by the read-only tests of a module;
tests that kill or reconfigure peers build their own with `make_network`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import NetworkFactory, build_specs

from peerfind_devnet import Devnet, PeerSpec


@pytest.fixture
def make_network(tmp_path: Path) -> Iterator[NetworkFactory]:
    """Build networks whose processes are always stopped at teardown."""
    nets: list[Devnet] = []

    def factory(specs: list[PeerSpec] | None = None, count: int = 3, **extra: Any) -> Devnet:
        net = Devnet(
            tmp_path / f"net{len(nets)}",
            specs or build_specs(tmp_path / f"net{len(nets)}", count, **extra),
        )
        nets.append(net)
        return net

    try:
        yield factory
    finally:
        for net in nets:
            net.stop()


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    root = tmp_path_factory.mktemp("network")
    # Room for one test client's 20 concurrent downloads (test_network.py); the default
    # share of one client is 16 of the 64 transfer slots.
    net = Devnet(root, build_specs(root, max_streams_per_client=20))
    with net.running():
        yield net
