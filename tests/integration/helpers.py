"""Shared helpers of the integration tests (on pytest's pythonpath)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from peerfind.devnet import REPO_ROOT, Devnet, PeerSpec, free_port, standard_specs

# Fast clocks so pruning and staleness happen within a test's deadline.
FAST = {
    "heartbeat_interval_s": 0.5,
    "peer_ttl_s": 3.0,
    "bootstrap_retry_s": 1.0,
    "bootstrap_attempts": 2,
    "index_stale_after_s": 5.0,
    "request_timeout_s": 1.0,
    "search_timeout_ms": 2000,
    "rescan_interval_s": 30.0,
    "log_format": "text",
}
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]

NetworkFactory = Callable[..., Devnet]


def make_shared(root: Path, count: int) -> list[Path]:
    """A copy of the sample folders (tests write into them)."""
    dirs = []
    for i in range(1, count + 1):
        target = root / f"shared{i}"
        sample = REPO_ROOT / "deploy" / "samples" / f"peer{i}"
        if sample.exists():
            shutil.copytree(sample, target)
        else:
            target.mkdir(parents=True)
            (target / f"hello{i}.txt").write_text(f"hello from peer{i}\n")
        dirs.append(target)
    return dirs


def build_specs(root: Path, count: int = 3, **extra: Any) -> list[PeerSpec]:
    hosts = HOSTS[:count]
    return standard_specs(
        root,
        count=count,
        hosts=hosts,
        rest_ports=[free_port(h) for h in hosts],
        grpc_ports=[free_port(h) for h in hosts],
        shared_dirs=make_shared(root, count),
        extra={**FAST, **extra},
    )


def get(url: str, **params: Any) -> Any:
    response = httpx.get(url, params=params, timeout=10, trust_env=False)
    assert response.status_code == 200, response.text
    return response.json()
