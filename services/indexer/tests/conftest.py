"""Shared fixtures of the indexer tests: a clean environment, settings, deadline polling."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import peerfind_devnet as devnet
from peerfind.config import PeerSettings

DEADLINE_S = 10.0
POLL_S = 0.02


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PEER_CONFIG / PEERFIND_* from the outer environment leaks into a test."""
    for key in list(os.environ):
        if key == "PEER_CONFIG" or key.startswith("PEERFIND_"):
            monkeypatch.delenv(key)


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    path = tmp_path / "shared"
    path.mkdir()
    return path


@pytest.fixture
def make_settings(tmp_path: Path, shared: Path) -> Callable[..., PeerSettings]:
    """PeerSettings for peer p1 on `shared`, with a state dir under tmp_path."""

    def make(**overrides: Any) -> PeerSettings:
        values: dict[str, Any] = {
            "peer_id": "p1",
            "shared_dir": shared,
            "state_dir": tmp_path / "state",
            "rescan_interval_s": 300.0,
            "index_stale_after_s": 1.5,
            "log_format": "text",
        }
        values.update(overrides)
        return PeerSettings(**values)

    return make


Condition = Callable[[], object]


@pytest.fixture
def eventually() -> Callable[..., Awaitable[Any]]:
    """`await eventually(cond)`: poll `cond` until truthy (returned) or 10 s."""

    async def wait(cond: Condition, within: float = DEADLINE_S, what: str = "") -> Any:
        return await devnet.eventually(cond, within, POLL_S, what or repr(cond))

    return wait


@pytest.fixture
def eventually_sync() -> Callable[..., Any]:
    """The blocking twin of `eventually`, for tests that drive subprocesses."""

    def wait(cond: Condition, within: float = DEADLINE_S, what: str = "") -> Any:
        return devnet.wait_for(cond, within, POLL_S, what or repr(cond))

    return wait
