"""SnapshotSession stages: identity, pinning, remembered errors, isolation, deadline, closing."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable
from typing import Any

import pytest
from tests.orchestration.conftest import timed_out
from tests.orchestration.session_support import (
    ACCOUNT,
    LONG,
    MARKET_HEALTH,
    OPEN_ORDERS,
    POSITION,
    PRICE,
    Source,
    make_builder,
)

from coalestra.adapters import CallableSource
from coalestra.core import (
    FetchContext,
    ResourceKey,
    SessionClosedError,
    Snapshot,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotRequest,
)
from coalestra.orchestration import SnapshotBuilder, SnapshotSession
from coalestra.testing import VirtualClock


@pytest.fixture
def source() -> Source:
    return Source(
        {
            ACCOUNT: {"balance": 100},
            POSITION: {"qty": 1},
            OPEN_ORDERS: [{"id": 1}],
            PRICE: {"price": "65000.00"},
            MARKET_HEALTH: "ok",
        }
    )


@pytest.fixture
async def builder(clock: VirtualClock, source: Source) -> Any:
    built = make_builder(clock, source)
    yield built
    await built.aclose()


# -- the product page --------------------------------------------------------------------------


async def test_product_page_session_example(clock: VirtualClock) -> None:
    calls: list[ResourceKey] = []
    contexts: list[FetchContext] = []
    data = {ACCOUNT: {"balance": 100}, POSITION: {"qty": 1}, OPEN_ORDERS: [{"id": 1}]}

    async def fetch(key: ResourceKey, context: FetchContext) -> Any:
        calls.append(key)
        contexts.append(context)
        return copy.deepcopy(data[key])

    rest = CallableSource(name="rest", priority=10, supports=data.__contains__, fetcher=fetch)
    builder = SnapshotBuilder([rest], clock=clock, default_policy=LONG)
    baseline_keys = [ACCOUNT, POSITION]

    def choose_resources_from(snapshot: Snapshot) -> list[ResourceKey]:
        return [POSITION, OPEN_ORDERS] if snapshot.value(POSITION)["qty"] else [ACCOUNT]

    async with builder.session(
        snapshot_id="cycle-42",
        deadline_seconds=3.0,
        metadata={"tenant": "example"},
    ) as session:
        baseline = await session.resolve(baseline_keys, strict=False)
        selected = choose_resources_from(baseline)
        final = await session.resolve(selected, strict=False)

    assert baseline.snapshot_id == final.snapshot_id == "cycle-42"
    assert list(final) == [ACCOUNT, POSITION, OPEN_ORDERS]  # the whole session so far
    assert final.value(OPEN_ORDERS) == [{"id": 1}]
    assert final[POSITION].version == baseline[POSITION].version
    assert calls == [ACCOUNT, POSITION, OPEN_ORDERS]
    assert all(ctx.metadata == {"tenant": "example"} for ctx in contexts)
    assert all(ctx.snapshot_id == "cycle-42" for ctx in contexts)
    assert session.closed
    await builder.aclose()


async def test_product_page_retry_errors_example(builder: SnapshotBuilder, source: Source) -> None:
    key = ACCOUNT
    source.failing.add(key)
    session = builder.session()
    first = await session.resolve([key], strict=False)
    assert isinstance(first.error_for(key), Exception)
    source.failing.clear()

    await session.resolve([key], retry_errors=True)

    assert session.snapshot().value(key) == {"balance": 100}
    assert source.count(key) == 2


# -- identity ----------------------------------------------------------------------------------


async def test_identity_and_context(builder: SnapshotBuilder, clock: VirtualClock) -> None:
    await asyncio.sleep(5)
    session = builder.session(snapshot_id="s-1", deadline_seconds=2.0, metadata={"a": 1})
    assert isinstance(session, SnapshotSession)
    assert session.snapshot_id == "s-1"
    assert session.created_at == clock.now()
    assert session.context.metadata == {"a": 1}
    assert session.context.deadline_monotonic == clock.monotonic() + 2.0
    await asyncio.sleep(1)
    snapshot = await session.resolve([ACCOUNT])
    assert snapshot.created_at == session.created_at
    assert session.snapshot().snapshot_id == "s-1"


async def test_sessions_get_distinct_generated_ids(builder: SnapshotBuilder) -> None:
    assert builder.session().snapshot_id != builder.session().snapshot_id


# -- pinning -----------------------------------------------------------------------------------


async def test_pinned_value_survives_publication(builder: SnapshotBuilder, source: Source) -> None:
    session = builder.session()
    first = await session.resolve([PRICE])
    await asyncio.sleep(1)
    result = await builder.publisher.publish(PRICE, {"price": "1.00"}, source="stream")
    assert result.published

    later = await session.resolve([PRICE, ACCOUNT])

    assert later.value(PRICE) == {"price": "65000.00"}
    assert later[PRICE].version == first[PRICE].version
    assert source.count(PRICE) == 1
    fresh_build = await builder.build([PRICE])
    assert fresh_build.value(PRICE) == {"price": "1.00"}
    new_session = builder.session()
    assert (await new_session.resolve([PRICE])).value(PRICE) == {"price": "1.00"}


async def test_pinned_keys_read_neither_cache_nor_source(
    builder: SnapshotBuilder, source: Source
) -> None:
    session = builder.session()
    await session.resolve([PRICE, ACCOUNT])
    stats = builder.cache.stats  # type: ignore[attr-defined]
    before = await stats()

    again = await session.resolve([ACCOUNT, PRICE])

    after = await stats()
    assert (after.hits, after.misses) == (before.hits, before.misses)
    assert source.calls == [PRICE, ACCOUNT]
    assert list(again) == [PRICE, ACCOUNT]  # the session's keys, in the order resolved
    # Diagnostics accumulate across the session: only the first stage read the cache.
    assert (again.diagnostics.cache_hits, again.diagnostics.cache_misses) == (0, 2)
    assert again.diagnostics.requested_resources == 2


async def test_concurrent_stages_pin_one_revision(builder: SnapshotBuilder, source: Source) -> None:
    source.delays[PRICE] = 1.0
    session = builder.session()
    first, second = await asyncio.gather(session.resolve([PRICE]), session.resolve([PRICE]))
    assert first[PRICE].version == second[PRICE].version
    assert source.count(PRICE) == 1


async def test_diagnostics_accumulate_across_stages(
    builder: SnapshotBuilder, source: Source
) -> None:
    session = builder.session()
    first = await session.resolve([ACCOUNT, POSITION])
    second = await session.resolve([POSITION, PRICE])
    assert first.diagnostics.source_calls_by_source == {"rest": 2}
    assert second.diagnostics.source_calls_by_source == {"rest": 3}
    assert second.diagnostics.requested_resources == 3
    assert second.diagnostics.resolved_resources == 3


# -- isolation ---------------------------------------------------------------------------------


async def test_returned_snapshots_share_no_payload_with_the_memo(builder: SnapshotBuilder) -> None:
    session = builder.session()
    first = await session.resolve([OPEN_ORDERS])
    first.value(OPEN_ORDERS).append({"id": 666})

    second = await session.resolve([OPEN_ORDERS])
    everything = session.snapshot()

    assert second.value(OPEN_ORDERS) == [{"id": 1}]
    assert everything.value(OPEN_ORDERS) == [{"id": 1}]
    assert second.value(OPEN_ORDERS) is not everything.value(OPEN_ORDERS)
    everything.value(OPEN_ORDERS)[0]["id"] = 7
    assert session.snapshot().value(OPEN_ORDERS) == [{"id": 1}]


# -- errors and strictness ---------------------------------------------------------------------


async def test_errors_are_remembered_without_source_calls(
    builder: SnapshotBuilder, source: Source
) -> None:
    source.failing.add(POSITION)
    session = builder.session()
    first = await session.resolve([POSITION], strict=False)
    source.failing.clear()

    second = await session.resolve([POSITION, ACCOUNT], strict=False)

    assert second.error_for(POSITION) is first.error_for(POSITION)
    assert source.count(POSITION) == 1
    assert session.snapshot().errors.keys() == {POSITION}
    assert list(session.snapshot()) == [ACCOUNT]


async def test_retry_errors_replaces_a_remembered_error(
    builder: SnapshotBuilder, source: Source
) -> None:
    source.failing.add(POSITION)
    session = builder.session()
    await session.resolve([POSITION], strict=False)
    source.failing.clear()

    retried = await session.resolve([POSITION], strict=False, retry_errors=True)

    assert retried.value(POSITION) == {"qty": 1}
    assert session.snapshot().complete
    assert source.count(POSITION) == 2


async def test_retry_errors_does_not_refetch_pinned_values(
    builder: SnapshotBuilder, source: Source
) -> None:
    session = builder.session()
    await session.resolve([ACCOUNT])
    await session.resolve([ACCOUNT], retry_errors=True)
    assert source.count(ACCOUNT) == 1


async def test_strict_stage_raises_but_pins_what_resolved(
    builder: SnapshotBuilder, source: Source
) -> None:
    source.failing.add(POSITION)
    session = builder.session()
    with pytest.raises(SnapshotBuildError) as caught:
        await session.resolve([ACCOUNT, POSITION])
    partial = caught.value.snapshot
    assert isinstance(partial, Snapshot)
    assert partial.value(ACCOUNT) == {"balance": 100}
    assert set(caught.value.errors) == {POSITION}
    assert session.snapshot().value(ACCOUNT) == {"balance": 100}
    assert (await session.resolve([ACCOUNT])).value(ACCOUNT) == {"balance": 100}
    assert source.count(ACCOUNT) == 1


async def test_resolve_request_raises_only_for_required_failures(
    builder: SnapshotBuilder, source: Source
) -> None:
    source.failing.update({MARKET_HEALTH, POSITION})
    session = builder.session()
    optional_only = SnapshotRequest(required=[ACCOUNT], optional=[MARKET_HEALTH])
    snapshot = await session.resolve_request(optional_only)
    assert snapshot.error_for(MARKET_HEALTH) is not None
    assert snapshot.value(ACCOUNT) == {"balance": 100}

    with pytest.raises(SnapshotBuildError) as caught:
        await session.resolve_request(SnapshotRequest(required=[POSITION], optional=[ACCOUNT]))
    assert set(caught.value.errors) == {POSITION}
    assert caught.value.snapshot.value(ACCOUNT) == {"balance": 100}


async def test_resolve_request_checks_consistency(clock: VirtualClock) -> None:
    now = clock.now()
    source = Source(
        {POSITION: 1, OPEN_ORDERS: 2, MARKET_HEALTH: 3},
        observed={POSITION: now - 5.0, OPEN_ORDERS: now, MARKET_HEALTH: now - 50.0},
    )
    builder = make_builder(clock, source)
    session = builder.session()
    policy = SnapshotConsistencyPolicy(max_observation_skew_seconds=2.0)
    fine = SnapshotRequest(
        required=[OPEN_ORDERS], optional=[MARKET_HEALTH], consistency_policy=policy
    )
    assert (await session.resolve_request(fine)).value(OPEN_ORDERS) == 2

    skewed = SnapshotRequest(required=[POSITION, OPEN_ORDERS], consistency_policy=policy)
    with pytest.raises(SnapshotConsistencyError) as caught:
        await session.resolve_request(skewed)
    assert caught.value.oldest_key == POSITION
    assert caught.value.newest_key == OPEN_ORDERS
    await builder.aclose()


async def test_bad_arguments_are_refused(builder: SnapshotBuilder) -> None:
    session = builder.session()
    with pytest.raises(TypeError, match="keys"):
        await session.resolve(ACCOUNT)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="strict"):
        await session.resolve([ACCOUNT], strict=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry_errors"):
        await session.resolve([ACCOUNT], retry_errors=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="request"):
        await session.resolve_request([ACCOUNT])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        await session.resolve_request(SnapshotRequest())
    assert len(session.snapshot()) == 0


# -- the session-wide deadline -----------------------------------------------------------------


async def test_deadline_spans_every_stage(builder: SnapshotBuilder, source: Source) -> None:
    source.delays.update({ACCOUNT: 2.0, POSITION: 2.0})
    session = builder.session(deadline_seconds=3.0)
    first = await session.resolve([ACCOUNT])
    assert first.value(ACCOUNT) == {"balance": 100}

    second = await session.resolve([POSITION], strict=False)  # 1 s left, the source needs 2 s
    assert timed_out(second.error_for(POSITION))

    await asyncio.sleep(5)
    calls = len(source.calls)
    third = await session.resolve([ACCOUNT, PRICE], strict=False)
    assert third.value(ACCOUNT) == {"balance": 100}  # pinned values need no time
    assert timed_out(third.error_for(PRICE))
    assert len(source.calls) == calls  # nothing started once the budget was spent


async def test_a_session_without_deadline_waits(builder: SnapshotBuilder, source: Source) -> None:
    source.delays[ACCOUNT] = 100.0
    session = builder.session()
    assert (await session.resolve([ACCOUNT])).value(ACCOUNT) == {"balance": 100}


# -- closing -----------------------------------------------------------------------------------


async def _every_method(session: SnapshotSession) -> list[Any]:
    outcomes: list[Any] = []
    calls: Iterable[Any] = (
        lambda: session.resolve([ACCOUNT]),
        lambda: session.resolve_request(SnapshotRequest(required=[ACCOUNT])),
        lambda: session.revalidate([ACCOUNT]),
        session.__aenter__,
    )
    for call in calls:
        try:
            await call()
        except Exception as error:
            outcomes.append(error)
    try:
        session.snapshot()
    except Exception as error:
        outcomes.append(error)
    return outcomes


async def test_every_method_raises_after_close(builder: SnapshotBuilder) -> None:
    session = builder.session()
    await session.resolve([ACCOUNT])
    assert not session.closed
    await session.close()
    await session.close()  # idempotent
    outcomes = await _every_method(session)
    assert len(outcomes) == 5
    assert all(isinstance(error, SessionClosedError) for error in outcomes)
    assert session.closed
    assert session.snapshot_id  # identity stays readable


async def test_every_method_raises_once_the_builder_closes(clock: VirtualClock) -> None:
    builder = make_builder(clock, Source({ACCOUNT: 1}))
    session = builder.session()
    await session.resolve([ACCOUNT])
    await builder.aclose()
    assert session.closed
    outcomes = await _every_method(session)
    assert len(outcomes) == 5
    assert all(isinstance(error, SessionClosedError) for error in outcomes)
    await session.close()


async def test_close_waits_for_the_stage_in_flight(
    builder: SnapshotBuilder, source: Source
) -> None:
    source.delays[ACCOUNT] = 1.0
    session = builder.session()
    stage = asyncio.ensure_future(session.resolve([ACCOUNT]))
    await asyncio.sleep(0.5)
    await session.close()
    assert stage.done()
    assert stage.result().value(ACCOUNT) == {"balance": 100}
    assert session.closed
    with pytest.raises(SessionClosedError, match=r"^SnapshotSession is closed$"):
        await session.resolve([ACCOUNT])


async def test_cancelled_stage_pins_nothing(builder: SnapshotBuilder, source: Source) -> None:
    source.delays[ACCOUNT] = 1.0
    session = builder.session()
    stage = asyncio.ensure_future(session.resolve([ACCOUNT]))
    await asyncio.sleep(0.5)
    stage.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stage
    assert len(session.snapshot()) == 0
    assert not session.snapshot().errors
