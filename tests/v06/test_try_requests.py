"""Section 7 of the 0.6 API: non-throwing request builds (degradation policies, SnapshotResult,
try_build_request(s), try_resolve_request), async and sync."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.doubles import Events

import coalestra
from coalestra import (
    CallableSource,
    FreshnessPolicy,
    InMemoryMetrics,
    RequestDegradationPolicy,
    ResourceAcceptanceRule,
    ResourceKey,
    SnapshotAcceptanceError,
    SnapshotAcceptancePolicy,
    SnapshotBuilder,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotRequest,
    SnapshotResult,
    SnapshotResultState,
    SourcePayload,
    SyncSnapshotBuilder,
    try_build_request,
    try_build_requests,
    try_resolve_request,
)
from coalestra.testing import VirtualClock

A, B, C = (ResourceKey("md", "quote", s) for s in "ABC")
LONG = FreshnessPolicy(ttl_seconds=30.0, max_stale_seconds=3600.0)
ACCEPTED, DEGRADED, REJECTED = SnapshotResultState


class Feed:
    """Values observed ``ages[key]`` seconds ago; keys in ``down`` fail; counts calls."""

    def __init__(self, clock: Any, ages: dict[ResourceKey, float], down: set[ResourceKey]):
        self.clock, self.ages, self.down = clock, ages, down
        self.running = 0
        self.peak = 0

    async def fetch(self, key: ResourceKey, _ctx: Any) -> SourcePayload[str]:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0.01)
            if key in self.down:
                raise RuntimeError(f"down for {key.subject}")
            return SourcePayload(key.subject, observed_at=self.clock.now() - self.ages.get(key, 0))
        finally:
            self.running -= 1


def make(
    clock: VirtualClock,
    ages: dict[ResourceKey, float] | None = None,
    down: tuple[ResourceKey, ...] = (),
    **kwargs: Any,
) -> tuple[SnapshotBuilder, Feed, InMemoryMetrics, Events]:
    feed = Feed(clock, ages or {}, set(down))
    metrics, events = InMemoryMetrics(), Events()
    source = CallableSource(name="feed", priority=1, supports=lambda key: True, fetcher=feed.fetch)
    builder = SnapshotBuilder(
        [source], clock=clock, default_policy=LONG, metrics=metrics, events=events, **kwargs
    )
    return builder, feed, metrics, events


# --- RequestDegradationPolicy ---------------------------------------------------------------


def test_policy_defaults() -> None:
    policy = RequestDegradationPolicy()
    assert policy.minimum_resolved_resources == 1
    assert policy.minimum_resolved_required_resources == 0
    assert not policy.fail_closed
    assert not policy.reject_on_required_error
    assert not policy.reject_on_acceptance_violation
    assert not policy.reject_on_consistency_violation
    assert policy.accepted_actions == ("read", "evaluate", "act")
    assert policy.degraded_actions == ("read", "evaluate")
    assert policy.rejected_actions == ()
    assert dict(policy.metadata) == {}


def test_policy_normalizes_actions_and_freezes_metadata() -> None:
    metadata = {"desk": "btc"}
    policy = RequestDegradationPolicy(
        accepted_actions=[" read ", "act", "read"], rejected_actions=["alert"], metadata=metadata
    )
    metadata["desk"] = "eth"
    assert policy.accepted_actions == ("read", "act")
    assert policy.rejected_actions == ("alert",)
    assert policy.metadata["desk"] == "btc"
    with pytest.raises(TypeError):
        policy.metadata["x"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"minimum_resolved_resources": True}, TypeError),
        ({"minimum_resolved_resources": 1.0}, TypeError),
        ({"minimum_resolved_resources": -1}, ValueError),
        ({"minimum_resolved_required_resources": "1"}, TypeError),
        ({"minimum_resolved_required_resources": -2}, ValueError),
        ({"fail_closed": 1}, TypeError),
        ({"reject_on_required_error": None}, TypeError),
        ({"reject_on_acceptance_violation": "yes"}, TypeError),
        ({"reject_on_consistency_violation": 0}, TypeError),
        ({"accepted_actions": ("read", " ")}, ValueError),
        ({"degraded_actions": ("",)}, ValueError),
        ({"rejected_actions": (1,)}, TypeError),
        ({"accepted_actions": "read"}, TypeError),
        ({"metadata": ["x"]}, TypeError),
    ],
)
def test_policy_rejects_bad_input(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        RequestDegradationPolicy(**kwargs)


def test_policy_presets() -> None:
    closed = RequestDegradationPolicy.fail_closed_policy()
    assert closed.fail_closed
    assert closed.reject_on_required_error
    assert closed.reject_on_acceptance_violation
    assert closed.reject_on_consistency_violation
    assert closed.degraded_actions == ()
    assert closed.accepted_actions == ("read", "evaluate", "act")
    assert RequestDegradationPolicy.fail_closed_policy(accepted_actions=["read"]).accepted_actions
    read_only = RequestDegradationPolicy.read_only_degraded(minimum_resolved_resources=2)
    assert read_only.minimum_resolved_resources == 2
    assert read_only.accepted_actions == ("read", "evaluate")
    assert read_only.degraded_actions == ("read", "evaluate")
    risk = RequestDegradationPolicy.risk_reduction(minimum_resolved_resources=0)
    assert risk.minimum_resolved_resources == 0
    assert risk.accepted_actions == ("read", "evaluate", "cancel_orders", "reduce_only_exit")
    assert risk.degraded_actions == ("read", "cancel_orders", "reduce_only_exit")


def test_policy_presets_validate() -> None:
    with pytest.raises(ValueError, match="minimum_resolved_resources"):
        RequestDegradationPolicy.risk_reduction(minimum_resolved_resources=-1)
    with pytest.raises(ValueError, match="blank"):
        RequestDegradationPolicy.read_only_degraded(accepted_actions=[""])


# --- SnapshotResult -------------------------------------------------------------------------


def test_result_coerces_a_string_state() -> None:
    request = SnapshotRequest(required=[A])
    result = SnapshotResult("degraded", None, request)
    assert result.state is DEGRADED
    assert result.degraded
    assert not result.accepted
    assert not result.rejected
    assert not result.complete
    with pytest.raises(ValueError, match="unknown"):
        SnapshotResult("broken", None, request)


def test_require_accepted_raises_the_most_specific_error() -> None:
    request = SnapshotRequest(required=[A])
    boom = coalestra.SessionClosedError("gone")
    with pytest.raises(coalestra.SessionClosedError):
        SnapshotResult(REJECTED, None, request, error=boom).require_accepted()
    with pytest.raises(SnapshotBuildError) as caught:
        SnapshotResult(
            REJECTED, None, request, required_errors={A: RuntimeError("x")}
        ).require_accepted()
    assert list(caught.value.errors) == [A]
    SnapshotResult(DEGRADED, None, request).raise_for_rejected()  # not rejected: no error


# --- classification (async) -----------------------------------------------------------------


async def test_full_success_is_accepted(clock: VirtualClock) -> None:
    builder, _, metrics, events = make(clock)
    result = await builder.try_build_request(SnapshotRequest(required=[A], optional=[B]))
    assert result.state is ACCEPTED
    assert result.reason == "accepted"
    assert result.allowed_actions == ("read", "evaluate", "act")
    assert result.complete
    assert result.require_accepted().value(A) == "A"
    assert metrics.counter("snapshot_try_request_total", status="accepted") == 1
    (event,) = events.of("snapshot_try_request_resolved")
    assert event["state"] == "accepted"
    assert event["snapshot_id"] == result.snapshot.snapshot_id  # type: ignore[union-attr]


async def test_a_failed_required_key_degrades_by_default(clock: VirtualClock) -> None:
    builder, _, metrics, _ = make(clock, down=(A,))
    result = await builder.try_build_request(SnapshotRequest(required=[A], optional=[B, C]))
    assert result.state is DEGRADED
    assert result.reason == "required_errors"
    assert list(result.required_errors) == [A]
    assert result.allowed_actions == ("read", "evaluate")
    with pytest.raises(SnapshotBuildError):
        result.require_accepted()
    data = result.to_dict()
    json.dumps(data)
    assert data["required_errors"] == {str(A): "ResourceResolutionError"}
    assert (data["resources"], data["errors"]) == (2, 1)
    assert metrics.counter("snapshot_try_request_total", status="degraded") == 1


async def test_reject_on_required_error(clock: VirtualClock) -> None:
    builder, _, _, _ = make(clock, down=(A,))
    policy = RequestDegradationPolicy(reject_on_required_error=True, rejected_actions=["alert"])
    result = await builder.try_build_request(
        SnapshotRequest(required=[A], optional=[B]), degradation_policy=policy
    )
    assert result.rejected
    assert result.allowed_actions == ("alert",)
    with pytest.raises(SnapshotBuildError):
        result.raise_for_rejected()


async def test_optional_errors_and_the_reason_order(clock: VirtualClock) -> None:
    builder, _, _, _ = make(clock, down=(A, C))
    result = await builder.try_build_request(SnapshotRequest(required=[A, B], optional=[C]))
    assert result.reason == "required_errors,optional_errors"
    assert list(result.optional_errors) == [C]


async def test_too_few_resolved_resources_reject(clock: VirtualClock) -> None:
    builder, _, _, _ = make(clock, down=(A, B))
    result = await builder.try_build_request(SnapshotRequest(required=[A], optional=[B]))
    assert result.rejected  # 0 resolved < minimum_resolved_resources=1
    lenient = RequestDegradationPolicy(minimum_resolved_resources=0)
    result = await builder.try_build_request(
        SnapshotRequest(required=[A], optional=[B]), degradation_policy=lenient
    )
    assert result.degraded


async def test_too_few_resolved_required_resources_reject(clock: VirtualClock) -> None:
    builder, _, _, _ = make(clock, down=(A,))
    policy = RequestDegradationPolicy(minimum_resolved_required_resources=2)
    result = await builder.try_build_request(
        SnapshotRequest(required=[A, B], optional=[C]), degradation_policy=policy
    )
    assert result.rejected


async def test_fail_closed_rejects_any_problem(clock: VirtualClock) -> None:
    builder, _, _, _ = make(clock, down=(C,))
    result = await builder.try_build_request(
        SnapshotRequest(required=[A], optional=[C]),
        degradation_policy=RequestDegradationPolicy.fail_closed_policy(),
    )
    assert result.rejected
    assert result.reason == "optional_errors"


async def test_consistency_violation_is_collected(clock: VirtualClock) -> None:
    builder, _, _, _ = make(clock, ages={A: 0.0, B: 20.0})
    request = SnapshotRequest(required=[A, B], consistency_policy=SnapshotConsistencyPolicy(5.0))
    result = await builder.try_build_request(request)
    assert result.degraded
    assert result.reason == "consistency_violation"
    assert isinstance(result.consistency_violation, SnapshotConsistencyError)
    data = result.to_dict()["consistency_violation"]
    assert data["observation_skew_seconds"] == pytest.approx(20.0)
    assert data["oldest_key"] == str(B)
    with pytest.raises(SnapshotConsistencyError):
        result.require_accepted()
    strict = RequestDegradationPolicy(reject_on_consistency_violation=True)
    assert (await builder.try_build_request(request, degradation_policy=strict)).rejected


async def test_acceptance_violations_are_collected(clock: VirtualClock) -> None:
    builder, _, metrics, _ = make(clock, ages={A: 9.0})
    policy = SnapshotAcceptancePolicy(ResourceAcceptanceRule(max_age_seconds=5.0))
    request = SnapshotRequest(required=[A], acceptance_policy=policy)
    result = await builder.try_build_request(request)
    assert result.degraded
    assert result.reason == "acceptance_violation"
    (violation,) = result.acceptance_violations
    assert violation.reason.value == "too_old"
    (entry,) = result.to_dict()["acceptance_violations"]
    assert entry["reason"] == "too_old"
    assert entry["keys"] == [str(A)]
    assert entry["max_age_seconds"] == 5.0
    with pytest.raises(SnapshotAcceptanceError):
        result.require_accepted()
    assert metrics.counter("snapshot_acceptance_total", status="error") == 1
    strict = RequestDegradationPolicy(reject_on_acceptance_violation=True)
    assert (await builder.try_build_request(request, degradation_policy=strict)).rejected


async def test_a_coalestra_error_becomes_a_rejected_result(clock: VirtualClock) -> None:
    builder, _, _, _ = make(clock)
    async with builder.session() as session:
        await session.close()
        result = await session.try_resolve_request(SnapshotRequest(required=[A]))
    assert result.rejected
    assert isinstance(result.error, coalestra.CoalestraError)
    with pytest.raises(coalestra.CoalestraError):
        result.require_accepted()


async def test_metadata_and_snapshot_id_are_passed(clock: VirtualClock) -> None:
    builder, _, _, _ = make(clock)
    policy = RequestDegradationPolicy(metadata={"desk": "btc"})
    result = await try_build_request(
        builder,
        SnapshotRequest(required=[A]),
        snapshot_id="s-1",
        metadata={"m": 1},
        degradation_policy=policy,
    )
    assert result.snapshot is not None
    assert result.snapshot.snapshot_id == "s-1"
    assert result.to_dict()["metadata"] == {"desk": "btc"}


async def test_bad_arguments_raise(clock: VirtualClock) -> None:
    builder, _, _, _ = make(clock)
    with pytest.raises(TypeError, match="request"):
        await builder.try_build_request([A])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="degradation_policy"):
        await builder.try_build_request(
            SnapshotRequest(required=[A]), degradation_policy=SnapshotConsistencyPolicy(1.0)
        )  # type: ignore[arg-type]
    async with builder.session() as session:
        with pytest.raises(TypeError, match="retry_errors"):
            await session.try_resolve_request(SnapshotRequest(required=[A]), retry_errors=1)  # type: ignore[arg-type]


# --- sessions ---------------------------------------------------------------------------------


async def test_session_try_resolve_request_pins_and_classifies(clock: VirtualClock) -> None:
    builder, _, _, _ = make(clock, down=(B,))
    async with builder.session() as session:
        result = await try_resolve_request(session, SnapshotRequest(required=[A, B]))
        assert result.degraded
        assert session.snapshot().value(A) == "A"
        again = await session.try_resolve_request(
            SnapshotRequest(required=[A]), degradation_policy=RequestDegradationPolicy()
        )
        assert again.accepted


# --- many requests ----------------------------------------------------------------------------


async def test_try_build_requests_keeps_order_and_ids(clock: VirtualClock) -> None:
    builder, _, _, _ = make(clock, down=(B,))
    requests = [SnapshotRequest(required=[A]), SnapshotRequest(required=[B], optional=[C])]
    results = await try_build_requests(builder, requests, snapshot_id_prefix="batch")
    assert [result.state for result in results] == [ACCEPTED, DEGRADED]
    assert [r.snapshot.snapshot_id for r in results] == ["batch:0", "batch:1"]  # type: ignore[union-attr]
    assert await builder.try_build_requests([]) == ()


async def test_try_build_requests_bounds_concurrency(clock: VirtualClock) -> None:
    builder, feed, _, _ = make(clock)
    keys = [ResourceKey("md", "quote", f"K{i}") for i in range(6)]
    requests = [SnapshotRequest(required=[key]) for key in keys]
    results = await builder.try_build_requests(requests, max_concurrent=2)
    assert all(result.accepted for result in results)
    assert feed.peak == 2


@pytest.mark.parametrize(("bad", "error"), [(0, ValueError), (True, TypeError), (1.5, TypeError)])
async def test_try_build_requests_rejects_a_bad_limit(
    clock: VirtualClock, bad: Any, error: type[Exception]
) -> None:
    builder, _, _, _ = make(clock)
    with pytest.raises(error):
        await builder.try_build_requests([SnapshotRequest(required=[A])], max_concurrent=bad)


async def test_try_build_requests_rejects_a_non_request(clock: VirtualClock) -> None:
    builder, _, _, _ = make(clock)
    with pytest.raises(TypeError):
        await builder.try_build_requests([SnapshotRequest(required=[A]), A])  # type: ignore[list-item]


def test_install_operational_methods_is_an_idempotent_no_op() -> None:
    coalestra.install_operational_methods()
    coalestra.install_operational_methods()


# --- sync twins -------------------------------------------------------------------------------


@pytest.fixture
def facade() -> Iterator[SyncSnapshotBuilder]:
    def fetch(key: ResourceKey, _ctx: Any) -> SourcePayload[str]:
        if key == B:
            raise RuntimeError("B down")
        return SourcePayload(key.subject, observed_at=time.time())

    source = CallableSource(name="feed", priority=1, supports=lambda key: True, fetcher=fetch)
    builder = SnapshotBuilder([source], default_policy=LONG)
    with SyncSnapshotBuilder(builder, shutdown_timeout_seconds=1.0) as sync_builder:
        yield sync_builder


def test_sync_try_build_request(facade: SyncSnapshotBuilder) -> None:
    assert facade.try_build_request(SnapshotRequest(required=[A])).accepted
    result = facade.try_build_request(
        SnapshotRequest(required=[B], optional=[A]),
        degradation_policy=RequestDegradationPolicy(reject_on_required_error=True),
        snapshot_id="sync-1",
    )
    assert result.rejected
    assert result.snapshot is not None
    assert result.snapshot.snapshot_id == "sync-1"


def test_sync_try_build_requests(facade: SyncSnapshotBuilder) -> None:
    results = facade.try_build_requests(
        [SnapshotRequest(required=[A]), SnapshotRequest(required=[A], optional=[B])],
        max_concurrent=1,
    )
    assert [result.state for result in results] == [ACCEPTED, DEGRADED]


def test_sync_session_try_resolve_request(facade: SyncSnapshotBuilder) -> None:
    with facade.session() as session:
        assert session.try_resolve_request(SnapshotRequest(required=[A])).accepted
        assert session.try_resolve_request(SnapshotRequest(required=[B], optional=[A])).degraded
