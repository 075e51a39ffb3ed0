"""SnapshotSession.revalidate: newest revisions, force_refresh, transitive derived values,
transactions, consistency, counters."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from coalestra.core import (
    DependencyResolutionError,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    SessionClosedError,
    Snapshot,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotDeadlineExceededError,
    SourcePayload,
)
from coalestra.orchestration import PolicyResolver, SnapshotBuilder
from coalestra.resilience import CircuitBreaker, RetryPolicy
from coalestra.testing import VirtualClock

ACCOUNT = ResourceKey("account", "balance", "main")
POSITION = ResourceKey("account", "position", "BTCUSDT")
OPEN_ORDERS = ResourceKey("account", "orders", "BTCUSDT")
PRICE = ResourceKey("market", "price", "BTCUSDT")
EXPOSURE = ResourceKey("risk", "exposure", "BTCUSDT")  # POSITION x PRICE
LIMIT = ResourceKey("risk", "limit", "BTCUSDT")  # EXPOSURE, via nothing else
HEADROOM = ResourceKey("risk", "headroom", "BTCUSDT")  # LIMIT (so EXPOSURE, transitively)
LONG = FreshnessPolicy(ttl_seconds=600.0)


class Source:
    """A single-key source serving ``values``; counts calls, can fail per key."""

    def __init__(self, values: Mapping[ResourceKey, Any]) -> None:
        self.name = "rest"
        self.priority = 10
        self.values = dict(values)
        self.observed: dict[ResourceKey, float] = {}
        self.failing: set[ResourceKey] = set()
        self.delays: dict[ResourceKey, float] = {}
        self.calls: list[ResourceKey] = []

    def supports(self, key: ResourceKey) -> bool:
        return key in self.values

    async def fetch(self, key: ResourceKey, context: FetchContext) -> SourcePayload[Any]:
        self.calls.append(key)
        if key in self.delays:
            await asyncio.sleep(self.delays[key])
        if key in self.failing:
            raise RuntimeError(f"{key} is down")
        return SourcePayload(copy.deepcopy(self.values[key]), observed_at=self.observed.get(key))

    def count(self, key: ResourceKey) -> int:
        return self.calls.count(key)


Deriver = Callable[[Snapshot], Any]


class Derived:
    """A derived source: ``rules[key] = (dependencies, function of the dependency snapshot)``."""

    def __init__(self, rules: Mapping[ResourceKey, tuple[tuple[ResourceKey, ...], Deriver]]):
        self.name = "derived"
        self.priority = 5
        self.rules = dict(rules)
        self.calls: list[ResourceKey] = []

    def supports(self, key: ResourceKey) -> bool:
        return key in self.rules

    def dependencies(self, key: ResourceKey) -> tuple[ResourceKey, ...]:
        return self.rules[key][0]

    async def derive(self, key: ResourceKey, snapshot: Snapshot, context: FetchContext) -> Any:
        self.calls.append(key)
        return self.rules[key][1](snapshot)

    def count(self, key: ResourceKey) -> int:
        return self.calls.count(key)


def exposure(snapshot: Snapshot) -> int:
    return int(snapshot.value(POSITION)["qty"] * snapshot.value(PRICE))


@pytest.fixture
def source() -> Source:
    return Source({ACCOUNT: 100, POSITION: {"qty": 1}, OPEN_ORDERS: [], PRICE: 10})


@pytest.fixture
def derived() -> Derived:
    return Derived(
        {
            EXPOSURE: ((POSITION, PRICE), exposure),
            LIMIT: ((EXPOSURE,), lambda s: s.value(EXPOSURE) * 2),
            HEADROOM: ((LIMIT,), lambda s: s.value(LIMIT) + 1),
        }
    )


@pytest.fixture
async def builder(clock: VirtualClock, source: Source, derived: Derived) -> Any:
    built = SnapshotBuilder(
        [source, derived],
        clock=clock,
        default_policy=LONG,
        retry_policy=RetryPolicy(max_attempts=1),
        circuit_breaker=CircuitBreaker(failure_threshold=1000, clock=clock),
    )
    yield built
    await built.aclose()


async def publish(builder: SnapshotBuilder, key: ResourceKey, value: Any) -> None:
    await asyncio.sleep(1)  # a later observation than anything cached
    result = await builder.publisher.publish(key, value, source="stream")
    assert result.published


def check_consistent(snapshot: Snapshot) -> None:
    """Every derived value in ``snapshot`` was computed from the revisions it holds."""
    for value in snapshot.values():
        for dep, version in value.dependency_versions.items():
            if dep in snapshot:
                assert snapshot[dep].version == version, (value.key, dep)


# -- the product page --------------------------------------------------------------------------


async def test_product_page_revalidation_examples(builder: SnapshotBuilder, source: Source) -> None:
    session = builder.session(deadline_seconds=30.0)
    await session.resolve([POSITION, OPEN_ORDERS, ACCOUNT])
    await publish(builder, POSITION, {"qty": 2})

    updated = await session.revalidate([POSITION, OPEN_ORDERS])
    assert updated.value(POSITION) == {"qty": 2}
    assert source.count(POSITION) == 1  # the published revision, no source call

    source.values[OPEN_ORDERS] = [{"id": 9}]
    await asyncio.sleep(1)  # the source observes later than the publication
    updated = await session.revalidate(
        [POSITION, OPEN_ORDERS],
        force_refresh=True,
    )
    assert updated.value(OPEN_ORDERS) == [{"id": 9}]
    assert updated.value(POSITION) == {"qty": 1}  # the source's revision now
    assert source.count(POSITION) == 2

    updated = await session.revalidate(
        [POSITION, OPEN_ORDERS, ACCOUNT],
        consistency_policy=SnapshotConsistencyPolicy(2.0),
    )
    assert list(updated) == [POSITION, OPEN_ORDERS, ACCOUNT]


async def test_unrelated_pinned_values_are_kept(builder: SnapshotBuilder, source: Source) -> None:
    session = builder.session()
    before = await session.resolve([POSITION, ACCOUNT])
    await publish(builder, ACCOUNT, 5)
    await publish(builder, POSITION, {"qty": 3})

    updated = await session.revalidate([POSITION])

    assert list(updated) == [POSITION]
    after = session.snapshot()
    assert after.value(POSITION) == {"qty": 3}
    assert after[ACCOUNT].version == before[ACCOUNT].version
    assert after.value(ACCOUNT) == 100


async def test_revalidate_reads_the_cache_unless_forced(
    builder: SnapshotBuilder, source: Source
) -> None:
    session = builder.session()
    first = await session.resolve([ACCOUNT])
    source.values[ACCOUNT] = 200

    same = await session.revalidate([ACCOUNT])
    assert same[ACCOUNT].version == first[ACCOUNT].version
    assert source.count(ACCOUNT) == 1

    await asyncio.sleep(1)  # an equal observation time would be a duplicate of the cached one
    forced = await session.revalidate([ACCOUNT], force_refresh=True)
    assert forced.value(ACCOUNT) == 200
    assert source.count(ACCOUNT) == 2
    assert (await builder.build([ACCOUNT])).value(ACCOUNT) == 200  # written to the cache


async def test_revalidate_pins_keys_not_seen_before(builder: SnapshotBuilder) -> None:
    session = builder.session()
    updated = await session.revalidate([ACCOUNT])
    assert updated.value(ACCOUNT) == 100
    assert session.snapshot().value(ACCOUNT) == 100


async def test_revalidate_clears_a_remembered_error(
    builder: SnapshotBuilder, source: Source
) -> None:
    source.failing.add(ACCOUNT)
    session = builder.session()
    await session.resolve([ACCOUNT], strict=False)
    source.failing.clear()
    await session.revalidate([ACCOUNT])
    assert session.snapshot().complete
    assert session.snapshot().value(ACCOUNT) == 100


# -- derived values ----------------------------------------------------------------------------


async def test_the_cache_drops_derived_values_whose_dependency_changed(
    builder: SnapshotBuilder, derived: Derived
) -> None:
    assert (await builder.build([EXPOSURE])).value(EXPOSURE) == 10
    assert (await builder.build([EXPOSURE])).value(EXPOSURE) == 10
    assert derived.count(EXPOSURE) == 1
    await publish(builder, PRICE, 20)
    assert (await builder.build([EXPOSURE])).value(EXPOSURE) == 20
    assert derived.count(EXPOSURE) == 2


async def test_derived_values_are_refreshed_transitively(
    builder: SnapshotBuilder, derived: Derived
) -> None:
    session = builder.session()
    await session.resolve([POSITION, PRICE, EXPOSURE, LIMIT, HEADROOM, ACCOUNT])
    account = session.snapshot()[ACCOUNT]
    await publish(builder, PRICE, 20)

    updated = await session.revalidate([PRICE])

    assert list(updated) == [PRICE, EXPOSURE, LIMIT, HEADROOM]
    assert updated.value(EXPOSURE) == 20
    assert updated.value(LIMIT) == 40
    assert updated.value(HEADROOM) == 41
    pinned = session.snapshot()
    check_consistent(pinned)
    assert pinned.value(HEADROOM) == 41
    assert pinned[ACCOUNT].version == account.version
    assert derived.count(EXPOSURE) == derived.count(HEADROOM) == 2


async def test_derived_values_pinned_through_an_unpinned_intermediate(
    builder: SnapshotBuilder, derived: Derived
) -> None:
    session = builder.session()
    await session.resolve([HEADROOM])  # LIMIT and EXPOSURE are never pinned
    await publish(builder, POSITION, {"qty": 5})

    updated = await session.revalidate([POSITION])

    assert updated.value(HEADROOM) == 101
    assert session.snapshot().value(HEADROOM) == 101


async def test_force_refresh_rederives_once_from_the_new_revision(
    builder: SnapshotBuilder, source: Source, derived: Derived
) -> None:
    session = builder.session()
    await session.resolve([PRICE, EXPOSURE])
    source.values[PRICE] = 30
    await asyncio.sleep(1)

    updated = await session.revalidate([PRICE], force_refresh=True)

    assert updated.value(PRICE) == 30
    assert updated.value(EXPOSURE) == 30
    check_consistent(session.snapshot())
    assert derived.count(EXPOSURE) == 2


async def test_a_pinned_dependency_is_committed_with_its_derived_value(
    builder: SnapshotBuilder,
) -> None:
    session = builder.session()
    await session.resolve([POSITION, PRICE, EXPOSURE])
    await publish(builder, PRICE, 7)  # not selected, but EXPOSURE will be computed from it
    await publish(builder, POSITION, {"qty": 2})

    updated = await session.revalidate([POSITION])

    assert updated.value(EXPOSURE) == 14
    pinned = session.snapshot()
    assert pinned.value(PRICE) == 7
    check_consistent(pinned)


async def test_a_derived_value_whose_dependency_keeps_changing_fails(
    clock: VirtualClock, source: Source, derived: Derived
) -> None:
    # PRICE is never fresh (TTL 0) and each fetch observes a later time, so every read of it,
    # including the one a derivation makes, yields a new revision: EXPOSURE can never be
    # committed beside the PRICE revision it was computed from.
    builder = SnapshotBuilder(
        [source, derived],
        clock=clock,
        policy_resolver=PolicyResolver(LONG, overrides={PRICE: FreshnessPolicy(ttl_seconds=0.0)}),
        retry_policy=RetryPolicy(max_attempts=1),
    )
    source.delays[PRICE] = 0.1
    session = builder.session()
    before = await session.resolve([PRICE, EXPOSURE])

    result = await session.revalidate([PRICE], strict=False)

    error = result.error_for(EXPOSURE)
    assert isinstance(error, DependencyResolutionError)
    assert set(error.errors) == {PRICE}
    after = session.snapshot()
    assert after[EXPOSURE].version == before[EXPOSURE].version
    assert after[PRICE].version == before[PRICE].version
    check_consistent(after)
    await builder.aclose()


# -- transactions ------------------------------------------------------------------------------


async def test_a_failed_revalidation_keeps_the_previous_state(
    builder: SnapshotBuilder, source: Source
) -> None:
    session = builder.session()
    before = await session.resolve([POSITION, OPEN_ORDERS])
    source.values[POSITION] = {"qty": 9}
    source.failing.add(OPEN_ORDERS)

    with pytest.raises(SnapshotBuildError) as caught:
        await session.revalidate([POSITION, OPEN_ORDERS], force_refresh=True)

    assert set(caught.value.errors) == {OPEN_ORDERS}
    assert caught.value.snapshot.value(POSITION) == {"qty": 1}  # the retained revision
    after = session.snapshot()
    assert after[POSITION].version == before[POSITION].version
    assert after[OPEN_ORDERS].version == before[OPEN_ORDERS].version
    assert after.complete


async def test_non_strict_failure_returns_transient_errors(
    builder: SnapshotBuilder, source: Source
) -> None:
    session = builder.session()
    before = await session.resolve([POSITION, OPEN_ORDERS])
    source.failing.add(OPEN_ORDERS)

    result = await session.revalidate([POSITION, OPEN_ORDERS], strict=False, force_refresh=True)

    assert result.value(OPEN_ORDERS) == []  # retained
    assert result[POSITION].version == before[POSITION].version
    assert set(result.errors) == {OPEN_ORDERS}
    assert not result.complete
    assert session.snapshot().complete  # the errors were not stored
    again = await session.resolve([OPEN_ORDERS])
    assert again[OPEN_ORDERS].version == before[OPEN_ORDERS].version


async def test_failed_derived_refresh_keeps_its_dependencies(
    builder: SnapshotBuilder, derived: Derived
) -> None:
    session = builder.session()
    before = await session.resolve([PRICE, EXPOSURE])
    await publish(builder, PRICE, 0)

    def broken(snapshot: Snapshot) -> int:
        raise ZeroDivisionError("no price")

    derived.rules[EXPOSURE] = ((POSITION, PRICE), broken)
    result = await session.revalidate([PRICE], strict=False)

    assert set(result.errors) == {EXPOSURE}
    after = session.snapshot()
    assert after[PRICE].version == before[PRICE].version
    assert after.value(PRICE) == 10
    assert after[EXPOSURE].version == before[EXPOSURE].version


async def test_revalidation_after_the_deadline_keeps_the_state(
    builder: SnapshotBuilder,
) -> None:
    session = builder.session(deadline_seconds=1.0)
    before = await session.resolve([ACCOUNT])
    await publish(builder, ACCOUNT, 1)  # publish() sleeps past the deadline

    result = await session.revalidate([ACCOUNT], strict=False)

    assert isinstance(result.error_for(ACCOUNT), SnapshotDeadlineExceededError)
    assert session.snapshot()[ACCOUNT].version == before[ACCOUNT].version


# -- consistency -------------------------------------------------------------------------------


async def test_consistency_violation_always_raises_and_keeps_the_state(
    builder: SnapshotBuilder, source: Source, clock: VirtualClock
) -> None:
    session = builder.session()
    before = await session.resolve([POSITION, OPEN_ORDERS])
    await asyncio.sleep(20)
    source.values[POSITION] = {"qty": 4}
    source.observed[POSITION] = clock.now() - 10.0  # newer than the cached revision

    for strict in (True, False):
        with pytest.raises(SnapshotConsistencyError) as caught:
            await session.revalidate(
                [POSITION, OPEN_ORDERS],
                strict=strict,
                force_refresh=True,
                consistency_policy=SnapshotConsistencyPolicy(2.0),
            )
        assert caught.value.oldest_key == POSITION
        assert caught.value.snapshot.value(POSITION) == {"qty": 4}  # the rejected revision
        assert session.snapshot()[POSITION].version == before[POSITION].version


async def test_consistency_scope_includes_derived_values_only_on_request(
    builder: SnapshotBuilder, source: Source, clock: VirtualClock
) -> None:
    session = builder.session()
    await session.resolve([POSITION, PRICE, EXPOSURE])
    await asyncio.sleep(10)  # EXPOSURE is observed as its oldest dependency, PRICE, 10 s ago
    source.values[POSITION] = {"qty": 3}

    lenient = SnapshotConsistencyPolicy(2.0)
    updated = await session.revalidate([POSITION], force_refresh=True, consistency_policy=lenient)
    assert updated.value(EXPOSURE) == 30

    source.values[POSITION] = {"qty": 4}
    await asyncio.sleep(1)
    strict_scope = SnapshotConsistencyPolicy(2.0, include_optional_resources=True)
    with pytest.raises(SnapshotConsistencyError):
        await session.revalidate([POSITION], force_refresh=True, consistency_policy=strict_scope)
    assert session.snapshot().value(EXPOSURE) == 30


# -- counters and closing ----------------------------------------------------------------------


async def test_health_counts_attempts_and_failures(
    builder: SnapshotBuilder, source: Source
) -> None:
    session = builder.session()
    await session.resolve([ACCOUNT, POSITION])
    await session.revalidate([ACCOUNT])
    source.failing.add(POSITION)
    await session.revalidate([POSITION], strict=False, force_refresh=True)
    with pytest.raises(SnapshotBuildError):
        await session.revalidate([POSITION], force_refresh=True)

    health = await builder.health_snapshot()

    assert health.revalidation_attempt_count == 3
    assert health.revalidation_failure_count == 2


async def test_revalidate_refuses_bad_arguments_and_closed_sessions(
    builder: SnapshotBuilder,
) -> None:
    session = builder.session()
    with pytest.raises(TypeError, match="force_refresh"):
        await session.revalidate([ACCOUNT], force_refresh="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="consistency_policy"):
        await session.revalidate([ACCOUNT], consistency_policy=2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys"):
        await session.revalidate([ACCOUNT.namespace])  # type: ignore[list-item]
    await session.close()
    with pytest.raises(SessionClosedError):
        await session.revalidate([ACCOUNT])
    health = await builder.health_snapshot()
    assert health.revalidation_attempt_count == 0
