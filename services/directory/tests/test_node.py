"""The Node's own threads: slow local searches cannot starve /health."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from directory.node import SEARCH_QUEUE, Node, SearchBusy
from peerfind.config import PeerSettings
from peerfind_devnet import free_port


@pytest.fixture
async def node(tmp_path: Path) -> Node:
    (tmp_path / "shared").mkdir()
    settings = PeerSettings(
        peer_id="p1",
        rest_port=free_port(),
        grpc_port=free_port(),
        shared_dir=tmp_path / "shared",
        state_dir=tmp_path / "state",
    )
    return Node(settings)


async def test_slow_searches_leave_health_its_threads_and_a_flood_of_them_is_refused(
    node: Node,
) -> None:
    release = threading.Event()

    def slow_search(query: str, limit: int) -> list[object]:
        release.wait(30)  # bounded: released below
        return []

    node.reader.try_search = lambda *args: None  # type: ignore[method-assign]
    node.reader.search = slow_search  # type: ignore[method-assign,assignment]
    searches = [asyncio.create_task(node.local_search("ab", 10)) for _ in range(SEARCH_QUEUE)]
    try:
        await asyncio.sleep(0.05)
        # More than the default executor's threads are now stuck in searches...
        health = await asyncio.wait_for(node.health(), 10)  # ...and /health still answers
        assert health.peer_id == "p1"
        with pytest.raises(SearchBusy):
            await node.local_search("ab", 10)  # the queue is full: refused at once
    finally:
        release.set()
        await asyncio.gather(*searches)
        await node.close()
