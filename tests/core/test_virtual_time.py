"""The virtual-time loop the whole suite stands on: timers jump, threads are waited for."""

from __future__ import annotations

import asyncio
import time

from coalestra._compat import timeout
from coalestra.testing import VirtualClock


async def test_sleep_jumps_virtual_time(clock: VirtualClock) -> None:
    start = clock.monotonic()
    real_start = time.perf_counter()
    await asyncio.sleep(3600)
    assert clock.monotonic() - start == 3600
    assert time.perf_counter() - real_start < 5  # generous: an hour must not be waited for


async def test_timeout_fires_at_virtual_deadline(clock: VirtualClock) -> None:
    start = clock.monotonic()
    try:
        async with timeout(2.5):
            await asyncio.sleep(10)
    except TimeoutError:
        pass
    assert clock.monotonic() - start == 2.5


async def test_thread_work_does_not_advance_virtual_time(clock: VirtualClock) -> None:
    start = clock.monotonic()

    def work() -> str:
        time.sleep(0.01)
        return "done"

    async with timeout(1.0):
        assert await asyncio.to_thread(work) == "done"
    assert clock.monotonic() == start


async def test_now_is_epoch_plus_loop_time() -> None:
    clock = VirtualClock(epoch=1000.0)
    assert clock.now() == 1000.0 + asyncio.get_running_loop().time()
