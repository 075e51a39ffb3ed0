"""CapacityController: global + per-source limits, source slot first, nothing leaks on cancel."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

import coalestra.concurrency
from coalestra._compat import timeout
from coalestra.concurrency import CapacityController, CapacitySnapshot
from coalestra.testing import VirtualClock


async def settle() -> None:
    """Let every ready callback run (handoffs and cancellations take a few loop steps)."""
    for _ in range(50):
        await asyncio.sleep(0)


def assert_idle(controller: CapacityController) -> None:
    for name, snap in controller.snapshot_now().items():
        assert (name, snap.in_use, snap.waiting) == (name, 0, 0)
    assert controller.in_use_total() == 0
    assert controller.waiting_total() == 0


def test_public_names() -> None:
    assert coalestra.concurrency.__all__ == [
        "CapacityController",
        "CapacityLimiter",
        "CapacitySnapshot",
    ]


# --- configuration ----------------------------------------------------------------------------


def test_limits_from_constructor_and_registration() -> None:
    controller = CapacityController(global_limit=8, source_limits={"remote-rest": 4})
    controller.register_source("database", 6)
    controller.register_source("local", None)
    assert controller.global_limit == 8
    assert controller.limit_for("remote-rest") == 4
    assert controller.limit_for("database") == 6
    assert controller.limit_for("local") is None
    assert controller.limit_for("never-registered") is None
    assert set(controller.snapshot_now()) == {"__global__", "remote-rest", "database"}


async def test_snapshot_keys_are_global_plus_plain_limited_source_names() -> None:
    controller = CapacityController(global_limit=3, source_limits={"a": 2})
    lease = await controller.acquire("a")
    other = await controller.acquire("unlimited")
    assert await controller.snapshot() == {
        "__global__": CapacitySnapshot(limit=3, in_use=2, waiting=0),
        "a": CapacitySnapshot(limit=2, in_use=1, waiting=0),
    }
    lease.release()
    other.release()
    assert_idle(controller)


async def test_register_source_keeps_the_first_limit_and_refuses_a_different_one() -> None:
    # B-CAP-2: a registered limit never changes (so holders can never overlap two limits).
    controller = CapacityController(global_limit=4, source_limits={"a": 1})
    lease = await controller.acquire("a")
    controller.register_source("a", 1)  # unchanged: fine even while busy
    controller.register_source("a", None)  # None registers nothing
    with pytest.raises(ValueError, match=r"^conflicting concurrency limits for source a: 1 and 2$"):
        controller.register_source("a", 2)
    assert controller.limit_for("a") == 1
    lease.release()
    with pytest.raises(ValueError, match="conflicting"):
        controller.register_source("a", 2)
    assert controller.snapshot_now()["a"] == CapacitySnapshot(1, 0, 0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"global_limit": 0}, ValueError, "global_limit"),
        ({"global_limit": -3}, ValueError, "global_limit"),
        ({"global_limit": "8"}, TypeError, "global_limit"),
        ({"global_limit": 8.0}, TypeError, "global_limit"),
        ({"global_limit": True}, TypeError, "global_limit"),
        ({"global_limit": None}, TypeError, "global_limit"),
        ({"global_limit": 2, "source_limits": [("a", 1)]}, TypeError, "source_limits"),
        ({"global_limit": 2, "source_limits": {"a": 0}}, ValueError, "at least 1"),
        ({"global_limit": 2, "source_limits": {"a": 1.5}}, TypeError, "limit"),
        ({"global_limit": 2, "source_limits": {"a": False}}, TypeError, "limit"),
        ({"global_limit": 2, "source_limits": {1: 1}}, TypeError, "source"),
        ({"global_limit": 2, "source_limits": {" ": 1}}, ValueError, "source"),
        ({"global_limit": 2, "source_limits": {"__global__": 1}}, ValueError, "global"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        CapacityController(**kwargs)  # type: ignore[arg-type]


def test_constructor_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        CapacityController(4)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("source", "limit", "error", "match"),
    [
        ("", 1, ValueError, "source"),
        (None, 1, TypeError, "source"),
        ("a", 0, ValueError, "limit"),
        ("a", "2", TypeError, "limit"),
        ("a", True, TypeError, "limit"),
        ("__global__", 2, ValueError, "reserved"),
    ],
)
def test_bad_register_source_arguments(
    source: object, limit: object, error: type, match: str
) -> None:
    controller = CapacityController(global_limit=2)
    with pytest.raises(error, match=match):
        controller.register_source(source, limit)  # type: ignore[arg-type]
    assert set(controller.snapshot_now()) == {"__global__"}


async def test_non_str_source_names_are_type_errors() -> None:
    controller = CapacityController(global_limit=2)
    with pytest.raises(TypeError, match="source"):
        controller.limit_for(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="source"):
        await controller.acquire(None)  # type: ignore[arg-type]
    assert_idle(controller)


def test_a_source_named_global_may_still_be_global_only() -> None:
    controller = CapacityController(global_limit=2)
    controller.register_source("__global__", None)
    assert controller.limit_for("__global__") is None


# --- leases -----------------------------------------------------------------------------------


async def test_uncontended_acquire_completes_without_suspending() -> None:
    controller = CapacityController(global_limit=2, source_limits={"a": 1})
    coro = controller.acquire("a")
    with pytest.raises(StopIteration) as finished:
        coro.send(None)
    lease = finished.value.value
    assert lease.source == "a"
    assert controller.in_use_total() == 1
    lease.release()
    assert_idle(controller)


async def test_lease_release_is_idempotent_and_usable_as_context_manager() -> None:
    controller = CapacityController(global_limit=1, source_limits={"a": 1})
    lease = await controller.acquire("a")
    assert not lease.released
    assert "held" in repr(lease)
    lease.release()
    lease.release()
    assert lease.released
    assert_idle(controller)

    async def body() -> None:
        async with await controller.acquire("a") as held:
            assert held.source == "a"
            assert controller.snapshot_now()["a"].in_use == 1
            raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        await body()
    assert_idle(controller)


async def test_slot_holds_both_slots_and_releases_on_exception() -> None:
    controller = CapacityController(global_limit=2, source_limits={"a": 1})

    async def body() -> None:
        async with controller.slot("a"):
            assert controller.snapshot_now() == {
                "__global__": CapacitySnapshot(2, 1, 0),
                "a": CapacitySnapshot(1, 1, 0),
            }
            raise KeyError("x")

    with pytest.raises(KeyError):
        await body()
    assert_idle(controller)


async def test_unregistered_source_is_bound_by_the_global_limit_only() -> None:
    controller = CapacityController(global_limit=2)
    first = await controller.acquire("mystery")
    second = await controller.acquire("mystery")
    third = asyncio.create_task(controller.acquire("mystery"))
    await settle()
    assert not third.done()
    assert controller.snapshot_now() == {"__global__": CapacitySnapshot(2, 2, 1)}
    first.release()
    (await third).release()
    second.release()
    assert_idle(controller)


# --- limits under load ------------------------------------------------------------------------


async def test_limits_are_never_exceeded_under_many_concurrent_calls() -> None:
    limits = {"a": 2, "b": 3}
    controller = CapacityController(global_limit=4, source_limits=limits)
    rng = random.Random(3)
    current: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    async def call(source: str, delay: float) -> None:
        async with controller.slot(source):
            current[source] += 1
            current["*"] += 1
            for name in (source, "*"):
                peak[name] = max(peak[name], current[name])
            await asyncio.sleep(delay)
            current[source] -= 1
            current["*"] -= 1

    calls = [call(rng.choice("abc"), rng.uniform(0, 0.1)) for _ in range(150)]
    await asyncio.gather(*calls)
    assert peak["a"] == 2
    assert peak["b"] == 3
    assert peak["*"] == 4
    assert_idle(controller)


async def test_waiters_of_one_source_are_served_in_arrival_order() -> None:
    controller = CapacityController(global_limit=4, source_limits={"a": 1})
    blocker = await controller.acquire("a")
    served: list[int] = []

    async def call(index: int) -> None:
        async with controller.slot("a"):
            served.append(index)
            await asyncio.sleep(0.01)

    tasks = []
    for index in range(5):
        tasks.append(asyncio.create_task(call(index)))
        await asyncio.sleep(0)
    blocker.release()
    await asyncio.gather(*tasks)
    assert served == list(range(5))
    assert_idle(controller)


async def test_calls_queued_behind_a_saturated_source_hold_no_global_slot() -> None:
    controller = CapacityController(global_limit=2, source_limits={"slow": 1})
    held = await controller.acquire("slow")
    queued = [asyncio.create_task(controller.acquire("slow")) for _ in range(5)]
    await settle()
    assert controller.snapshot_now() == {
        "__global__": CapacitySnapshot(2, 1, 0),
        "slow": CapacitySnapshot(1, 1, 5),
    }
    # The one free global slot is still free for another source, without waiting.
    coro = controller.acquire("fast")
    with pytest.raises(StopIteration) as finished:
        coro.send(None)
    assert controller.waiting_total() == 5
    assert controller.in_use_total() == 2
    finished.value.value.release()
    for task in queued:
        task.cancel()
    await asyncio.gather(*queued, return_exceptions=True)
    held.release()
    assert_idle(controller)


# --- cancellation and timeouts at every await point -------------------------------------------


async def _cancel_while_waiting_for_source(controller: CapacityController) -> None:
    blocker = await controller.acquire("a")
    task = asyncio.create_task(controller.acquire("a"))
    await settle()
    assert controller.snapshot_now()["a"].waiting == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    blocker.release()


async def _cancel_while_waiting_for_global(controller: CapacityController) -> None:
    blocker = await controller.acquire("b")  # takes the only global slot
    task = asyncio.create_task(controller.acquire("a"))
    await settle()
    # It holds its source slot and queues for the global one.
    assert controller.snapshot_now()["a"] == CapacitySnapshot(1, 1, 0)
    assert controller.snapshot_now()["__global__"].waiting == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert controller.snapshot_now()["a"] == CapacitySnapshot(1, 0, 0)
    blocker.release()


async def _cancel_right_after_source_handover(controller: CapacityController) -> None:
    blocker = await controller.acquire("a")
    task = asyncio.create_task(controller.acquire("a"))
    await settle()
    blocker.release()  # hands the source slot to the task...
    task.cancel()  # ...which is cancelled before it resumes
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def _cancel_right_after_global_handover(controller: CapacityController) -> None:
    blocker = await controller.acquire("b")
    task = asyncio.create_task(controller.acquire("a"))
    await settle()
    blocker.release()  # hands the global slot to the task...
    task.cancel()  # ...which is cancelled before it resumes
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def _cancel_while_holding(controller: CapacityController) -> None:
    entered = asyncio.Event()

    async def call() -> None:
        async with controller.slot("a"):
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(call())
    await entered.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


@pytest.mark.parametrize(
    "scenario",
    [
        _cancel_while_waiting_for_source,
        _cancel_while_waiting_for_global,
        _cancel_right_after_source_handover,
        _cancel_right_after_global_handover,
        _cancel_while_holding,
    ],
    ids=lambda scenario: scenario.__name__.strip("_"),
)
async def test_cancellation_at_each_await_point_leaks_nothing(
    scenario: Callable[[CapacityController], Awaitable[None]],
) -> None:
    start_tasks = asyncio.all_tasks()
    controller = CapacityController(global_limit=1, source_limits={"a": 1})
    await scenario(controller)
    await settle()
    assert_idle(controller)
    assert asyncio.all_tasks() == start_tasks
    # And the capacity is really usable again.
    async with timeout(1):
        lease = await controller.acquire("a")
    lease.release()


async def test_cancelled_global_waiter_lets_the_next_source_waiter_through() -> None:
    controller = CapacityController(global_limit=1, source_limits={"a": 1})
    blocker = await controller.acquire("b")
    doomed = asyncio.create_task(controller.acquire("a"))
    await settle()
    heir = asyncio.create_task(controller.acquire("a"))
    await settle()
    assert controller.snapshot_now()["a"] == CapacitySnapshot(1, 1, 1)
    doomed.cancel()
    await asyncio.gather(doomed, return_exceptions=True)
    await settle()
    # The source slot moved on to ``heir``, which now waits for the global slot.
    assert controller.snapshot_now()["a"] == CapacitySnapshot(1, 1, 0)
    assert controller.snapshot_now()["__global__"] == CapacitySnapshot(1, 1, 1)
    blocker.release()
    (await heir).release()
    assert_idle(controller)


@pytest.mark.parametrize("blocked_stage", ["source", "global"])
async def test_queue_timeout_on_virtual_time_leaks_nothing(
    clock: VirtualClock, blocked_stage: str
) -> None:
    controller = CapacityController(global_limit=1, source_limits={"a": 1})
    blocker = await controller.acquire("a" if blocked_stage == "source" else "b")
    start = clock.monotonic()
    with pytest.raises(TimeoutError):
        async with timeout(0.75):
            await controller.acquire("a")
    assert clock.monotonic() - start == 0.75
    blocker.release()
    assert_idle(controller)


async def test_many_calls_with_random_cancellations_and_timeouts_leak_nothing() -> None:
    start_tasks = asyncio.all_tasks()
    controller = CapacityController(global_limit=3, source_limits={"a": 1, "b": 2})
    rng = random.Random(5)

    async def call(source: str) -> None:
        async with timeout(rng.uniform(0.01, 0.2)), controller.slot(source):
            snap = controller.snapshot_now()
            assert snap["__global__"].in_use <= 3
            assert snap["a"].in_use <= 1
            assert snap["b"].in_use <= 2
            await asyncio.sleep(rng.uniform(0, 0.05))

    tasks = [asyncio.create_task(call(rng.choice("abc"))) for _ in range(80)]
    for _ in range(30):
        await asyncio.sleep(rng.uniform(0, 0.01))
        rng.choice(tasks).cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(r is None or isinstance(r, (TimeoutError, asyncio.CancelledError)) for r in results)
    assert_idle(controller)
    assert asyncio.all_tasks() == start_tasks
