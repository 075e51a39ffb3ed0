"""SnapshotSession.revalidate: newest revisions, force_refresh, transactions, consistency,
counters."""

from __future__ import annotations

import asyncio

import pytest
from tests.orchestration.conftest import timed_out
from tests.orchestration.session_support import (
    ACCOUNT,
    OPEN_ORDERS,
    POSITION,
    Source,
    publish,
)

from coalestra.core import (
    SessionClosedError,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
)
from coalestra.orchestration import SnapshotBuilder
from coalestra.testing import VirtualClock

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

    assert list(updated) == [POSITION, ACCOUNT]  # the whole session
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


async def test_revalidate_refuses_keys_not_seen_before(
    builder: SnapshotBuilder, source: Source
) -> None:
    session = builder.session()
    with pytest.raises(ValueError, match="already resolved in this session: account:balance"):
        await session.revalidate([ACCOUNT])
    assert source.count(ACCOUNT) == 0
    with pytest.raises(ValueError, match="at least one resource key is required"):
        await session.revalidate([])


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


async def test_revalidation_after_the_deadline_keeps_the_state(
    builder: SnapshotBuilder, source: Source
) -> None:
    session = builder.session(deadline_seconds=1.0)
    before = await session.resolve([ACCOUNT])
    await asyncio.sleep(2)  # past the session's deadline

    result = await session.revalidate([ACCOUNT], strict=False, force_refresh=True)

    assert timed_out(result.error_for(ACCOUNT))
    assert source.count(ACCOUNT) == 1  # the deadline passed: the source was not called again
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
        assert caught.value.snapshot.value(POSITION) == {"qty": 1}  # the state kept
        assert session.snapshot()[POSITION].version == before[POSITION].version


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
