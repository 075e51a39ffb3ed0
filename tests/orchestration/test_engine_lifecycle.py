"""Cancellation at every await of a build, and the builder's lifecycle: nothing may be left
behind (tasks, capacity slots, waiters, single-flight entries), and a closed builder refuses
work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from tests.doubles import ForwardsGetMany, ForwardsSetIfNewer, ForwardsSetManyIfNewer
from tests.orchestration.conftest import (
    Batch,
    Derived,
    Gate,
    Single,
    assert_quiet,
    key,
    keys,
    make_builder,
    settle,
)

from coalestra.adapters import CallableSource
from coalestra.core import (
    FetchContext,
    FreshnessPolicy,
    RefreshMode,
    ResourceKey,
    SessionClosedError,
    SnapshotBuildError,
    SnapshotRequest,
)
from coalestra.orchestration import SnapshotBuilder
from coalestra.resilience import RetryPolicy
from coalestra.testing import VirtualClock

A, B = keys("A", "B")


class GatedCache(ForwardsGetMany, ForwardsSetIfNewer, ForwardsSetManyIfNewer):
    """An :class:`AsyncMemoryCache` whose batch read or write can be made to park on a gate."""

    validates_source_authority = True

    def __init__(self) -> None:
        super().__init__()
        self.read_gate: Gate | None = None
        self.write_gate: Gate | None = None

    async def before(self, call: str, count: int) -> None:
        gate = {"get_many": self.read_gate, "set_many_if_newer": self.write_gate}.get(call)
        if gate is not None:
            await gate.wait()


@dataclass
class Scenario:
    """A builder plus a way to park one build at a particular await."""

    builder: SnapshotBuilder
    keys: list[ResourceKey]
    parked: Callable[[], Awaitable[None]]
    helpers: list[asyncio.Task[Any]] = field(default_factory=list)
    sources: list[Any] = field(default_factory=list)


async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("the build never reached the await under test")


def in_source_call(clock: VirtualClock) -> Scenario:
    gate = Gate()
    source = Single("rest", 1, lambda _k, _c: gate.wait())
    return Scenario(make_builder([source], clock), [A], gate.arrived.wait, sources=[source])


def in_batch_call(clock: VirtualClock) -> Scenario:
    gate = Gate()

    async def parked(ks: tuple[ResourceKey, ...], _c: Any) -> Any:
        await gate.wait()
        return {k: 1 for k in ks}

    source = Batch("batch", 1, parked)
    return Scenario(make_builder([source], clock), [A, B], gate.arrived.wait, sources=[source])


def queued_for_capacity(clock: VirtualClock) -> Scenario:
    gate = Gate()
    source = Single("rest", 1, lambda _k, _c: gate.wait())
    builder = make_builder([source], clock, max_concurrency=1)
    scenario = Scenario(builder, [B], settle, sources=[source])

    async def parked() -> None:
        scenario.helpers.append(asyncio.create_task(builder.build([A])))
        await gate.arrived.wait()
        for _ in range(200):
            if (await builder.capacity_snapshot())["__global__"].waiting:
                return
            await asyncio.sleep(0)
        raise AssertionError("the build never queued for capacity")

    scenario.parked = parked
    return scenario


def in_retry_backoff(clock: VirtualClock) -> Scenario:
    def down(_k: ResourceKey, _c: Any) -> Any:
        raise RuntimeError("down")

    source = Single("flaky", 1, down)
    retry = RetryPolicy(max_attempts=3, base_delay_seconds=100.0, max_delay_seconds=100.0)
    builder = make_builder([source], clock, retry_policy=retry)
    return Scenario(builder, [A], lambda: _until(lambda: len(source.calls) == 1), sources=[source])


def joined_to_a_flight(clock: VirtualClock) -> Scenario:
    gate = Gate()
    source = Single("rest", 1, lambda _k, _c: gate.wait())
    builder = make_builder([source], clock)
    scenario = Scenario(builder, [A], settle, sources=[source])

    async def parked() -> None:
        scenario.helpers.append(asyncio.create_task(builder.build([A])))
        await gate.arrived.wait()
        await settle()

    scenario.parked = parked
    return scenario


def waiting_for_dependencies(clock: VirtualClock) -> Scenario:
    gate = Gate()
    raw = Single("raw", 1, lambda _k, _c: gate.wait(), supports=lambda k: k.name == "raw")
    derived = Derived(
        "derived", 10, lambda k: (key(k.subject, "raw"),), supports=lambda k: k.name == "d"
    )
    builder = make_builder([derived, raw], clock)
    return Scenario(builder, [key("x", "d")], gate.arrived.wait, sources=[raw, derived])


def in_derive_call(clock: VirtualClock) -> Scenario:
    gate = Gate()
    raw = Single("raw", 1, supports=lambda k: k.name == "raw")

    async def parked(*_args: Any) -> Any:
        await gate.wait()

    derived = Derived(
        "derived",
        10,
        lambda k: (key(k.subject, "raw"),),
        parked,
        supports=lambda k: k.name == "d",
    )
    builder = make_builder([derived, raw], clock)
    return Scenario(builder, [key("x", "d")], gate.arrived.wait, sources=[raw, derived])


def in_cache_read(clock: VirtualClock) -> Scenario:
    cache = GatedCache()
    cache.read_gate = Gate()
    builder = make_builder([Single("rest", 1)], clock, cache=cache)
    return Scenario(builder, [A], cache.read_gate.arrived.wait)


def in_cache_write(clock: VirtualClock) -> Scenario:
    cache = GatedCache()
    cache.write_gate = Gate()
    builder = make_builder([Single("rest", 1)], clock, cache=cache)
    return Scenario(builder, [A], cache.write_gate.arrived.wait)


SOLO_SCENARIOS = [
    in_source_call,
    in_batch_call,
    in_retry_backoff,
    waiting_for_dependencies,
    in_derive_call,
    in_cache_read,
    in_cache_write,
]
SCENARIOS = [*SOLO_SCENARIOS, queued_for_capacity, joined_to_a_flight]


@pytest.mark.parametrize("make", SCENARIOS, ids=lambda f: f.__name__)
async def test_cancelling_a_build_then_closing_leaves_nothing_behind(
    clock: VirtualClock, make: Callable[[VirtualClock], Scenario]
) -> None:
    start = set(asyncio.all_tasks())
    scenario = make(clock)
    build = asyncio.create_task(scenario.builder.build(scenario.keys))
    await scenario.parked()

    build.cancel()
    with pytest.raises(asyncio.CancelledError):
        await build
    await scenario.builder.aclose()
    await asyncio.gather(*scenario.helpers, return_exceptions=True)

    assert set(asyncio.all_tasks()) == start
    await assert_quiet(scenario.builder)
    health = await scenario.builder.health_snapshot()
    assert health.closed
    assert health.background_refreshes == 0


@pytest.mark.parametrize("make", SOLO_SCENARIOS, ids=lambda f: f.__name__)
async def test_a_cancelled_build_releases_its_work_without_aclose(
    clock: VirtualClock, make: Callable[[VirtualClock], Scenario]
) -> None:
    """With nobody else waiting, cancelling the only build ends its work at once."""
    start = set(asyncio.all_tasks())
    scenario = make(clock)
    build = asyncio.create_task(scenario.builder.build(scenario.keys))
    await scenario.parked()

    build.cancel()
    await asyncio.gather(build, return_exceptions=True)
    await settle()

    assert set(asyncio.all_tasks()) == start
    assert [source.active for source in scenario.sources] == [0] * len(scenario.sources)
    await assert_quiet(scenario.builder)
    await scenario.builder.aclose()


async def test_a_cancelled_build_does_not_cache_a_partial_result(clock: VirtualClock) -> None:
    gate = Gate()
    source = Single("rest", 1, lambda _k, _c: gate.wait())
    builder = make_builder([source], clock)
    build = asyncio.create_task(builder.build([A]))
    await gate.arrived.wait()
    build.cancel()
    await asyncio.gather(build, return_exceptions=True)
    await settle()

    source.handler = lambda _k, _c: "second"
    snapshot = await builder.build([A])

    assert snapshot.value(A) == "second"
    assert source.calls == [A, A]


# --- lifecycle --------------------------------------------------------------------------------


async def test_async_with_closes_the_builder(clock: VirtualClock) -> None:
    async with SnapshotBuilder([Single("rest", 1)], clock=clock) as builder:
        assert not builder.closed
        assert (await builder.build([A])).value(A)["subject"] == "A"
    assert builder.closed
    assert (await builder.health_snapshot()).closed


async def test_aclose_is_idempotent(clock: VirtualClock) -> None:
    builder = make_builder([Single("rest", 1)], clock)

    await builder.aclose()
    await builder.aclose()

    assert builder.closed


async def test_building_after_close_is_a_runtime_error(clock: VirtualClock) -> None:
    source = Single("rest", 1)
    builder = make_builder([source], clock)
    await builder.aclose()

    with pytest.raises(RuntimeError, match=r"^SnapshotBuilder is closed$"):
        await builder.build([A])
    with pytest.raises(RuntimeError, match=r"^SnapshotBuilder is closed$"):
        await builder.build_request(SnapshotRequest(required=[A]))

    assert source.calls == []
    assert source.supports_calls == 0


async def test_aclose_waits_for_background_refreshes(clock: VirtualClock) -> None:
    source = Single("rest", 1, delay=5.0)
    policy = FreshnessPolicy(
        ttl_seconds=1.0, max_stale_seconds=61.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
    )
    builder = make_builder([source], clock, default_policy=policy)
    await builder.build([A])
    await asyncio.sleep(2.0)
    await builder.build([A])
    start = clock.monotonic()

    await builder.aclose()

    assert clock.monotonic() - start == pytest.approx(5.0)
    assert source.finished == 2
    assert source.cancelled == 0


async def test_aclose_can_cancel_a_hung_background_refresh(clock: VirtualClock) -> None:
    start_tasks = set(asyncio.all_tasks())
    hang = Gate()
    calls = 0

    async def first_then_hang(_k: ResourceKey, _c: Any) -> str:
        nonlocal calls
        calls += 1
        if calls > 1:
            await hang.wait()
        return "v"

    source = Single("rest", 1, first_then_hang)
    policy = FreshnessPolicy(
        ttl_seconds=1.0, max_stale_seconds=61.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
    )
    builder = make_builder([source], clock, default_policy=policy)
    await builder.build([A])
    await asyncio.sleep(2.0)
    await builder.build([A])
    await hang.arrived.wait()
    start = clock.monotonic()

    await builder.aclose(cancel_refreshes=True)

    assert clock.monotonic() == start
    assert source.cancelled == 1
    assert set(asyncio.all_tasks()) == start_tasks
    await assert_quiet(builder)


async def test_aclose_ends_a_build_in_progress(clock: VirtualClock) -> None:
    gate = Gate()
    source = Single("rest", 1, lambda _k, _c: gate.wait())
    builder = make_builder([source], clock)
    start_tasks = set(asyncio.all_tasks())
    build = asyncio.create_task(builder.build([A]))
    await gate.arrived.wait()

    await builder.aclose()
    (outcome,) = await asyncio.gather(build, return_exceptions=True)

    assert isinstance(outcome, (SnapshotBuildError, asyncio.CancelledError, SessionClosedError))
    assert source.cancelled == 1
    assert set(asyncio.all_tasks()) == start_tasks
    await assert_quiet(builder)


async def test_aclose_right_after_a_failed_build_returns() -> None:
    # On Python 3.12+ gather() of tasks that are already done returns without yielding, so a
    # shutdown loop waiting for the tasks' own done callbacks spun forever here (the group task
    # ended, its callbacks were queued, and the loop never ran them).
    async def fail(key: ResourceKey, context: FetchContext) -> int:
        raise ValueError("down")

    builder = SnapshotBuilder(
        [CallableSource(name="down", priority=1, supports=lambda key: True, fetcher=fail)]
    )
    with pytest.raises(SnapshotBuildError):
        await builder.build([ResourceKey("m", "p", f"K{i}") for i in range(3)])
    await builder.aclose()
    assert builder.closed
