"""Fixtures: a peer's settings on temp dirs, and an in-process app client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from directory.app import create_app
from peerfind.config import PeerSettings
from peerfind.index import FileEntry, IndexWriter
from peerfind_devnet import free_port


@pytest.fixture
def settings(tmp_path: Path) -> PeerSettings:
    (tmp_path / "shared").mkdir()
    return PeerSettings(
        peer_id="p1",
        host="127.0.0.1",
        rest_port=free_port(),
        grpc_port=free_port(),
        shared_dir=tmp_path / "shared",
        state_dir=tmp_path / "state",
        request_timeout_s=0.5,
        peer_networks=["127.0.0.0/8"],
    )


@pytest.fixture
def writer(settings: PeerSettings) -> Iterator[IndexWriter]:
    w = IndexWriter(settings.index_path)
    w.replace_all(
        [
            FileEntry("hello1.txt", "hello1.txt", 17, 1.5),
            FileEntry("docs/readme.TXT", "readme.TXT", 5, 2.5),
            FileEntry("b.bin", "b.bin", 7, 3.5),
        ]
    )
    w.heartbeat()
    yield w
    w.close()


@pytest.fixture
def client(settings: PeerSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c
