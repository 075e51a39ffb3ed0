"""CapacityLimiter: bounded, FIFO-fair, fast when free, and leak-free under cancellation."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest

from coalestra._compat import timeout, timeout_at
from coalestra.concurrency import CapacityLimiter, CapacitySnapshot
from coalestra.testing import VirtualClock


async def settle() -> None:
    """Let every ready callback run (handoffs and cancellations take a few loop steps)."""
    for _ in range(50):
        await asyncio.sleep(0)


def idle(limiter: CapacityLimiter) -> bool:
    return limiter.snapshot_now() == CapacitySnapshot(limiter.limit, 0, 0)


# --- construction and snapshots ---------------------------------------------------------------


def test_constructs_outside_an_event_loop() -> None:
    limiter = CapacityLimiter(2)
    assert limiter.snapshot_now() == CapacitySnapshot(limit=2, in_use=0, waiting=0)
    assert (limiter.limit, limiter.in_use, limiter.waiting) == (2, 0, 0)


@pytest.mark.parametrize("limit", [0, -1])
def test_limit_below_one_is_a_value_error(limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        CapacityLimiter(limit)


@pytest.mark.parametrize("limit", ["3", 2.0, True, None])
def test_non_int_limit_is_a_type_error(limit: object) -> None:
    with pytest.raises(TypeError, match="limit"):
        CapacityLimiter(limit)  # type: ignore[arg-type]


def test_capacity_snapshot_is_a_validated_frozen_slotted_value() -> None:
    snap = CapacitySnapshot(limit=3, in_use=1, waiting=2)
    assert dataclasses.astuple(snap) == (3, 1, 2)
    assert not hasattr(snap, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.in_use = 2  # type: ignore[misc]
    with pytest.raises(ValueError, match="limit"):
        CapacitySnapshot(0, 0, 0)
    with pytest.raises(ValueError, match="in_use"):
        CapacitySnapshot(1, -1, 0)
    with pytest.raises(ValueError, match="waiting"):
        CapacitySnapshot(1, 0, -1)
    with pytest.raises(TypeError, match="waiting"):
        CapacitySnapshot(1, 0, 1.5)  # type: ignore[arg-type]


async def test_snapshot_reports_holders_and_waiters() -> None:
    limiter = CapacityLimiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await settle()
    assert await limiter.snapshot() == CapacitySnapshot(limit=1, in_use=1, waiting=1)
    assert limiter.snapshot_now() == CapacitySnapshot(limit=1, in_use=1, waiting=1)
    assert "in_use=1" in repr(limiter)
    limiter.release()
    await waiter
    limiter.release()
    assert idle(limiter)


# --- acquire / release ------------------------------------------------------------------------


async def test_uncontended_acquire_neither_suspends_nor_creates_a_future(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_futures() -> asyncio.Future[None]:
        raise AssertionError("the fast path created a future")

    monkeypatch.setattr(asyncio.get_running_loop(), "create_future", no_futures)
    limiter = CapacityLimiter(2)
    for _ in range(2):
        coro = limiter.acquire()
        with pytest.raises(StopIteration):
            coro.send(None)  # finishing on the first step proves it never suspended
    assert limiter.in_use == 2


async def test_release_without_acquire_is_a_runtime_error() -> None:
    limiter = CapacityLimiter(1)
    with pytest.raises(RuntimeError, match="without a matching acquire"):
        limiter.release()
    await limiter.acquire()
    limiter.release()
    with pytest.raises(RuntimeError):
        limiter.release()
    assert idle(limiter)


async def test_slot_releases_on_exception() -> None:
    limiter = CapacityLimiter(1)

    async def body() -> None:
        async with limiter.slot():
            assert limiter.in_use == 1
            raise KeyError("boom")

    with pytest.raises(KeyError):
        await body()
    assert idle(limiter)


async def test_limit_is_never_exceeded_under_many_tasks() -> None:
    limiter = CapacityLimiter(3)
    rng = random.Random(7)
    current = peak = 0

    async def work(delay: float) -> None:
        nonlocal current, peak
        async with limiter.slot():
            current += 1
            peak = max(peak, current)
            assert limiter.in_use <= 3
            await asyncio.sleep(delay)
            current -= 1

    await asyncio.gather(*(work(rng.uniform(0, 0.1)) for _ in range(60)))
    assert peak == 3
    assert idle(limiter)


async def test_waiters_are_served_in_arrival_order() -> None:
    limiter = CapacityLimiter(1)
    await limiter.acquire()
    served: list[int] = []

    async def waiter(index: int) -> None:
        async with limiter.slot():
            served.append(index)
            await asyncio.sleep(0.01)

    tasks = []
    for index in range(6):
        tasks.append(asyncio.create_task(waiter(index)))
        await asyncio.sleep(0)  # each waiter queues before the next is created
    limiter.release()
    await asyncio.gather(*tasks)
    assert served == list(range(6))
    assert idle(limiter)


async def test_released_slot_is_handed_over_so_newcomers_cannot_barge() -> None:
    limiter = CapacityLimiter(1)
    await limiter.acquire()
    order: list[str] = []

    async def take(name: str) -> None:
        await limiter.acquire()
        order.append(name)
        limiter.release()

    first = asyncio.create_task(take("queued"))
    await settle()
    limiter.release()
    # The slot now belongs to the queued waiter, even though it has not run yet.
    assert limiter.snapshot_now() == CapacitySnapshot(1, 1, 0)
    newcomer = limiter.acquire()
    # It must suspend (yield its future), not finish: the slot is taken although unused yet.
    assert isinstance(newcomer.send(None), asyncio.Future)
    newcomer.close()  # abandoning the wait must dequeue it
    assert limiter.waiting == 0
    late = asyncio.create_task(take("newcomer"))
    await asyncio.gather(first, late)
    assert order == ["queued", "newcomer"]
    assert idle(limiter)


# --- cancellation and timeouts ----------------------------------------------------------------


async def test_cancelled_waiter_leaves_the_queue() -> None:
    start_tasks = asyncio.all_tasks()
    limiter = CapacityLimiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await settle()
    assert limiter.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.snapshot_now() == CapacitySnapshot(1, 1, 0)
    limiter.release()
    assert idle(limiter)
    assert asyncio.all_tasks() == start_tasks


async def test_waiter_cancelled_after_the_handover_passes_the_slot_on() -> None:
    start_tasks = asyncio.all_tasks()
    limiter = CapacityLimiter(1)
    await limiter.acquire()
    doomed = asyncio.create_task(limiter.acquire())
    heir = asyncio.create_task(limiter.acquire())
    await settle()
    limiter.release()  # hands the slot to ``doomed``...
    doomed.cancel()  # ...which is cancelled before it can resume
    with pytest.raises(asyncio.CancelledError):
        await doomed
    await heir  # the slot went on to the next waiter instead of leaking
    assert limiter.snapshot_now() == CapacitySnapshot(1, 1, 0)
    limiter.release()
    assert idle(limiter)
    assert asyncio.all_tasks() == start_tasks


async def test_cancelled_waiters_are_skipped_by_release() -> None:
    limiter = CapacityLimiter(1)
    await limiter.acquire()
    first = asyncio.create_task(limiter.acquire())
    second = asyncio.create_task(limiter.acquire())
    await settle()
    first.cancel()
    limiter.release()  # runs before ``first`` has handled its cancellation
    await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert limiter.snapshot_now() == CapacitySnapshot(1, 1, 0)
    limiter.release()
    assert idle(limiter)


async def test_queue_timeout_on_virtual_time(clock: VirtualClock) -> None:
    limiter = CapacityLimiter(1)
    await limiter.acquire()
    start = clock.monotonic()
    with pytest.raises(TimeoutError):
        async with timeout(2.5):
            await limiter.acquire()
    assert clock.monotonic() - start == 2.5
    assert limiter.snapshot_now() == CapacitySnapshot(1, 1, 0)
    limiter.release()
    assert idle(limiter)


async def test_timeout_racing_the_handover_leaks_nothing(clock: VirtualClock) -> None:
    limiter = CapacityLimiter(1)
    await limiter.acquire()
    loop = asyncio.get_running_loop()
    # The holder releases at exactly the moment the waiter's timeout fires.
    loop.call_at(loop.time() + 1.0, limiter.release)
    with pytest.raises(TimeoutError):
        async with timeout_at(loop.time() + 1.0):
            await limiter.acquire()
    await settle()
    assert idle(limiter)


async def test_many_waiters_with_random_cancellations_leak_nothing() -> None:
    start_tasks = asyncio.all_tasks()
    limiter = CapacityLimiter(2)
    rng = random.Random(11)

    async def work() -> None:
        async with limiter.slot():
            assert limiter.in_use <= 2
            await asyncio.sleep(rng.uniform(0, 0.05))

    tasks = [asyncio.create_task(work()) for _ in range(40)]
    for _ in range(25):
        await asyncio.sleep(rng.uniform(0, 0.02))
        rng.choice(tasks).cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert idle(limiter)
    assert asyncio.all_tasks() == start_tasks
