"""Required vs optional keys, strict builds, temporal consistency, the partial snapshot carried
by build errors and their versioned JSON diagnostics, and per-build diagnostics (DESIGN step 7)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.orchestration.conftest import Batch, Single, keys, make_builder, payload

from coalestra.core import (
    ERROR_DIAGNOSTICS_SCHEMA,
    ERROR_DIAGNOSTICS_SCHEMA_VERSION,
    FreshnessPolicy,
    ResourceKey,
    ResourceResolutionError,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotRequest,
    SourceFailure,
)
from coalestra.resilience import RetryPolicy
from coalestra.testing import VirtualClock

A, B, C, D = keys("A", "B", "C", "D")
LONG = FreshnessPolicy(ttl_seconds=3600.0, max_stale_seconds=3600.0)


def failing_for(*bad: ResourceKey, name: str = "primary", priority: int = 10) -> Single:
    def handler(k: ResourceKey, _c: Any) -> Any:
        if k in bad:
            raise RuntimeError(f"{name} cannot serve {k.subject}")
        return f"{name}:{k.subject}"

    return Single(name, priority, handler)


def observed(offsets: dict[ResourceKey, float], clock: VirtualClock) -> Single:
    """A source whose value for each key was observed ``offset`` seconds before the build."""
    base = clock.now()
    return Single(
        "timed",
        1,
        lambda k, _c: payload(k.subject, observed_at=base - offsets.get(k, 0.0)),
    )


# --- strict and non-strict builds -------------------------------------------------------------


async def test_strict_build_raises_with_the_partial_snapshot(clock: VirtualClock) -> None:
    builder = make_builder([failing_for(B)], clock)

    with pytest.raises(SnapshotBuildError) as caught:
        await builder.build([A, B, C])

    error = caught.value
    assert list(error.errors) == [B]
    partial = error.snapshot
    assert partial is not None
    assert error.partial_snapshot is partial
    assert {k: v.value for k, v in partial.items()} == {A: "primary:A", C: "primary:C"}
    assert list(partial.errors) == [B]
    assert partial.diagnostics.resolved_resources == 2
    assert partial.diagnostics.failed_resources == 1


async def test_non_strict_build_returns_errors_in_the_snapshot(clock: VirtualClock) -> None:
    builder = make_builder([failing_for(B)], clock)

    snapshot = await builder.build([A, B], strict=False)

    assert snapshot.value(A) == "primary:A"
    assert not snapshot.complete
    assert isinstance(snapshot.error_for(B), ResourceResolutionError)
    with pytest.raises(KeyError):
        snapshot.value(B)


async def test_every_source_failure_is_kept(clock: VirtualClock) -> None:
    retry = RetryPolicy(max_attempts=2, base_delay_seconds=0.01, jitter_ratio=0.0)
    sources = [
        failing_for(A, name=n, priority=p) for n, p in [("one", 3), ("two", 2), ("three", 1)]
    ]
    builder = make_builder(sources, clock, retry_policy=retry)

    with pytest.raises(SnapshotBuildError) as caught:
        await builder.build([A, B])

    error = caught.value.errors[A]
    assert isinstance(error, ResourceResolutionError)
    # A RuntimeError is not retried (B-RES-1): one attempt per source.
    assert error.failures == (
        SourceFailure("one", "RuntimeError", "one cannot serve A", 1),
        SourceFailure("two", "RuntimeError", "two cannot serve A", 1),
        SourceFailure("three", "RuntimeError", "three cannot serve A", 1),
    )
    assert caught.value.snapshot is not None
    assert caught.value.snapshot.value(B) == "one:B"


async def test_build_error_diagnostics_round_trip_through_json(clock: VirtualClock) -> None:
    builder = make_builder([failing_for(B, C)], clock)

    with pytest.raises(SnapshotBuildError) as caught:
        await builder.build([A, B, C], snapshot_id="cycle-42")

    diagnostic = caught.value.to_dict()
    assert json.loads(json.dumps(diagnostic)) == diagnostic
    assert diagnostic["schema"] == ERROR_DIAGNOSTICS_SCHEMA
    assert diagnostic["schema_version"] == ERROR_DIAGNOSTICS_SCHEMA_VERSION
    assert diagnostic["error_type"] == "SnapshotBuildError"
    assert diagnostic["partial_snapshot_available"] is True
    assert diagnostic["has_partial_snapshot"] is True
    assert [entry["resource"] for entry in diagnostic["errors"]] == [str(B), str(C)]
    first = diagnostic["errors"][0]
    assert first["resource"] == str(B)
    assert first["error_type"] == "ResourceResolutionError"
    assert first["failures"][0]["source"] == "primary"
    extended = caught.value.to_dict(extended=True)
    assert extended["snapshot_id"] == "cycle-42"
    assert extended["resolved_resources"] == [str(A)]
    assert extended["failed_resources"] == [str(B), str(C)]
    assert extended["error_count"] == 2
    assert extended["errors"][0]["failure_count"] == 1
    assert first["failures"][0]["error_type"] == "RuntimeError"
    failure = caught.value.errors[B]
    assert isinstance(failure, ResourceResolutionError)
    assert json.loads(json.dumps(failure.to_dict())) == failure.to_dict()


async def test_duplicate_keys_resolve_once_and_keep_request_order(clock: VirtualClock) -> None:
    source = Single("rest", 1)
    builder = make_builder([source], clock)

    snapshot = await builder.build([C, A, C, B, A])

    assert list(snapshot) == [C, A, B]
    assert sorted(source.calls) == sorted([A, B, C])
    assert snapshot.diagnostics.requested_resources == 3


async def test_context_carries_metadata_snapshot_id_and_absolute_deadline(
    clock: VirtualClock,
) -> None:
    source = Single("rest", 1, delay=0.5)
    builder = make_builder([source], clock)
    start_wall, start_mono = clock.now(), clock.monotonic()

    snapshot = await builder.build(
        [A, B], metadata={"tenant": "t1"}, snapshot_id="snap-1", deadline_seconds=3.0
    )

    assert snapshot.snapshot_id == "snap-1"
    assert snapshot.created_at == pytest.approx(start_wall)
    assert len(source.contexts) == 2
    for ctx in source.contexts:
        assert ctx.snapshot_id == "snap-1"
        assert dict(ctx.metadata) == {"tenant": "t1"}
        assert ctx.requested_at == pytest.approx(start_wall)
        assert ctx.deadline_at == pytest.approx(start_wall + 3.0)
        assert ctx.deadline_monotonic == pytest.approx(start_mono + 3.0)


async def test_each_build_gets_a_unique_snapshot_id(clock: VirtualClock) -> None:
    builder = make_builder([Single("rest", 1)], clock, default_policy=LONG)

    ids = {(await builder.build([A])).snapshot_id for _ in range(5)}

    assert len(ids) == 5
    assert "" not in ids


# --- requests: required and optional ---------------------------------------------------------


async def test_optional_failures_do_not_raise(clock: VirtualClock) -> None:
    builder = make_builder([failing_for(C, D)], clock)
    request = SnapshotRequest(required=[A, B], optional=[C, D])

    snapshot = await builder.build_request(request)

    assert set(snapshot) == {A, B}
    assert set(snapshot.errors) == {C, D}


async def test_required_failures_raise_with_optional_values_and_errors_kept(
    clock: VirtualClock,
) -> None:
    builder = make_builder([failing_for(A, D)], clock)
    request = SnapshotRequest(required=[A, B], optional=[C, D])

    with pytest.raises(SnapshotBuildError) as caught:
        await builder.build_request(request, deadline_seconds=3.0)

    assert list(caught.value.errors) == [A]
    partial = caught.value.snapshot
    assert partial is not None
    assert set(partial) == {B, C}
    assert set(partial.errors) == {A, D}


def test_a_key_both_required_and_optional_is_rejected() -> None:
    with pytest.raises(ValueError, match="both required and optional"):
        SnapshotRequest(required=[A], optional=[A, B])


async def test_an_all_optional_request_never_raises(clock: VirtualClock) -> None:
    builder = make_builder([failing_for(A, B)], clock)

    snapshot = await builder.build_request(SnapshotRequest(optional=[A, B]))

    assert len(snapshot) == 0
    assert set(snapshot.errors) == {A, B}


# --- temporal consistency ---------------------------------------------------------------------


async def test_observation_skew_beyond_the_limit_raises_a_consistency_error(
    clock: VirtualClock,
) -> None:
    start = clock.now()
    builder = make_builder([observed({A: 5.0, B: 1.0, C: 0.0}, clock)], clock, default_policy=LONG)
    request = SnapshotRequest(required=[A, B, C], consistency_policy=SnapshotConsistencyPolicy(2.0))

    with pytest.raises(SnapshotConsistencyError) as caught:
        await builder.build_request(request)

    error = caught.value
    assert isinstance(error, SnapshotBuildError)
    assert (error.oldest_key, error.newest_key) == (A, C)
    assert error.oldest_observed_at == pytest.approx(start - 5.0)
    assert error.newest_observed_at == pytest.approx(start)
    assert error.observation_skew_seconds == pytest.approx(5.0)
    assert error.max_observation_skew_seconds == 2.0
    assert error.keys == (A, B, C)
    assert error.errors == {}
    assert error.snapshot is not None
    assert {k: v.value for k, v in error.snapshot.items()} == {A: "A", B: "B", C: "C"}
    assert error.snapshot.diagnostics.observation_skew_ms == pytest.approx(5000.0)
    assert error.to_dict()["errors"] == []
    diagnostic = error.to_dict(extended=True)
    assert json.loads(json.dumps(diagnostic)) == diagnostic
    assert diagnostic["consistency"]["oldest_resource"] == str(A)
    assert diagnostic["consistency"]["observation_skew_us"] == 5_000_000


async def test_skew_within_the_limit_passes(clock: VirtualClock) -> None:
    builder = make_builder([observed({A: 1.5, B: 0.0}, clock)], clock, default_policy=LONG)
    request = SnapshotRequest(required=[A, B], consistency_policy=SnapshotConsistencyPolicy(2.0))

    snapshot = await builder.build_request(request)

    assert snapshot.diagnostics.observation_skew_ms == pytest.approx(1500.0)


async def test_optional_values_are_outside_the_default_scope(clock: VirtualClock) -> None:
    builder = make_builder([observed({A: 0.0, B: 0.5, C: 60.0}, clock)], clock, default_policy=LONG)
    request = SnapshotRequest(
        required=[A, B], optional=[C], consistency_policy=SnapshotConsistencyPolicy(2.0)
    )

    snapshot = await builder.build_request(request)

    assert set(snapshot) == {A, B, C}


async def test_include_optional_resources_adds_them_to_the_scope(clock: VirtualClock) -> None:
    builder = make_builder([observed({A: 0.0, B: 0.5, C: 60.0}, clock)], clock, default_policy=LONG)
    policy = SnapshotConsistencyPolicy(2.0, include_optional_resources=True)
    request = SnapshotRequest(required=[A, B], optional=[C], consistency_policy=policy)

    with pytest.raises(SnapshotConsistencyError) as caught:
        await builder.build_request(request)

    assert caught.value.oldest_key == C
    assert caught.value.newest_key == A
    assert caught.value.snapshot is not None
    assert C in caught.value.snapshot


async def test_a_failed_optional_key_is_not_part_of_the_consistency_check(
    clock: VirtualClock,
) -> None:
    base = clock.now()

    def handler(k: ResourceKey, _c: Any) -> Any:
        if k == C:
            raise RuntimeError("optional down")
        return payload(k.subject, observed_at=base)

    builder = make_builder([Single("rest", 1, handler)], clock, default_policy=LONG)
    policy = SnapshotConsistencyPolicy(2.0, include_optional_resources=True)

    snapshot = await builder.build_request(
        SnapshotRequest(required=[A, B], optional=[C], consistency_policy=policy)
    )

    assert set(snapshot) == {A, B}
    assert set(snapshot.errors) == {C}


async def test_without_a_consistency_policy_there_is_no_check(clock: VirtualClock) -> None:
    builder = make_builder([observed({A: 0.0, B: 500.0}, clock)], clock, default_policy=LONG)

    snapshot = await builder.build_request(SnapshotRequest(required=[A, B]))
    plain = await builder.build([A, B])

    assert set(snapshot) == set(plain) == {A, B}
    assert snapshot.diagnostics.observation_skew_ms == pytest.approx(500_000.0)


# --- diagnostics ------------------------------------------------------------------------------


async def test_diagnostics_count_what_the_build_did(clock: VirtualClock) -> None:
    fast = Single("fast", 5, lambda k, _c: k.subject, delay=0.25, supports=lambda k: k != C)
    slow = Single("slow", 1, lambda k, _c: k.subject, delay=1.5)
    builder = make_builder([fast, slow], clock, default_policy=LONG, max_concurrency=1)
    await builder.build([A])

    snapshot = await builder.build([A, B, C, D], strict=False)

    diagnostics = snapshot.diagnostics
    assert diagnostics.requested_resources == 4
    assert diagnostics.resolved_resources == 4
    assert diagnostics.failed_resources == 0
    assert (diagnostics.cache_hits, diagnostics.cache_misses) == (1, 3)
    assert diagnostics.source_calls == 3
    assert dict(diagnostics.source_calls_by_source) == {"fast": 2, "slow": 1}
    assert diagnostics.source_latency_ms_by_source["fast"] == pytest.approx(500.0)
    assert diagnostics.source_latency_ms_by_source["slow"] == pytest.approx(1500.0)
    assert diagnostics.duration_ms == pytest.approx(2000.0)  # one slot: calls run one by one


async def test_diagnostics_count_batched_cache_writes(clock: VirtualClock) -> None:
    builder = make_builder([Batch("batch", 1)], clock)

    snapshot = await builder.build([A, B, C])

    assert snapshot.diagnostics.cache_batch_writes == 1
