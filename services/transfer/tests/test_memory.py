"""The heap is trimmed once the last transfer ends, not while others run."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from peerfind.v1 import transfer_pb2
from transfer import server
from transfer.memory import few_arenas, heap_trimmer

Waiter = Callable[..., Awaitable[None]]
WITHIN_S = 15.0


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_has_a_trimmer_that_runs() -> None:
    trim = heap_trimmer()
    assert trim is not None
    assert trim() in (True, False)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_few_arenas_unless_the_operator_chose_a_number() -> None:
    # In a process of its own: the setting is the process's, for good.
    code = (
        "from transfer.memory import few_arenas; "
        "print(few_arenas(environ={}), few_arenas(environ={'MALLOC_ARENA_MAX': '4'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
    assert few_arenas(None) is False
    assert few_arenas("libpeerfind-no-such-library.so", environ={}) is False


def test_no_trimmer_without_a_malloc_trim() -> None:
    assert heap_trimmer("libpeerfind-no-such-library.so") is None
    assert heap_trimmer(None) is None


@pytest.fixture
def trims(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls of the trimmer the next started server gets (instead of malloc_trim),
    with no wait after the last stream (a test may set server.IDLE_DELAY_S)."""
    calls: list[int] = []
    monkeypatch.setattr(server, "heap_trimmer", lambda: lambda: calls.append(1) or True)
    monkeypatch.setattr(server, "IDLE_DELAY_S", 0.0)
    return calls


async def test_the_heap_is_trimmed_once_the_last_stream_ends(
    make_peer: Any, trims: list[int], wait_for: Waiter
) -> None:
    peer = await make_peer()
    servicer = peer.running.servicer
    first, second = peer.stub.DummyUpload(), peer.stub.DummyUpload()
    for call in (first, second):
        await call.write(transfer_pb2.FileChunk(data=bytes(1000), name="up"))
    await wait_for(lambda: servicer.active_streams == 2, WITHIN_S, "both uploads to start")

    await first.done_writing()
    assert (await first).bytes_received == 1000
    await wait_for(lambda: servicer.active_streams == 1, WITHIN_S, "the first to end")
    assert trims == []  # one stream still runs

    await second.done_writing()
    assert (await second).bytes_received == 1000
    await wait_for(lambda: trims == [1], WITHIN_S, "the trim after the last stream")
    assert servicer.active_streams == 0


async def test_each_idle_moment_trims_once(
    make_peer: Any, trims: list[int], wait_for: Waiter
) -> None:
    peer = await make_peer()
    for n in (1, 2):
        chunks = await peer.download("movie.mkv")
        assert chunks
        await wait_for(lambda n=n: len(trims) == n, WITHIN_S, f"trim number {n}")
    assert trims == [1, 1]


async def test_the_trim_waits_for_the_idle_delay(
    make_peer: Any, trims: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "IDLE_DELAY_S", 3600.0)
    peer = await make_peer()
    for _ in range(2):  # back to back, as `peerfind get` fetches piece after piece
        assert await peer.download("movie.mkv")
    assert peer.running.servicer.active_streams == 0
    assert trims == []  # not between the streams, nor right after the last one
