"""Contract facts B-CAP-1 ... B-CAP-4 (capacity, bounded dispatch) and B-TIME-1 ... B-TIME-5
(deadlines and timeouts), checked through the public API only."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coalestra import (
    CacheLookup,
    CallableDerivedSource,
    CallableSource,
    CapacityController,
    CapacityLimiter,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    ResourceResolutionError,
    ResourceUpdate,
    RetryPolicy,
    Snapshot,
    SnapshotBuilder,
    SnapshotValue,
)
from coalestra.testing import VirtualClock

POLICY = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)
NO_RETRY = RetryPolicy(max_attempts=1)


def k(subject: str, name: str = "price") -> ResourceKey:
    return ResourceKey("market", name, subject)


def ks(count: int, name: str = "price") -> list[ResourceKey]:
    return [k(f"s{i:03d}", name) for i in range(count)]


def yes(_key: ResourceKey) -> bool:
    return True


class Peak:
    """Counts calls running at once."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.calls = 0

    async def run(self, delay: float) -> None:
        self.calls += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(delay)
        finally:
            self.active -= 1


def sleeper(delay: float, value: object = "v") -> Any:
    async def fetch(_key: ResourceKey, _ctx: FetchContext) -> object:
        await asyncio.sleep(delay)
        return value

    return fetch


def single(
    name: str = "s", *, delay: float = 0.0, priority: int = 1, **options: Any
) -> CallableSource:
    return CallableSource(
        name=name, priority=priority, supports=yes, fetcher=sleeper(delay), **options
    )


def builder_of(*sources: Any, clock: VirtualClock, **options: Any) -> SnapshotBuilder:
    options.setdefault("default_policy", POLICY)
    options.setdefault("retry_policy", NO_RETRY)
    return SnapshotBuilder(list(sources), clock=clock, **options)


def only_failure(snapshot: Snapshot, key: ResourceKey) -> Any:
    error = snapshot.errors[key]
    assert isinstance(error, ResourceResolutionError)
    assert len(error.failures) == 1, error.failures
    return error.failures[0]


# -- B-CAP-1 -----------------------------------------------------------------------------------


async def test_b_cap_1_builder_capacity_is_public_and_keyed_global(clock: VirtualClock) -> None:
    limited = single("limited", max_concurrency=3)
    overridden = single("overridden", max_concurrency=5, priority=2)
    free = single("free", priority=3)
    builder = builder_of(
        limited,
        overridden,
        free,
        clock=clock,
        max_concurrency=7,
        source_concurrency={"overridden": 2},
    )
    assert isinstance(builder.capacity, CapacityController)
    snap = await builder.capacity.snapshot()
    assert set(snap) == {"__global__", "limited", "overridden"}
    assert snap["__global__"].limit == 7
    assert snap["limited"].limit == 3
    assert snap["overridden"].limit == 2  # an explicit source_concurrency entry wins
    assert set(await builder.capacity_snapshot()) == set(snap)
    assert set((await builder.health_snapshot()).capacity) == set(snap)
    await builder.aclose()


async def test_b_cap_1_the_public_controller_is_the_one_builds_use(clock: VirtualClock) -> None:
    builder = builder_of(
        single("s", queue_timeout_seconds=0.05, timeout_seconds=1.0),
        clock=clock,
        max_concurrency=1,
    )
    lease = await builder.capacity.acquire("s")
    snapshot = await builder.build([k("a")], strict=False)
    assert only_failure(snapshot, k("a")).error_type == "SourceQueueTimeoutError"
    lease.release()
    assert (await builder.build([k("a")])).value(k("a")) == "v"
    await builder.aclose()


# -- B-CAP-2 -----------------------------------------------------------------------------------


async def test_b_cap_2_cancelled_wait_on_global_releases_the_source_slot() -> None:
    controller = CapacityController(global_limit=1, source_limits={"s": 2})
    held = await controller.acquire("other")
    waiter = asyncio.create_task(controller.acquire("s"))
    await asyncio.sleep(0)
    snap = await controller.snapshot()
    assert snap["s"].in_use == 1  # the source slot is taken first
    assert snap["__global__"].waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    snap = await controller.snapshot()
    assert snap["s"].in_use == 0
    assert snap["__global__"].waiting == 0
    held.release()
    held.release()  # idempotent
    assert (await controller.snapshot())["__global__"].in_use == 0


async def test_b_cap_2_a_timed_out_wait_releases_every_slot() -> None:
    controller = CapacityController(global_limit=1, source_limits={"s": 1})
    held = await controller.acquire("other")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await controller.acquire("s")
    snap = await controller.snapshot()
    assert (snap["s"].in_use, snap["__global__"].waiting) == (0, 0)
    held.release()


