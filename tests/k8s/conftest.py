"""Fixtures of tests/k8s (the helpers are in k8skit.py, beside this file): the base and
the overlay, rendered once per session by the kubectl of the venv."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# k8skit sits beside this file, peer_config.py in deploy/k8s/base; imported by name.
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "deploy" / "k8s" / "base"))

from k8skit import BASE_DIR, OVERLAYS_DIR, Manifest, kustomize  # noqa: E402


def overlays() -> list[Path]:
    return sorted(p for p in OVERLAYS_DIR.iterdir() if (p / "kustomization.yaml").exists())


@pytest.fixture(scope="session")
def base_docs() -> list[Manifest]:
    return kustomize(BASE_DIR)


@pytest.fixture(scope="session")
def peers_docs() -> list[Manifest]:
    """The overlay for N peers (overlays/peers)."""
    return kustomize(OVERLAYS_DIR / "peers")


@pytest.fixture(scope="session", params=["base", *(p.name for p in overlays())])
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    """(name, objects) for the base and every overlay."""
    name = str(request.param)
    return name, kustomize(BASE_DIR if name == "base" else OVERLAYS_DIR / name)
