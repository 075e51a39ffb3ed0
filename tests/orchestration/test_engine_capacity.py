"""Capacity (DESIGN step 5): the builder-wide limit, per-source limits and their precedence,
the bounded worker pool, queue timeouts, and slots given back after every build."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from tests.orchestration.conftest import (
    Batch,
    Derived,
    Gate,
    Gauge,
    Single,
    assert_quiet,
    key,
    keys,
    make_builder,
    settle,
)

from coalestra.core import (
    FreshnessPolicy,
    ResourceKey,
    ResourceResolutionError,
    Snapshot,
)
from coalestra.resilience import RetryPolicy
from coalestra.testing import VirtualClock

NEVER_FRESH = FreshnessPolicy(ttl_seconds=0.0)


async def test_the_global_limit_is_never_exceeded_across_builds_and_source_kinds(
    clock: VirtualClock,
) -> None:
    gauge = Gauge()
    rng = random.Random(7)

    async def jittered(*_args: Any) -> str:
        await asyncio.sleep(rng.uniform(0.1, 1.0))
        return "single"

    single = Single("single", 10, jittered, gauge=gauge, supports=lambda k: k.name == "s")
    batch = Batch(
        "batch",
        10,
        delay=0.5,
        gauge=gauge,
        max_batch_size=3,
        supports=lambda k: k.name == "b",
    )
    derived = Derived(
        "derived",
        10,
        lambda k: (key(k.subject, "s"),),
        delay=0.3,
        gauge=gauge,
        supports=lambda k: k.name == "d",
    )
    builder = make_builder([single, batch, derived], clock, max_concurrency=3)
    pool = [key(str(i), name) for i in range(20) for name in ("s", "b", "d")]

    builds = [builder.build(rng.sample(pool, 15), deadline_seconds=1000.0) for _ in range(12)]
    snapshots = await asyncio.gather(*builds)

    assert all(s.complete for s in snapshots)
    assert gauge.peak == 3
    assert gauge.active == 0
    await assert_quiet(builder)


async def test_derivation_holds_a_slot_only_while_it_runs(clock: VirtualClock) -> None:
    gauge = Gauge()
    raw = Single("raw", 1, delay=1.0, gauge=gauge, supports=lambda k: k.name == "raw")
    derived = Derived(
        "derived",
        10,
        lambda k: (key(k.subject, "raw"),),
        delay=1.0,
        gauge=gauge,
        supports=lambda k: k.name == "d",
    )
    builder = make_builder([derived, raw], clock, max_concurrency=1)
    start = clock.monotonic()

    snapshot = await builder.build([key("x", "d")])

    assert snapshot.complete
    assert gauge.peak == 1  # with one slot, the deriver waiting for raw must not hold it
    assert clock.monotonic() - start == pytest.approx(2.0)


async def test_source_concurrency_and_a_sources_own_limit(clock: VirtualClock) -> None:
    explicit = Single("explicit", 1, delay=1.0, max_concurrency=5, supports=lambda k: k.name == "e")
    declared = Single("declared", 1, delay=1.0, max_concurrency=2, supports=lambda k: k.name == "d")
    free = Single("free", 1, delay=1.0, supports=lambda k: k.name == "f")
    builder = make_builder(
        [explicit, declared, free],
        clock,
        max_concurrency=20,
        source_concurrency={"explicit": 3},
    )
    wanted = [key(str(i), name) for i in range(9) for name in ("e", "d", "f")]

    await asyncio.gather(*(builder.build([k]) for k in wanted))

    assert (explicit.peak, declared.peak, free.peak) == (3, 2, 9)
    limits = {name: snap.limit for name, snap in (await builder.capacity_snapshot()).items()}
    assert limits == {"__global__": 20, "explicit": 3, "declared": 2}
    await assert_quiet(builder)


async def test_the_global_limit_binds_below_a_source_limit(clock: VirtualClock) -> None:
    source = Single("rest", 1, delay=1.0, max_concurrency=10)
    builder = make_builder([source], clock, max_concurrency=2)
    start = clock.monotonic()

    await builder.build(keys(*"ABCDEF"))

    assert source.peak == 2
    assert clock.monotonic() - start == pytest.approx(3.0)


async def test_max_pending_tasks_bounds_the_workers_and_keeps_input_order(
    clock: VirtualClock,
) -> None:
    source = Single("rest", 1, delay=1.0)
    builder = make_builder([source], clock, max_concurrency=8, max_pending_tasks=2)
    wanted = keys(*(f"k{i:02}" for i in range(10)))
    start = clock.monotonic()
    before = len(asyncio.all_tasks())

    build = asyncio.create_task(builder.build(wanted))
    await settle()
    health = await builder.health_snapshot()
    during = len(asyncio.all_tasks())
    await build

    assert source.peak == 2
    assert health.active_dispatch_workers == 2
    assert during - before <= 3  # the build, its group task and one extra worker
    assert source.calls == wanted
    assert clock.monotonic() - start == pytest.approx(5.0)


async def test_one_large_request_does_not_create_a_task_per_key(clock: VirtualClock) -> None:
    source = Single("rest", 1, delay=1.0)
    builder = make_builder([source], clock, max_concurrency=4)
    peak_tasks = 0
    before = len(asyncio.all_tasks())

    async def watch() -> None:
        nonlocal peak_tasks
        while True:
            peak_tasks = max(peak_tasks, len(asyncio.all_tasks()))
            await asyncio.sleep(0.25)

    watcher = asyncio.create_task(watch())
    await builder.build(keys(*(str(i) for i in range(200))))
    watcher.cancel()

    assert source.peak == 4
    assert peak_tasks - before <= 1 + 4 + 1  # watcher, workers, group task


async def test_batch_chunks_are_dispatched_in_capacity_aware_waves(clock: VirtualClock) -> None:
    batch = Batch("batch", 1, delay=1.0, max_batch_size=2)
    builder = make_builder([batch], clock, max_concurrency=3)
    start = clock.monotonic()

    snapshot = await builder.build(keys(*(str(i) for i in range(12))))

    assert len(batch.calls) == 6
    assert batch.peak == 3  # one slot per batch call, whatever its size
    assert clock.monotonic() - start == pytest.approx(2.0)
    assert snapshot.diagnostics.batch_chunks == 6


async def test_queue_timeout_is_a_source_queue_timeout_error(clock: VirtualClock) -> None:
    source = Single("rest", 1, delay=2.0, max_concurrency=1, queue_timeout_seconds=0.5)
    fallback = Single("fallback", 0, lambda _k, _c: "fallback")
    retry = RetryPolicy(max_attempts=3, base_delay_seconds=0.01, jitter_ratio=0.0)
    builder = make_builder([source, fallback], clock, retry_policy=retry)
    a, b = keys("A", "B")

    first, second = await asyncio.gather(builder.build([a]), builder.build([b]))

    assert first[a].source == "rest"
    assert second[b].source == "fallback"
    assert source.calls == [a]  # the queue timeout is not retried
    health = await builder.health_snapshot()
    assert health.queue_timeout_count == 1
    await assert_quiet(builder)


async def test_a_queue_timeout_is_recorded_with_its_type_at_the_right_time(
    clock: VirtualClock,
) -> None:
    source = Single("rest", 1, delay=2.0, max_concurrency=1, queue_timeout_seconds=0.5)
    builder = make_builder([source], clock)
    a, b = keys("A", "B")
    start = clock.monotonic()

    holder = asyncio.create_task(builder.build([a]))
    await settle()
    snapshot = await builder.build([b], strict=False)
    failed_at = clock.monotonic() - start
    await holder

    error = snapshot.errors[b]
    assert isinstance(error, ResourceResolutionError)
    assert [(f.source, f.error_type) for f in error.failures] == [
        ("rest", "SourceQueueTimeoutError")
    ]
    assert failed_at == pytest.approx(0.5)


async def test_capacity_is_given_back_after_failures_and_timeouts(clock: VirtualClock) -> None:
    def sometimes(k: ResourceKey, _c: Any) -> str:
        if int(k.subject) % 3 == 0:
            raise RuntimeError("down")
        return k.subject

    flaky = Single("flaky", 2, sometimes, delay=0.5, max_concurrency=2, timeout_seconds=10.0)
    slow = Single("slow", 1, delay=50.0, timeout_seconds=1.0, max_concurrency=1)
    builder = make_builder([flaky, slow], clock, max_concurrency=3, default_policy=NEVER_FRESH)

    results: list[Snapshot] = await asyncio.gather(
        *(builder.build(keys(*(str(i) for i in range(6))), strict=False) for _ in range(4))
    )

    assert all(len(s.errors) == 2 for s in results)
    await assert_quiet(builder)


async def test_waiting_for_capacity_is_visible_in_health(clock: VirtualClock) -> None:
    gate = Gate()
    source = Single("rest", 1, lambda _k, _c: gate.wait())
    builder = make_builder([source], clock, max_concurrency=1, max_pending_tasks=3)

    build = asyncio.create_task(builder.build(keys("A", "B", "C")))
    await gate.arrived.wait()
    await settle()
    capacity = await builder.capacity_snapshot()
    health = await builder.health_snapshot()
    gate.open()
    await build

    assert (capacity["__global__"].in_use, capacity["__global__"].waiting) == (1, 2)
    assert health.waiting_for_capacity == 2
    await assert_quiet(builder)