def test_b_cap_2_errors() -> None:
    controller = CapacityController(global_limit=2, source_limits={"s": 2})
    controller.register_source("s", 2)  # the same limit again is fine
    with pytest.raises(ValueError, match=r"^conflicting concurrency limits for source s: 2 and 3$"):
        controller.register_source("s", 3)
    with pytest.raises(ValueError, match=r"^source concurrency limit must be at least 1$"):
        controller.register_source("t", 0)
    with pytest.raises(ValueError, match=r"^source concurrency limit must be at least 1$"):
        CapacityController(global_limit=2, source_limits={"t": 0})
    with pytest.raises(ValueError, match=r"^capacity limit must be at least 1$"):
        CapacityLimiter(0)
    with pytest.raises(RuntimeError):
        CapacityLimiter(1).release()


# -- B-CAP-3 -----------------------------------------------------------------------------------


async def test_b_cap_3_one_slot_per_worker_and_max_pending_defaults_to_max_concurrency(
    clock: VirtualClock,
) -> None:
    peak = Peak()
    seen: list[tuple[int, int]] = []
    builder_box: list[SnapshotBuilder] = []

    async def fetch(key: ResourceKey, _ctx: FetchContext) -> str:
        snap = await builder_box[0].capacity.snapshot()
        seen.append((snap["__global__"].in_use, snap["__global__"].waiting))
        await peak.run(0.01)
        return key.subject

    source = CallableSource(name="s", priority=1, supports=yes, fetcher=fetch)
    builder = builder_of(source, clock=clock, max_concurrency=4)
    builder_box.append(builder)
    wanted = ks(100)
    snapshot = await builder.build(wanted)
    assert list(snapshot.resources) == wanted  # results keep input order
    assert peak.peak == 4
    assert max(in_use for in_use, _ in seen) == 4
    assert all(waiting == 0 for _, waiting in seen)
    await builder.aclose()


async def test_b_cap_3_max_pending_tasks_bounds_single_and_derived_workers(
    clock: VirtualClock,
) -> None:
    raw_peak, derived_peak = Peak(), Peak()

    async def fetch(key: ResourceKey, _ctx: FetchContext) -> int:
        await raw_peak.run(0.01)
        return 1

    async def derive(key: ResourceKey, deps: Snapshot, _ctx: FetchContext) -> int:
        await derived_peak.run(0.01)
        return 2

    raw = CallableSource(
        name="raw", priority=1, supports=lambda key: key.name == "raw", fetcher=fetch
    )
    derived = CallableDerivedSource(
        name="derived",
        priority=2,
        supports=lambda key: key.name == "d",
        dependencies=lambda key: [k(key.subject, "raw")],
        deriver=derive,
    )
    builder = builder_of(raw, derived, clock=clock, max_concurrency=8, max_pending_tasks=3)
    wanted = ks(30, "d")
    snapshot = await builder.build(wanted)
    assert list(snapshot.resources) == wanted
    assert raw_peak.peak == 3
    assert derived_peak.peak == 3
    await builder.aclose()


# -- B-CAP-4 -----------------------------------------------------------------------------------


class SingleKeyCache:
    """A plain cache with only get/set/invalidate/clear; every call takes a little time."""

    def __init__(self) -> None:
        self.data: dict[ResourceKey, SnapshotValue[Any]] = {}
        self.gets, self.sets, self.invalidations = Peak(), Peak(), Peak()

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> CacheLookup:
        await self.gets.run(0.001)
        value = self.data.get(key)
        if value is None:
            return CacheLookup(None, False, False, None)
        age = max(0.0, now - value.observed_at)
        return CacheLookup(value, policy.is_fresh(age), True, age)

    async def set(self, value: SnapshotValue[Any]) -> None:
        await self.sets.run(0.001)
        self.data[value.key] = value

    async def invalidate(self, key: ResourceKey) -> None:
        await self.invalidations.run(0.001)
        self.data.pop(key, None)

    async def clear(self) -> None:
        self.data.clear()


async def test_b_cap_4_builder_per_key_cache_calls_are_bounded_and_concurrent(
    clock: VirtualClock,
) -> None:
    cache = SingleKeyCache()
    builder = builder_of(single("s"), clock=clock, cache=cache, max_pending_tasks=4)
    await builder.build(ks(60))
    assert cache.gets.calls == 60
    assert cache.gets.peak == 4
    assert cache.sets.calls == 60
    assert cache.sets.peak == 4
    await builder.aclose()


async def test_b_cap_4_publisher_per_key_cache_calls_are_bounded_and_concurrent(
    clock: VirtualClock,
) -> None:
    cache = SingleKeyCache()
    builder = builder_of(single("s"), clock=clock, cache=cache, max_pending_tasks=5)
    wanted = ks(45)
    await builder.publisher.publish_many(
        [ResourceUpdate(key, 1, source="push", observed_at=clock.now()) for key in wanted]
    )
    assert cache.gets.peak == 5
    assert cache.sets.peak == 5
    await builder.publisher.invalidate_many(wanted)
    assert cache.invalidations.calls == 45
    assert cache.invalidations.peak == 5
    await builder.aclose()
