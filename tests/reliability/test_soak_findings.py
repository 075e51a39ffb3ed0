"""Deterministic reproductions of what the soak (``soak.py``) found.

The soak is random; each problem it turned up is pinned here by the smallest scenario that
shows it, so the fix can be checked without a long run.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from tests.orchestration.conftest import Derived, Single, key, keys, make_builder
from tests.reliability.conftest import settle

from coalestra.core import ResourceKey
from coalestra.testing import VirtualClock, VirtualTimeLoop

A, B = keys("A", "B")
Y0, Y1 = key("y0", name="cycle"), key("y1", name="cycle")


async def test_cancelling_a_build_of_a_dependency_cycle_does_not_spin_forever(
    clock: VirtualClock,
) -> None:
    loop = asyncio.get_running_loop()
    created = 0

    def counting(
        loop: asyncio.AbstractEventLoop, coro: Any, context: Any = None
    ) -> asyncio.Task[Any]:
        nonlocal created
        created += 1
        if created > 200:  # the loop is spinning: break it, so the test ends
            coro.close()
            raise RuntimeError("task creation runaway")
        if context is None:  # Python 3.10's Task takes no context (nor passes one)
            return asyncio.Task(coro, loop=loop)
        return asyncio.Task(coro, loop=loop, context=context)

    cycle = Derived("cycle", 1, deps=lambda k: (Y1 if k == Y0 else Y0,))
    builder = make_builder([cycle], clock)
    loop.set_task_factory(counting)  # type: ignore[arg-type]
    try:
        build = asyncio.ensure_future(builder.build([Y0]))
        await asyncio.sleep(0)  # the build owns y0, whose derivation claims y1
        build.cancel()
        await asyncio.sleep(1.0)
        await settle()
    finally:
        loop.set_task_factory(None)

    assert created < 20
    assert (await builder.health_snapshot()).singleflight_in_flight == 0
    await builder.aclose()


async def test_a_failed_revalidation_accounts_for_every_selected_key(clock: VirtualClock) -> None:
    up = {"A": True, "B": False}

    def fetch(k: ResourceKey, _c: Any) -> str:
        if not up[k.subject]:
            raise RuntimeError(f"{k.subject} is down")
        return k.subject

    builder = make_builder([Single("rest", 1, fetch)], clock)
    async with builder.session() as session:
        first = await session.resolve([A, B], strict=False)
        assert list(first.resources) == [A]
        assert list(first.errors) == [B]
        up["A"], up["B"] = False, True

        updated = await session.revalidate([A, B], strict=False, force_refresh=True)

        assert A in updated.errors  # the transient error, next to the retained value
        assert B in updated.resources or B in updated.errors
    await builder.aclose()


def test_a_busy_worker_thread_does_not_stall_ready_work_on_the_virtual_loop() -> None:
    loop = VirtualTimeLoop()
    jumping: Any = loop._selector  # type: ignore[attr-defined]
    real, ask = jumping._real, jumping.select
    waits: list[tuple[float | None, float | None]] = []  # (timeout asked, timeout used)

    class Spy:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def select(self, timeout: float | None = None) -> Any:
            waits[-1] = (waits[-1][0], timeout)
            return real.select(timeout)

    def select(timeout: float | None = None) -> Any:
        waits.append((timeout, None))
        return ask(timeout)

    jumping._real, jumping.select = Spy(), select

    async def main() -> None:
        started, release = threading.Event(), threading.Event()

        def work() -> None:
            started.set()
            release.wait(5.0)

        done = loop.run_in_executor(None, work)
        started.wait(5.0)
        waits.clear()
        for _ in range(3):
            await asyncio.sleep(0)  # ready work while the thread is busy
        blocked = [used for asked, used in waits if asked == 0 and used]
        release.set()
        await done
        assert blocked == []

    try:
        loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
