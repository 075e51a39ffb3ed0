"""Contract: sessions and revalidation (B-SESS-1 ... B-SESS-10), through the public API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from tests.doubles import Events

from coalestra import (
    CallableDerivedSource,
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    InMemoryMetrics,
    ResourceKey,
    ResourceResolutionError,
    RetryPolicy,
    Snapshot,
    SnapshotBuilder,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotRequest,
    SourcePayload,
)
from coalestra.testing import VirtualClock

A = ResourceKey("test", "value", "A")
B = ResourceKey("test", "value", "B")
C = ResourceKey("test", "value", "C")
P = ResourceKey("test", "value", "P")
RAW = ResourceKey("test", "raw", "x")
MID = ResourceKey("test", "mid", "x")
CHAINED = ResourceKey("test", "chained", "x")
DOUBLE = ResourceKey("test", "double", "x")
POLICY = FreshnessPolicy(ttl_seconds=600.0, max_stale_seconds=600.0)
EPOCH = 1_700_000_000.0
T0 = EPOCH - 200.0  # observation stamps: in the past, well within the TTL


class Rest:
    """A single-key source: ``values[key]`` (a number bumped by :meth:`bump`), stamped
    ``observed[key]`` when set; counts calls and fails the keys in ``failing``."""

    def __init__(self, *keys: ResourceKey) -> None:
        self.values: dict[ResourceKey, int] = {key: 1 for key in keys}
        self.observed: dict[ResourceKey, float] = {}
        self.failing: set[ResourceKey] = set()
        self.calls: list[ResourceKey] = []
        self.delay = 0.0
        self.active = 0
        self.peak = 0

    def count(self, key: ResourceKey) -> int:
        return self.calls.count(key)

    def bump(self, *keys: ResourceKey) -> None:
        for key in keys:
            self.values[key] += 1

    async def fetch(self, key: ResourceKey, context: FetchContext) -> SourcePayload[int]:
        self.calls.append(key)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if key in self.failing:
                raise ValueError(f"{key} is down")
            return SourcePayload(self.values[key], observed_at=self.observed.get(key))
        finally:
            self.active -= 1

    def source(self) -> CallableSource:
        return CallableSource(
            name="rest", priority=10, supports=self.values.__contains__, fetcher=self.fetch
        )


def derived_chain() -> CallableDerivedSource:
    """MID = RAW * 10, CHAINED = MID + 1, DOUBLE = 2 * RAW."""
    rules: dict[ResourceKey, tuple[ResourceKey, Any]] = {
        MID: (RAW, lambda deps: deps.value(RAW) * 10),
        CHAINED: (MID, lambda deps: deps.value(MID) + 1),
        DOUBLE: (RAW, lambda deps: deps.value(RAW) * 2),
    }
    return CallableDerivedSource(
        name="derived",
        priority=5,
        supports=rules.__contains__,
        dependencies=lambda key: (rules[key][0],),
        deriver=lambda key, deps, _ctx: rules[key][1](deps),
    )


@pytest.fixture
def rest() -> Rest:
    return Rest(A, B, C, P, RAW)


@pytest.fixture
def metrics() -> InMemoryMetrics:
    return InMemoryMetrics()


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
async def builder(
    clock: VirtualClock, rest: Rest, metrics: InMemoryMetrics, events: Events
) -> Iterator[SnapshotBuilder]:
    built = SnapshotBuilder(
        [rest.source(), derived_chain()],
        clock=clock,
        default_policy=POLICY,
        retry_policy=RetryPolicy(max_attempts=1),
        metrics=metrics,
        events=events,
    )
    yield built
    await built.aclose()


def versions(snapshot: Snapshot) -> dict[ResourceKey, str]:
    return {key: snapshot[key].version for key in snapshot}


# -- B-SESS-1 -----------------------------------------------------------------------------------


async def test_b_sess_1_resolve_returns_the_accumulated_snapshot(builder: SnapshotBuilder) -> None:
    session = builder.session()
    first = await session.resolve([A])
    second = await session.resolve([B])
    assert set(first) == {A}
    assert set(second) == {A, B}
    assert list(second) == [A, B]


async def test_b_sess_1_stored_errors_are_part_of_every_later_snapshot(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    rest.failing.add(C)
    session = builder.session()
    await session.resolve([C], strict=False)
    snapshot = await session.resolve([A])
    assert set(snapshot) == {A}
    assert set(snapshot.errors) == {C}


async def test_b_sess_1_resolve_request_and_revalidate_return_the_accumulated_snapshot(
    builder: SnapshotBuilder,
) -> None:
    session = builder.session()
    await session.resolve([A])
    requested = await session.resolve_request(SnapshotRequest(required=[B]))
    assert set(requested) == {A, B}
    revalidated = await session.revalidate([A])
    assert set(revalidated) == {A, B}


async def test_b_sess_1_a_build_holds_only_the_requested_keys(builder: SnapshotBuilder) -> None:
    snapshot = await builder.build([CHAINED])
    assert set(snapshot) == {CHAINED}
    request = await builder.build_request(SnapshotRequest(required=[DOUBLE], optional=[A]))
    assert set(request) == {DOUBLE, A}


async def test_b_sess_1_a_session_does_not_show_internal_dependencies(
    builder: SnapshotBuilder,
) -> None:
    session = builder.session()
    snapshot = await session.resolve([CHAINED])
    assert set(snapshot) == {CHAINED}
    assert set(session.snapshot()) == {CHAINED}


# -- B-SESS-2 -----------------------------------------------------------------------------------


async def test_b_sess_2_strict_failure_carries_the_full_session_snapshot(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    rest.failing.update({A, C})
    session = builder.session()
    await session.resolve([P])
    await session.resolve([C], strict=False)
    with pytest.raises(SnapshotBuildError) as caught:
        await session.resolve([A])
    error = caught.value
    assert set(error.errors) == {A}
    assert error.snapshot is not None
    assert error.snapshot.value(P) == 1
    assert set(error.snapshot.errors) == {A, C}


async def test_b_sess_2_errors_stay_stored_until_retried(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    rest.failing.add(A)
    session = builder.session()
    await session.resolve([A], strict=False)
    rest.failing.clear()
    again = await session.resolve([A], strict=False)
    assert A in again.errors
    assert rest.count(A) == 1
    retried = await session.resolve([A], retry_errors=True)
    assert retried.value(A) == 1
    assert not retried.errors
    assert rest.count(A) == 2


async def test_b_sess_2_resolved_values_are_never_refetched(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    session = builder.session()
    first = await session.resolve([A])
    await builder.publisher.invalidate(A)
    rest.bump(A)
    again = await session.resolve([A, B], retry_errors=True)
    assert rest.count(A) == 1
    assert again[A].version == first[A].version


# -- B-SESS-3 -----------------------------------------------------------------------------------


async def test_b_sess_3_skew_violation_raises_with_the_session_snapshot(
    builder: SnapshotBuilder, rest: Rest, metrics: InMemoryMetrics, events: Events
) -> None:
    rest.observed.update({A: T0 + 100.0, B: T0 + 104.0})
    session = builder.session()
    await session.resolve([P])
    request = SnapshotRequest(required=[A, B], consistency_policy=SnapshotConsistencyPolicy(2.0))
    with pytest.raises(SnapshotConsistencyError) as caught:
        await session.resolve_request(request)
    error = caught.value
    assert error.observation_skew_seconds == 4.0
    assert error.to_dict()["partial_snapshot_available"] is True
    assert error.snapshot is not None
    assert set(error.snapshot) == {P, A, B}
    assert (
        metrics.counter("snapshot_consistency_total", status="error", rule="observation_skew") == 1
    )
    (failed,) = events.of("snapshot_consistency_failed")
    assert set(failed) == {
        "snapshot_id",
        "resources",
        "oldest_resource",
        "newest_resource",
        "observation_skew_ms",
        "max_observation_skew_ms",
    }
    assert failed["observation_skew_ms"] == 4000.0
    # Resolved values are pinned all the same.
    assert set(session.snapshot()) == {P, A, B}


async def test_b_sess_3_skew_equal_to_the_limit_passes(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    rest.observed.update({A: T0 + 100.0, B: T0 + 102.0})
    session = builder.session()
    request = SnapshotRequest(required=[A, B], consistency_policy=SnapshotConsistencyPolicy(2.0))
    snapshot = await session.resolve_request(request)
    assert set(snapshot) == {A, B}


async def test_b_sess_3_required_failures_raise_before_the_skew_check(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    rest.failing.add(C)
    rest.observed.update({A: T0 + 100.0, B: T0 + 110.0})
    session = builder.session()
    request = SnapshotRequest(required=[A, B, C], consistency_policy=SnapshotConsistencyPolicy(2.0))
    with pytest.raises(SnapshotBuildError) as caught:
        await session.resolve_request(request)
    assert type(caught.value) is SnapshotBuildError
    assert set(caught.value.errors) == {C}
    assert caught.value.snapshot is not None
    assert set(caught.value.snapshot) == {A, B}


async def test_b_sess_3_optional_keys_count_only_when_included(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    rest.failing.add(C)
    rest.observed.update({A: T0 + 100.0, B: T0 + 110.0})
    session = builder.session()
    loose = SnapshotRequest(
        required=[A], optional=[B, C], consistency_policy=SnapshotConsistencyPolicy(2.0)
    )
    snapshot = await session.resolve_request(loose)
    assert set(snapshot) == {A, B}
    assert set(snapshot.errors) == {C}
    strict = SnapshotRequest(
        required=[A],
        optional=[B],
        consistency_policy=SnapshotConsistencyPolicy(2.0, include_optional_resources=True),
    )
    with pytest.raises(SnapshotConsistencyError):
        await session.resolve_request(strict)


async def test_b_sess_3_build_request_counts_the_consistency_failure(
    builder: SnapshotBuilder, rest: Rest, metrics: InMemoryMetrics, events: Events
) -> None:
    rest.observed.update({A: T0 + 100.0, B: T0 + 104.0})
    request = SnapshotRequest(required=[A, B], consistency_policy=SnapshotConsistencyPolicy(2.0))
    with pytest.raises(SnapshotConsistencyError) as caught:
        await builder.build_request(request)
    assert caught.value.snapshot is not None
    assert (
        metrics.counter("snapshot_consistency_total", status="error", rule="observation_skew") == 1
    )
    assert len(events.of("snapshot_consistency_failed")) == 1


# -- B-SESS-4 -----------------------------------------------------------------------------------


def test_b_sess_4_a_key_both_required_and_optional_is_rejected() -> None:
    with pytest.raises(ValueError, match="both required and optional") as caught:
        SnapshotRequest(required=[B, A], optional=[A, B, C])
    assert str(caught.value) == (
        "resource keys cannot be both required and optional: test:value:A, test:value:B"
    )


def test_b_sess_4_an_empty_request_is_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"^snapshot request must contain at least one resource key$"
    ):
        SnapshotRequest()


def test_b_sess_4_a_wrong_consistency_policy_type_is_rejected() -> None:
    with pytest.raises(TypeError):
        SnapshotRequest(required=[A], consistency_policy=2.0)  # type: ignore[arg-type]


def test_b_sess_4_duplicates_are_dropped_first_occurrence_first() -> None:
    request = SnapshotRequest(required=[B, A, B], optional=[C, C, P])
    assert request.required == (B, A)
    assert request.optional == (C, P)


# -- B-SESS-5 -----------------------------------------------------------------------------------


async def test_b_sess_5_revalidating_an_unresolved_key_raises_before_any_work(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    session = builder.session()
    await session.resolve([A])
    with pytest.raises(ValueError, match="already resolved") as caught:
        await session.revalidate([A, B])
    assert str(caught.value) == (
        f"revalidation requires resources already resolved in this session: {B}"
    )
    assert rest.calls == [A]


async def test_b_sess_5_a_dependency_resolved_by_the_session_can_be_revalidated(
    builder: SnapshotBuilder,
) -> None:
    session = builder.session()
    await session.resolve([CHAINED])
    snapshot = await session.revalidate([RAW])
    assert set(snapshot) == {CHAINED}


async def test_b_sess_5_a_failed_key_of_the_session_can_be_revalidated(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    rest.failing.add(A)
    session = builder.session()
    await session.resolve([A], strict=False)
    rest.failing.clear()
    snapshot = await session.revalidate([A])
    assert snapshot.value(A) == 1
    assert not session.snapshot().errors


# -- B-SESS-6 -----------------------------------------------------------------------------------


async def test_b_sess_6_force_refresh_of_an_internal_dependency(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    session = builder.session()
    first = await session.resolve([CHAINED])
    assert first.value(CHAINED) == 11
    await asyncio.sleep(1)
    rest.bump(RAW)
    snapshot = await session.revalidate([RAW], force_refresh=True)
    assert tuple(snapshot) == (CHAINED,)
    assert snapshot.value(CHAINED) == 21
    assert tuple(session.snapshot()) == (CHAINED,)
    assert rest.count(RAW) == 2


async def test_b_sess_6_force_refresh_reads_the_sources_again(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    session = builder.session()
    await session.resolve([A, B])
    before = session.snapshot()
    await asyncio.sleep(1)
    rest.bump(A)
    snapshot = await session.revalidate([A], force_refresh=True)
    assert rest.count(A) == 2
    assert snapshot.value(A) == 2
    assert snapshot.diagnostics.cache_misses >= 1
    assert snapshot[B].version == before[B].version


async def test_b_sess_6_without_force_the_newest_cached_revision_wins(
    builder: SnapshotBuilder, rest: Rest, clock: VirtualClock
) -> None:
    session = builder.session()
    await session.resolve([A])
    await asyncio.sleep(1)
    await builder.publisher.publish(A, 42, source="stream")
    snapshot = await session.revalidate([A])
    assert snapshot.value(A) == 42
    assert rest.count(A) == 1


async def test_b_sess_6_visible_dependents_are_refreshed_with_their_dependency(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    session = builder.session()
    await session.resolve([RAW, DOUBLE, A])
    before = session.snapshot()
    await asyncio.sleep(1)
    rest.bump(RAW)
    snapshot = await session.revalidate([RAW], force_refresh=True)
    assert snapshot.value(RAW) == 2
    assert snapshot.value(DOUBLE) == 4
    assert snapshot[DOUBLE].dependency_versions[RAW] == snapshot[RAW].version
    assert snapshot[A].version == before[A].version
    assert list(snapshot) == [RAW, DOUBLE, A]


# -- B-SESS-7 -----------------------------------------------------------------------------------


async def test_b_sess_7_a_failed_strict_revalidation_keeps_the_previous_state(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    session = builder.session()
    await session.resolve([A, B, C])
    before = session.snapshot()
    rest.bump(A, B)
    rest.failing.add(B)
    with pytest.raises(SnapshotBuildError) as caught:
        await session.revalidate([A, B], force_refresh=True)
    error = caught.value
    assert set(error.errors) == {B}
    assert error.snapshot is not None
    assert versions(error.snapshot) == versions(before)
    assert set(error.snapshot.errors) == {B}
    after = session.snapshot()
    assert versions(after) == versions(before)
    assert not after.errors


async def test_b_sess_7_a_failed_lenient_revalidation_returns_the_retained_state(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    session = builder.session()
    await session.resolve([A, B])
    before = session.snapshot()
    rest.failing.add(B)
    snapshot = await session.revalidate([A, B], strict=False, force_refresh=True)
    assert versions(snapshot) == versions(before)
    assert set(snapshot.errors) == {B}
    assert isinstance(snapshot.errors[B], ResourceResolutionError)
    assert not session.snapshot().errors


async def test_b_sess_7_success_clears_stored_errors(builder: SnapshotBuilder, rest: Rest) -> None:
    rest.failing.add(A)
    session = builder.session()
    await session.resolve([A, B], strict=False)
    assert set(session.snapshot().errors) == {A}
    rest.failing.clear()
    snapshot = await session.revalidate([A])
    assert not snapshot.errors
    assert set(session.snapshot()) == {A, B}
    assert not session.snapshot().errors


# -- B-SESS-8 -----------------------------------------------------------------------------------


async def test_b_sess_8_a_consistency_violation_always_raises_and_commits_nothing(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    rest.observed.update({A: T0, B: T0})
    session = builder.session()
    await session.resolve([A, B])
    before = session.snapshot()
    rest.bump(A, B)
    rest.observed.update({A: T0 + 100.0, B: T0 + 110.0})
    with pytest.raises(SnapshotConsistencyError) as caught:
        await session.revalidate(
            [A, B],
            strict=False,
            force_refresh=True,
            consistency_policy=SnapshotConsistencyPolicy(2.0),
        )
    assert caught.value.observation_skew_seconds == 10.0
    assert caught.value.snapshot is not None
    assert versions(caught.value.snapshot) == versions(before)
    assert versions(session.snapshot()) == versions(before)
    assert session.snapshot().value(A) == 1


async def test_b_sess_8_the_policy_covers_the_requested_keys_only(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    rest.observed.update({A: T0, B: T0})
    session = builder.session()
    await session.resolve([A, B])
    rest.bump(B)
    rest.observed[B] = T0 + 29.0
    snapshot = await session.revalidate(
        [B], force_refresh=True, consistency_policy=SnapshotConsistencyPolicy(2.0)
    )
    assert snapshot.value(B) == 2


# -- B-SESS-9 -----------------------------------------------------------------------------------


async def test_b_sess_9_revalidation_counters_and_metric(
    builder: SnapshotBuilder, rest: Rest, metrics: InMemoryMetrics, events: Events
) -> None:
    rest.observed.update({A: T0, B: T0})
    session = builder.session()
    await session.resolve([A, B])
    await session.revalidate([A])
    rest.failing.add(B)
    await session.revalidate([B], strict=False, force_refresh=True)
    rest.failing.clear()
    rest.bump(A, B)
    rest.observed.update({A: T0 + 100.0, B: T0 + 110.0})
    with pytest.raises(SnapshotConsistencyError):
        await session.revalidate(
            [A, B], force_refresh=True, consistency_policy=SnapshotConsistencyPolicy(1.0)
        )
    health = await builder.health_snapshot()
    assert health.revalidation_attempt_count == 3
    assert health.revalidation_failure_count == 2
    assert metrics.counter("snapshot_session_revalidate_total", status="success") == 1
    assert metrics.counter("snapshot_session_revalidate_total", status="error") == 2
    revalidated = events.of("snapshot_session_revalidated")
    assert len(revalidated) == 3
    assert set(revalidated[0]) == {
        "snapshot_id",
        "requested",
        "affected",
        "refreshed",
        "failed",
        "committed",
        "retained_previous",
        "strict",
        "force_refresh",
        "consistency_failed",
    }
    assert [event["committed"] for event in revalidated] == [True, False, False]
    assert [event["consistency_failed"] for event in revalidated] == [False, False, True]


async def test_b_sess_9_every_stage_counts_a_session_resolve(
    builder: SnapshotBuilder, rest: Rest, metrics: InMemoryMetrics, events: Events
) -> None:
    rest.failing.add(C)
    session = builder.session()
    await session.resolve([A])
    await session.resolve([C], strict=False)
    with pytest.raises(SnapshotBuildError):
        await session.resolve([C])
    assert metrics.counter("snapshot_session_resolve_total", status="success") == 2
    assert metrics.counter("snapshot_session_resolve_total", status="error") == 1
    resolved = events.of("snapshot_session_resolved")
    assert len(resolved) == 3
    assert set(resolved[1]) == {
        "snapshot_id",
        "requested",
        "resolved",
        "failed",
        "total_resources",
        "strict",
        "retry_errors",
    }
    assert (resolved[1]["requested"], resolved[1]["failed"]) == (1, 1)
    assert resolved[1]["total_resources"] == 2  # values and stored errors
    # A build counts as a one-stage session in the metric (B-OBS-3), without the event.
    await builder.build([A])
    with pytest.raises(SnapshotBuildError):
        await builder.build([C])
    assert metrics.counter("snapshot_session_resolve_total", status="success") == 3
    assert metrics.counter("snapshot_session_resolve_total", status="error") == 2
    assert len(events.of("snapshot_session_resolved")) == 3


# -- B-SESS-10 ----------------------------------------------------------------------------------


async def test_b_sess_10_stages_run_one_at_a_time(builder: SnapshotBuilder, rest: Rest) -> None:
    rest.delay = 1.0
    session = builder.session()
    first, second = await asyncio.gather(session.resolve([A]), session.resolve([B]))
    assert rest.peak == 1
    assert set(first) == {A}
    assert set(second) == {A, B}


async def test_b_sess_10_close_waits_for_the_stage_in_flight(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    rest.delay = 1.0
    session = builder.session()
    stage = asyncio.create_task(session.resolve([A]))
    await asyncio.sleep(0.5)
    closing = asyncio.create_task(session.close())
    await asyncio.sleep(0.1)
    assert not session.closed
    snapshot = await stage
    await closing
    assert snapshot.value(A) == 1
    assert session.closed


async def test_b_sess_10_every_stage_shares_the_session_deadline(
    builder: SnapshotBuilder, rest: Rest
) -> None:
    session = builder.session(deadline_seconds=1.0)
    await session.resolve([A])
    await asyncio.sleep(2.0)
    snapshot = await session.resolve([B], strict=False)
    error = snapshot.errors[B]
    # B-TIME-1 shapes it as a ResourceResolutionError naming the deadline error.
    kinds = {type(error).__name__}
    if isinstance(error, ResourceResolutionError):
        kinds.update(failure.error_type for failure in error.failures)
    assert "SnapshotDeadlineExceededError" in kinds
    assert rest.count(B) == 0
    assert snapshot.value(A) == 1
