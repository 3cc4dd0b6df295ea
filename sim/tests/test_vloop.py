"""The virtual-time loop: time moves only between callbacks, deadlines hold."""

from __future__ import annotations

import asyncio
import time

import pytest

from sim import vloop


def test_sleeps_and_timeouts_run_on_virtual_time() -> None:
    async def main() -> tuple[float, float, bool]:
        clock = asyncio.get_running_loop().time
        wall = time.perf_counter()
        await asyncio.sleep(3600)
        after_sleep = clock()
        timed_out = False
        try:
            async with asyncio.timeout(2):
                await asyncio.sleep(10)
        except TimeoutError:
            timed_out = True
        return after_sleep, clock(), timed_out and time.perf_counter() - wall < 5

    after_sleep, end, ok = vloop.run(main())
    assert after_sleep == pytest.approx(3600)
    assert end == pytest.approx(3602)
    assert ok


def test_cpu_work_takes_no_virtual_time() -> None:
    async def main() -> float:
        clock = asyncio.get_running_loop().time
        start = clock()
        sum(i * i for i in range(200_000))
        return clock() - start

    assert vloop.run(main()) == 0.0


def test_timers_fire_in_order_of_their_deadlines() -> None:
    async def main() -> list[int]:
        order: list[int] = []

        async def at(delay: float, tag: int) -> None:
            await asyncio.sleep(delay)
            order.append(tag)

        await asyncio.gather(at(0.3, 3), at(0.1, 1), at(0.2, 2), at(0.1, 11))
        return order

    assert vloop.run(main()) == [1, 11, 2, 3]


def test_a_program_waiting_for_ever_raises_instead_of_hanging() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(vloop.Stalled):
        vloop.run(main())
