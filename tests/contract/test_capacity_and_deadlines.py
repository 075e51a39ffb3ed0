"""Contract facts B-CAP-1 ... B-CAP-4 (capacity, bounded dispatch) and B-TIME-1 ... B-TIME-5
(deadlines and timeouts), checked through the public API only."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from coalestra import (
    CacheLookup,
    CallableBatchSource,
    CallableDerivedSource,
    CallableSource,
    CapacityController,
    CapacityLimiter,
    CircuitBreaker,
    CircuitBreakerPolicy,
    CircuitState,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    ResourceResolutionError,
    ResourceUpdate,
    RetryPolicy,
    Snapshot,
    SnapshotBuilder,
    SnapshotBuildError,
    SnapshotValue,
    SourceResiliencePolicy,
)
from coalestra._compat import timeout
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
        async with timeout(0.01):
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


def test_b_cap_2_a_builder_source_limit_below_one() -> None:
    source = CallableSource(name="s", priority=1, supports=yes, fetcher=sleeper(0.0))
    with pytest.raises(ValueError, match=r"^source concurrency limit must be at least 1$"):
        SnapshotBuilder([source], source_concurrency={"s": 0})


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


async def test_b_cap_4_builder_invalidations_are_bounded_and_concurrent(
    clock: VirtualClock,
) -> None:
    cache = SingleKeyCache()
    version = [1]

    async def raw(_key: ResourceKey, _ctx: FetchContext) -> int:
        return version[0]

    async def derive(key: ResourceKey, deps: Snapshot, _ctx: FetchContext) -> int:
        return 2 * deps.value(k(key.subject, "raw"))

    sources = [
        CallableSource(name="raw", priority=1, supports=lambda key: key.name == "raw", fetcher=raw),
        CallableDerivedSource(
            name="derived",
            priority=2,
            supports=lambda key: key.name == "d",
            dependencies=lambda key: [k(key.subject, "raw")],
            deriver=derive,
        ),
    ]
    builder = builder_of(*sources, clock=clock, cache=cache, max_pending_tasks=4)
    derived = ks(20, "d")
    await builder.build(derived)
    await builder.publisher.publish_many(
        [
            ResourceUpdate(k(key.subject, "raw"), 5, source="push", observed_at=clock.now())
            for key in derived
        ],
        force=True,
    )
    snapshot = await builder.build(derived)  # every derived entry is outdated: re-derived
    assert all(snapshot.value(key) == 10 for key in derived)
    assert cache.invalidations.calls == 20
    assert cache.invalidations.peak == 4
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


# -- B-TIME-1 ----------------------------------------------------------------------------------


async def test_b_time_1_deadline_errors_are_resolution_errors(clock: VirtualClock) -> None:
    builder = builder_of(single("slow", delay=0.2), clock=clock)
    snapshot = await builder.build([k("a")], strict=False, deadline_seconds=0.02)
    assert only_failure(snapshot, k("a")).error_type == "SnapshotDeadlineExceededError"
    with pytest.raises(SnapshotBuildError) as caught:
        await builder.build([k("b")], deadline_seconds=0.02)
    error = caught.value.errors[k("b")]
    assert isinstance(error, ResourceResolutionError)
    assert error.failures[0].error_type == "SnapshotDeadlineExceededError"
    await builder.aclose()


async def test_b_time_1_a_joiner_past_its_deadline_gets_a_resolution_error(
    clock: VirtualClock,
) -> None:
    builder = builder_of(single("slow", delay=0.2), clock=clock)
    owner = asyncio.create_task(builder.build([k("a")]))
    await asyncio.sleep(0)
    joined = await builder.build([k("a")], strict=False, deadline_seconds=0.02)
    error = joined.errors[k("a")]
    assert isinstance(error, ResourceResolutionError)
    assert error.failures[0].error_type == "SnapshotDeadlineExceededError"
    assert (await owner).value(k("a")) == "v"
    await builder.aclose()


async def test_b_time_1_a_batch_deadline_is_a_resolution_error(clock: VirtualClock) -> None:
    async def slow(keys: Sequence[ResourceKey], _ctx: FetchContext) -> dict[ResourceKey, str]:
        await asyncio.sleep(0.2)
        return dict.fromkeys(keys, "v")

    batch = CallableBatchSource(name="b", priority=1, supports=yes, fetcher=slow)
    builder = builder_of(batch, clock=clock)
    snapshot = await builder.build([k("a"), k("b")], strict=False, deadline_seconds=0.02)
    for key in (k("a"), k("b")):
        assert only_failure(snapshot, key).error_type == "SnapshotDeadlineExceededError"
    await builder.aclose()


# -- B-TIME-2 ----------------------------------------------------------------------------------


async def test_b_time_2_the_call_timeout_starts_once_capacity_is_held(
    clock: VirtualClock,
) -> None:
    source = single("s", delay=0.03, timeout_seconds=0.04, queue_timeout_seconds=0.2)
    builder = builder_of(source, clock=clock, max_concurrency=1)
    lease = await builder.capacity.acquire("s")
    asyncio.get_running_loop().call_later(0.06, lease.release)
    snapshot = await builder.build([k("a")])
    assert snapshot.value(k("a")) == "v"
    await builder.aclose()


async def test_b_time_2_which_limit_binds_decides_the_error(clock: VirtualClock) -> None:
    builder = builder_of(
        single("s", delay=1.0, timeout_seconds=0.05, queue_timeout_seconds=0.1),
        clock=clock,
        max_concurrency=1,
    )
    snapshot = await builder.build([k("a")], strict=False)
    assert only_failure(snapshot, k("a")).error_type == "SourceTimeoutError"
    snapshot = await builder.build([k("a")], strict=False, deadline_seconds=0.01)
    assert only_failure(snapshot, k("a")).error_type == "SnapshotDeadlineExceededError"
    lease = await builder.capacity.acquire("s")
    snapshot = await builder.build([k("a")], strict=False)
    assert only_failure(snapshot, k("a")).error_type == "SourceQueueTimeoutError"
    snapshot = await builder.build([k("a")], strict=False, deadline_seconds=0.01)
    assert only_failure(snapshot, k("a")).error_type == "SnapshotDeadlineExceededError"
    lease.release()
    await builder.aclose()


async def test_b_time_2_a_passed_deadline_fails_the_next_phase_at_once(
    clock: VirtualClock,
) -> None:
    first = single("first", delay=1.0, priority=2)
    second = single("second", priority=1)
    builder = builder_of(first, second, clock=clock)
    snapshot = await builder.build([k("a")], strict=False, deadline_seconds=0.05)
    error = snapshot.errors[k("a")]
    assert isinstance(error, ResourceResolutionError)
    assert [f.source for f in error.failures] == ["first", "second"]
    assert error.failures[1].error_type == "SnapshotDeadlineExceededError"
    assert error.failures[1].message == (
        "snapshot deadline exceeded before waiting for capacity for source second "
        f"while resolving {k('a')}"
    )
    await builder.aclose()


# -- B-TIME-3 ----------------------------------------------------------------------------------


async def test_b_time_3_single_source_messages(clock: VirtualClock) -> None:
    key = k("a")
    builder = builder_of(
        single("s", delay=1.0, timeout_seconds=0.01, queue_timeout_seconds=0.05),
        clock=clock,
        max_concurrency=1,
    )
    messages = []
    messages.append(only_failure(await builder.build([key], strict=False), key).message)
    messages.append(
        only_failure(await builder.build([key], strict=False, deadline_seconds=0.005), key).message
    )
    lease = await builder.capacity.acquire("s")
    messages.append(only_failure(await builder.build([key], strict=False), key).message)
    messages.append(
        only_failure(await builder.build([key], strict=False, deadline_seconds=0.005), key).message
    )
    lease.release()
    assert messages == [
        f"source s timed out after 0.010s while resolving {key}",
        f"snapshot deadline exceeded while calling source s while resolving {key}",
        f"source s waited more than 0.050s for capacity while resolving {key}",
        f"snapshot deadline exceeded while waiting for capacity for source s while resolving {key}",
    ]
    await builder.aclose()


async def test_b_time_3_batch_messages_have_no_key_suffix(clock: VirtualClock) -> None:
    async def slow(keys: Sequence[ResourceKey], _ctx: FetchContext) -> dict[ResourceKey, str]:
        await asyncio.sleep(1.0)
        return dict.fromkeys(keys, "v")

    batch = CallableBatchSource(
        name="b",
        priority=1,
        supports=yes,
        fetcher=slow,
        timeout_seconds=0.01,
        queue_timeout_seconds=0.05,
    )
    builder = builder_of(batch, clock=clock, max_concurrency=1)
    key = k("a")
    timed_out = only_failure(await builder.build([key], strict=False), key)
    assert timed_out.message == "source b timed out after 0.010s"
    lease = await builder.capacity.acquire("b")
    queued = only_failure(await builder.build([key], strict=False), key)
    assert queued.message == "source b waited more than 0.050s for capacity"
    lease.release()
    await builder.aclose()


# -- B-TIME-4 ----------------------------------------------------------------------------------


async def test_b_time_4_deadline_and_queue_timeouts_are_not_retried_nor_circuit_failures(
    clock: VirtualClock,
) -> None:
    circuit = CircuitBreakerPolicy(failure_threshold=1)
    source = single(
        "s",
        delay=1.0,
        queue_timeout_seconds=0.05,
        resilience_policy=SourceResiliencePolicy(
            retry=RetryPolicy(max_attempts=3, base_delay_seconds=0.0, jitter_ratio=0.0),
            circuit=circuit,
        ),
    )
    breaker = CircuitBreaker(clock=clock)
    builder = builder_of(source, clock=clock, max_concurrency=1, circuit_breaker=breaker)
    key = k("a")
    deadline = only_failure(await builder.build([key], strict=False, deadline_seconds=0.03), key)
    assert (deadline.error_type, deadline.attempts) == ("SnapshotDeadlineExceededError", 1)
    lease = await builder.capacity.acquire("s")
    queued = only_failure(await builder.build([key], strict=False), key)
    assert (queued.error_type, queued.attempts) == ("SourceQueueTimeoutError", 1)
    lease.release()
    state = await breaker.state_for("s", policy=circuit)
    assert state is CircuitState.CLOSED
    health = await builder.health_snapshot()
    assert health.deadline_exceeded_count == 1
    assert health.queue_timeout_count == 1
    await builder.aclose()


async def test_b_time_4_counts_per_key_for_single_and_per_call_for_batch(
    clock: VirtualClock,
) -> None:
    async def slow(keys: Sequence[ResourceKey], _ctx: FetchContext) -> dict[ResourceKey, str]:
        await asyncio.sleep(1.0)
        return dict.fromkeys(keys, "v")

    batch = CallableBatchSource(
        name="b", priority=1, supports=lambda key: key.name == "b", fetcher=slow
    )
    hanging = CallableSource(
        name="s", priority=1, supports=lambda key: key.name == "s", fetcher=sleeper(1.0)
    )
    builder = builder_of(batch, hanging, clock=clock)
    await builder.build(ks(3, "b"), strict=False, deadline_seconds=0.03)
    assert (await builder.health_snapshot()).deadline_exceeded_count == 1
    await builder.build(ks(3, "s"), strict=False, deadline_seconds=0.03)
    assert (await builder.health_snapshot()).deadline_exceeded_count == 4
    await builder.aclose()


async def test_b_time_4_source_timeouts_are_retried_counted_and_circuit_failures(
    clock: VirtualClock,
) -> None:
    calls: list[int] = []

    async def raises_timeout(_key: ResourceKey, _ctx: FetchContext) -> str:
        calls.append(1)
        raise TimeoutError("upstream timed out")

    circuit = CircuitBreakerPolicy(failure_threshold=2)
    source = CallableSource(
        name="s",
        priority=1,
        supports=yes,
        fetcher=raises_timeout,
        resilience_policy=SourceResiliencePolicy(
            retry=RetryPolicy(max_attempts=2, base_delay_seconds=0.0, jitter_ratio=0.0),
            circuit=circuit,
        ),
    )
    breaker = CircuitBreaker(clock=clock)
    builder = builder_of(source, clock=clock, circuit_breaker=breaker)
    failure = only_failure(await builder.build([k("a")], strict=False), k("a"))
    assert (failure.error_type, failure.attempts) == ("TimeoutError", 2)
    assert len(calls) == 2
    assert (await builder.health_snapshot()).source_timeout_count == 2
    state = await breaker.state_for("s", policy=circuit)
    assert state is CircuitState.OPEN
    await builder.aclose()


async def test_b_time_4_gate_timeouts_count_as_source_timeouts(clock: VirtualClock) -> None:
    circuit = CircuitBreakerPolicy(failure_threshold=1)
    source = single(
        "s",
        delay=1.0,
        timeout_seconds=0.01,
        resilience_policy=SourceResiliencePolicy(retry=NO_RETRY, circuit=circuit),
    )
    breaker = CircuitBreaker(clock=clock)
    builder = builder_of(source, clock=clock, circuit_breaker=breaker)
    failure = only_failure(await builder.build([k("a")], strict=False), k("a"))
    assert failure.error_type == "SourceTimeoutError"
    assert (await builder.health_snapshot()).source_timeout_count == 1
    state = await breaker.state_for("s", policy=circuit)
    assert state is CircuitState.OPEN
    await builder.aclose()


# -- B-TIME-5 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("deadline", [0, 0.0, -1.0])
async def test_b_time_5_deadline_must_be_positive(clock: VirtualClock, deadline: float) -> None:
    builder = builder_of(single("s"), clock=clock)
    with pytest.raises(ValueError, match=r"^deadline_seconds must be positive$"):
        await builder.build([k("a")], deadline_seconds=deadline)
    with pytest.raises(ValueError, match=r"^deadline_seconds must be positive$"):
        builder.session(deadline_seconds=deadline)
    await builder.aclose()


async def test_b_time_5_an_empty_key_list_is_refused(clock: VirtualClock) -> None:
    builder = builder_of(single("s"), clock=clock)
    message = r"^at least one resource key is required$"
    with pytest.raises(ValueError, match=message):
        await builder.build([])
    session = builder.session()
    with pytest.raises(ValueError, match=message):
        await session.resolve([])
    await session.resolve([k("a")])
    with pytest.raises(ValueError, match=message):
        await session.revalidate([])
    await builder.aclose()
