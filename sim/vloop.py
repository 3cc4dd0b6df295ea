"""An asyncio event loop on virtual time.

The loop's clock (`loop.time()`, which `asyncio.sleep`, `asyncio.timeout` and
`asyncio.wait` all use) starts at 0 and only moves when no callback is ready: it then
jumps straight to the next timer. So the product's async code runs unchanged, its
deadlines included, and the simulator's own CPU never eats a deadline (no real time
passes on the virtual clock while code runs).

There is no real I/O: the selector never reports a file ready. A loop with nothing
ready and no timer left would wait for ever; it raises `Stalled` instead.

Why our own and not `looptime`: looptime keeps real I/O working, so before each jump it
polls the real selector for dozens of no-op cycles; with no I/O at all a jump can be
one addition (docs/scale.md, "the instrument").
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

__all__ = ["Stalled", "VirtualTimeLoop", "run"]

_T = TypeVar("_T")


class Stalled(RuntimeError):
    """Nothing is ready and nothing is scheduled: the simulated program would hang."""


class _NoIoSelector(selectors.BaseSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop
        self._keys: dict[Any, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise Stalled("no callback is ready and no timer is scheduled")
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return dict(self._keys)

    def close(self) -> None:
        self._keys.clear()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._now = 0.0
        super().__init__(selector=_NoIoSelector(self))

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """`asyncio.run(main)` on a new virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()
