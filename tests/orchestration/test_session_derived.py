"""SnapshotSession.revalidate and derived values: transitive refresh, consistency between a
derived value and the revisions it was computed from, and failures."""

from __future__ import annotations

import asyncio

import pytest
from tests.orchestration.session_support import (
    ACCOUNT,
    EXPOSURE,
    HEADROOM,
    LIMIT,
    LONG,
    POSITION,
    PRICE,
    Derived,
    Source,
    check_consistent,
    publish,
    risk_rules,
)

from coalestra.core import (
    FreshnessPolicy,
    Snapshot,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
)
from coalestra.orchestration import PolicyResolver, SnapshotBuilder
from coalestra.resilience import CircuitBreaker, RetryPolicy
from coalestra.testing import VirtualClock

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

    assert list(updated) == [POSITION, PRICE, EXPOSURE, LIMIT, HEADROOM, ACCOUNT]
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


async def test_forcing_a_derived_key_rederives_it_from_changed_dependencies(
    builder: SnapshotBuilder, derived: Derived
) -> None:
    session = builder.session()
    await session.resolve([EXPOSURE])  # its dependencies are not pinned
    await publish(builder, PRICE, 20)

    updated = await session.revalidate([EXPOSURE], force_refresh=True)

    assert updated.value(EXPOSURE) == 20
    assert session.snapshot().value(EXPOSURE) == 20
    again = await session.revalidate([EXPOSURE], force_refresh=True)
    assert again.value(EXPOSURE) == 20  # derived again: forced keys bypass the cache
    assert derived.count(EXPOSURE) == 3

    await publish(builder, PRICE, 30)
    fresh_session = builder.session()  # never resolved EXPOSURE: nothing to revalidate
    with pytest.raises(ValueError, match="already resolved"):
        await fresh_session.revalidate([EXPOSURE], force_refresh=True)


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


async def test_a_derived_value_uses_the_zero_ttl_revision_its_revalidation_fetched(
    clock: VirtualClock, source: Source, derived: Derived
) -> None:
    # PRICE has TTL 0: it is fresh only at age 0 (both freshness bounds are inclusive), so the
    # revision a revalidation fetches is the one its derivation reads in the same instant, and
    # EXPOSURE is committed beside exactly that PRICE revision.
    builder = SnapshotBuilder(
        [source, derived],
        clock=clock,
        policy_resolver=PolicyResolver(LONG, overrides={PRICE: FreshnessPolicy(ttl_seconds=0.0)}),
        retry_policy=RetryPolicy(max_attempts=1),
    )
    source.delays[PRICE] = 0.1
    session = builder.session()
    before = await session.resolve([PRICE, EXPOSURE])
    await asyncio.sleep(1.0)

    result = await session.revalidate([PRICE], strict=False)

    assert result.error_for(EXPOSURE) is None
    after = session.snapshot()
    assert after[PRICE].version != before[PRICE].version
    check_consistent(after)
    await builder.aclose()


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


async def test_consistency_scope_is_the_requested_keys_only(
    source: Source, clock: VirtualClock
) -> None:
    derived = risk_rules()
    # B-SRC-6's opt-in: a derived value is stamped with its oldest dependency's observed_at
    derived.observed_at_from_dependencies = True  # type: ignore[attr-defined]
    builder = SnapshotBuilder(
        [source, derived],
        clock=clock,
        default_policy=LONG,
        retry_policy=RetryPolicy(max_attempts=1),
        circuit_breaker=CircuitBreaker(failure_threshold=1000, clock=clock),
    )
    session = builder.session()
    await session.resolve([POSITION, PRICE, EXPOSURE])
    await asyncio.sleep(10)  # EXPOSURE is observed as its oldest dependency, PRICE, 10 s ago
    source.values[POSITION] = {"qty": 3}

    lenient = SnapshotConsistencyPolicy(2.0)
    updated = await session.revalidate([POSITION], force_refresh=True, consistency_policy=lenient)
    assert updated.value(EXPOSURE) == 30

    source.values[POSITION] = {"qty": 4}
    await asyncio.sleep(1)
    # Derived values are never in a revalidation's scope, include_optional_resources or not.
    wide = SnapshotConsistencyPolicy(2.0, include_optional_resources=True)
    updated = await session.revalidate([POSITION], force_refresh=True, consistency_policy=wide)
    assert updated.value(EXPOSURE) == 40
    with pytest.raises(SnapshotConsistencyError):
        await session.revalidate([POSITION, PRICE], force_refresh=False, consistency_policy=lenient)
    assert session.snapshot().value(EXPOSURE) == 40
