"""Section 1 of the 0.6 API: snapshot acceptance (rules, requirements, policies, evaluation in
builds and session stages, errors, metrics and events), async and sync."""

from __future__ import annotations

import json
import pickle
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
    ResourceAcceptanceError,
    ResourceAcceptanceRule,
    ResourceKey,
    SnapshotAcceptanceError,
    SnapshotAcceptancePolicy,
    SnapshotAcceptanceReason,
    SnapshotAcceptanceViolation,
    SnapshotBuilder,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotRequest,
    SnapshotRequirement,
    SourcePayload,
    SyncSnapshotBuilder,
)
from coalestra.testing import VirtualClock

A, B, C, D = (ResourceKey("md", "quote", s) for s in "ABCD")
LONG = FreshnessPolicy(ttl_seconds=30.0, max_stale_seconds=3600.0)
TOO_OLD = SnapshotAcceptanceReason.TOO_OLD


def aged_source(ages: dict[ResourceKey, float], *, fail: tuple[ResourceKey, ...] = ()) -> Any:
    """Each key's value was observed ``ages[key]`` seconds before the call (wall clock)."""

    def fetch(key: ResourceKey, ctx: Any) -> SourcePayload[str]:
        if key in fail:
            raise RuntimeError(f"down for {key.subject}")
        return SourcePayload(key.subject, observed_at=ctx_now() - ages.get(key, 0.0))

    return CallableSource(
        name="feed", priority=1, supports=lambda key: True, fetcher=fetch, run_sync_in_thread=False
    )


_now: list[Any] = []


def ctx_now() -> float:
    return float(_now[0]())


def make_builder(
    clock: Any, ages: dict[ResourceKey, float], **kwargs: Any
) -> tuple[SnapshotBuilder, InMemoryMetrics, Events]:
    _now[:] = [clock.now]
    metrics, events = InMemoryMetrics(), Events()
    fail = kwargs.pop("fail", ())
    builder = SnapshotBuilder(
        [aged_source(ages, fail=fail)],
        clock=clock,
        default_policy=LONG,
        metrics=metrics,
        events=events,
        **kwargs,
    )
    return builder, metrics, events


def max_age(seconds: float) -> SnapshotAcceptancePolicy:
    return SnapshotAcceptancePolicy(ResourceAcceptanceRule(max_age_seconds=seconds))


# --- ResourceAcceptanceRule -----------------------------------------------------------------


def test_rule_defaults_and_field_order() -> None:
    rule = ResourceAcceptanceRule()
    assert (rule.max_age_seconds, rule.allow_stale, rule.minimum_authority_rank) == (
        None,
        True,
        None,
    )
    assert not rule.has_constraints
    assert ResourceAcceptanceRule(5, False, 2) == ResourceAcceptanceRule(
        max_age_seconds=5.0, allow_stale=False, minimum_authority_rank=2
    )


def test_rule_stores_max_age_as_float() -> None:
    rule = ResourceAcceptanceRule(max_age_seconds=3)
    assert isinstance(rule.max_age_seconds, float)
    assert rule.max_age_seconds == 3.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_age_seconds": 1.0},
        {"max_age_seconds": 0},
        {"allow_stale": False},
        {"minimum_authority_rank": 0},
        {"minimum_authority_rank": -3},
    ],
)
def test_rule_has_constraints_when_anything_can_reject(kwargs: dict[str, Any]) -> None:
    assert ResourceAcceptanceRule(**kwargs).has_constraints


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_age_seconds": "1"}, TypeError),
        ({"max_age_seconds": True}, TypeError),
        ({"max_age_seconds": float("nan")}, ValueError),
        ({"max_age_seconds": float("inf")}, ValueError),
        ({"max_age_seconds": float("-inf")}, ValueError),
        ({"max_age_seconds": -0.5}, ValueError),
        ({"allow_stale": 1}, TypeError),
        ({"allow_stale": None}, TypeError),
        ({"minimum_authority_rank": 1.0}, TypeError),
        ({"minimum_authority_rank": True}, TypeError),
        ({"minimum_authority_rank": "1"}, TypeError),
    ],
)
def test_rule_rejects_bad_input(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        ResourceAcceptanceRule(**kwargs)


# --- SnapshotRequirement --------------------------------------------------------------------


def test_requirement_dedupes_keys_in_first_order_and_strips_name() -> None:
    requirement = SnapshotRequirement(iter([B, A, B]), minimum_count=2, name="  feeds ")
    assert requirement.keys == (B, A)
    assert requirement.minimum_count == 2
    assert requirement.name == "feeds"


def test_requirement_class_methods() -> None:
    assert SnapshotRequirement.all_of([A, B, A]).minimum_count == 2
    assert SnapshotRequirement.all_of(iter([A, B]), name="x").keys == (A, B)
    assert SnapshotRequirement.any_of([A, B, C]).minimum_count == 1
    at_least = SnapshotRequirement.at_least(2, [A, B, C], name="two")
    assert (at_least.minimum_count, at_least.name) == (2, "two")


def test_requirements_with_equal_fields_are_equal() -> None:
    assert SnapshotRequirement([A, B], minimum_count=1, name="g") == SnapshotRequirement.any_of(
        [A, B], name="g"
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        (([],), {"minimum_count": 1}, ValueError),
        (([A, "B"],), {"minimum_count": 1}, TypeError),
        (("AB",), {"minimum_count": 1}, TypeError),
        (([A, B],), {"minimum_count": 1.0}, TypeError),
        (([A, B],), {"minimum_count": True}, TypeError),
        (([A, B],), {"minimum_count": 0}, ValueError),
        (([A, B],), {"minimum_count": 3}, ValueError),
        (([A, B, A],), {"minimum_count": 3}, ValueError),
        (([A, B], 1), {}, TypeError),
    ],
)
def test_requirement_rejects_bad_input(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        SnapshotRequirement(*args, **kwargs)


def test_requirement_class_methods_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        SnapshotRequirement.all_of([])
    with pytest.raises(ValueError, match="at least one key"):
        SnapshotRequirement.any_of(())
    with pytest.raises(ValueError, match="between 1 and 2"):
        SnapshotRequirement.at_least(3, [A, B])
    with pytest.raises(TypeError):
        SnapshotRequirement.at_least(True, [A, B])


# --- SnapshotAcceptancePolicy ---------------------------------------------------------------


def test_policy_fields_and_defaults() -> None:
    requirement = SnapshotRequirement.any_of([A])
    policy = SnapshotAcceptancePolicy(requirements=[requirement])
    assert policy.default_rule == ResourceAcceptanceRule()
    assert dict(policy.resource_rules) == {}
    assert policy.requirements == (requirement,)
    assert policy.include_optional_resources is False


def test_policy_copies_rules_into_a_read_only_mapping() -> None:
    rules = {A: ResourceAcceptanceRule(max_age_seconds=1.0)}
    policy = SnapshotAcceptancePolicy(resource_rules=rules)
    rules[B] = ResourceAcceptanceRule(allow_stale=False)
    assert list(policy.resource_rules) == [A]
    with pytest.raises(TypeError):
        policy.resource_rules[B] = ResourceAcceptanceRule()  # type: ignore[index]


def test_policy_referenced_keys_and_rule_for() -> None:
    strict = ResourceAcceptanceRule(max_age_seconds=1.0)
    policy = SnapshotAcceptancePolicy(
        default_rule=ResourceAcceptanceRule(allow_stale=False),
        resource_rules={C: strict},
        requirements=(SnapshotRequirement.any_of([A, C]), SnapshotRequirement.all_of([B])),
    )
    assert policy.referenced_keys == (C, A, B)
    assert policy.rule_for(C) is strict
    assert policy.rule_for(A) == ResourceAcceptanceRule(allow_stale=False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"default_rule": None},
        {"default_rule": SnapshotConsistencyPolicy(1.0)},
        {"resource_rules": {"A": ResourceAcceptanceRule(max_age_seconds=1.0)}},
        {"resource_rules": {A: 1.0}},
        {"resource_rules": [A]},
        {"requirements": ["A"]},
        {"requirements": [SnapshotRequirement.any_of([A]), None]},
        {"requirements": SnapshotRequirement.any_of([A])},
        {"requirements": [SnapshotRequirement.any_of([A])], "include_optional_resources": 1},
    ],
)
def test_policy_rejects_bad_types(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        SnapshotAcceptancePolicy(**kwargs)


def test_policy_that_can_reject_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="constraining rule or a requirement"):
        SnapshotAcceptancePolicy()
    with pytest.raises(ValueError, match="constraining rule"):
        SnapshotAcceptancePolicy(resource_rules={A: ResourceAcceptanceRule()})
    assert SnapshotAcceptancePolicy(resource_rules={A: ResourceAcceptanceRule(allow_stale=False)})


# --- SnapshotRequest(acceptance_policy=...) -------------------------------------------------


def test_request_keeps_the_policy_as_its_last_field() -> None:
    policy = max_age(1.0)
    request = SnapshotRequest(required=[A], acceptance_policy=policy)
    assert request.acceptance_policy is policy
    assert SnapshotRequest(required=[A]).acceptance_policy is None


def test_a_request_with_a_policy_is_a_hashable_picklable_value() -> None:
    policy = SnapshotAcceptancePolicy(
        resource_rules={A: ResourceAcceptanceRule(max_age_seconds=1.0)},
        requirements=[SnapshotRequirement.any_of([A])],
    )
    request = SnapshotRequest(required=[A], acceptance_policy=policy)
    copy = pickle.loads(pickle.dumps(request))
    assert copy == request
    assert hash(copy) == hash(request)


@pytest.mark.parametrize("bad", [SnapshotConsistencyPolicy(1.0), ResourceAcceptanceRule(), "x"])
def test_request_rejects_a_non_policy(bad: Any) -> None:
    with pytest.raises(TypeError, match="acceptance_policy"):
        SnapshotRequest(required=[A], acceptance_policy=bad)


def test_request_rejects_policy_keys_outside_the_request() -> None:
    policy = SnapshotAcceptancePolicy(
        resource_rules={C: ResourceAcceptanceRule(allow_stale=False)},
        requirements=[SnapshotRequirement.any_of([B, D])],
    )
    with pytest.raises(ValueError, match=str(C)) as caught:
        SnapshotRequest(required=[A], optional=[B], acceptance_policy=policy)
    assert str(D) in str(caught.value)
    assert SnapshotRequest(required=[A, C], optional=[B, D], acceptance_policy=policy)


# --- errors -----------------------------------------------------------------------------------


def _violation(key: ResourceKey = A) -> SnapshotAcceptanceViolation:
    return SnapshotAcceptanceViolation(reason=TOO_OLD, keys=(key,), message=f"{key} old", key=key)


def test_violation_fields_in_order_with_defaults() -> None:
    violation = SnapshotAcceptanceViolation(TOO_OLD, (A,), "m")
    assert violation.key is None
    assert violation.requirement_name == ""
    assert violation.current_age_seconds is None
    assert violation.accepted_count is None
    assert violation.required_count is None


def test_errors_reject_empty_violations() -> None:
    with pytest.raises(ValueError, match="violations cannot be empty"):
        SnapshotAcceptanceError(violations=())
    with pytest.raises(ValueError, match="violations cannot be empty"):
        ResourceAcceptanceError(A, ())


def test_resource_acceptance_error_joins_messages() -> None:
    error = ResourceAcceptanceError(A, [_violation(), _violation()])
    assert isinstance(error, coalestra.CoalestraError)
    assert error.key == A
    assert len(error.violations) == 2
    assert str(error) == f"{A} old; {A} old"
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_snapshot_acceptance_error_maps_keys_and_serializes() -> None:
    group = SnapshotAcceptanceViolation(
        SnapshotAcceptanceReason.REQUIREMENT_UNSATISFIED, (A, B), "group g", requirement_name="g"
    )
    error = SnapshotAcceptanceError(violations=[_violation(), group])
    assert isinstance(error, SnapshotBuildError)
    assert error.snapshot is None
    assert list(error.errors) == [A, B]
    assert all(isinstance(item, ResourceAcceptanceError) for item in error.errors.values())
    assert len(error.errors[A].violations) == 2
    assert "2 violation(s)" in str(error)
    assert "requirement_unsatisfied, too_old" in str(error)
    data = error.to_dict()
    json.dumps(data)
    assert data["error_type"] == "SnapshotAcceptanceError"
    assert data["partial_snapshot_available"] is False
    assert data["has_partial_snapshot"] is False
    assert [entry["error_type"] for entry in data["errors"]] == ["ResourceAcceptanceError"] * 2
    assert all(entry["failures"] == [] for entry in data["errors"])


# --- evaluation in build_request ----------------------------------------------------------------


async def test_build_accepts_young_enough_values_unchanged(clock: VirtualClock) -> None:
    builder, metrics, _ = make_builder(clock, {A: 1.0, B: 2.0})
    snapshot = await builder.build_request(
        SnapshotRequest(required=[A, B], acceptance_policy=max_age(2.0))
    )
    assert snapshot.value(A) == "A"
    assert metrics.counter("snapshot_acceptance_total", status="success") == 1


async def test_build_rejects_a_too_old_value(clock: VirtualClock) -> None:
    builder, metrics, events = make_builder(clock, {A: 1.0, B: 7.5})
    with pytest.raises(SnapshotAcceptanceError) as caught:
        await builder.build_request(
            SnapshotRequest(required=[A, B], acceptance_policy=max_age(5.0))
        )
    error = caught.value
    (violation,) = error.violations
    assert violation.reason is TOO_OLD
    assert violation.key == B
    assert violation.keys == (B,)
    assert violation.current_age_seconds == pytest.approx(7.5)
    assert violation.max_age_seconds == 5.0
    assert violation.stale is False
    assert error.snapshot is not None
    assert error.snapshot.value(B) == "B"
    assert error.to_dict()["partial_snapshot_available"] is True
    assert metrics.counter("snapshot_acceptance_total", status="error") == 1
    assert metrics.counter("snapshot_acceptance_violation_total", reason="too_old") == 1
    (event,) = events.of("snapshot_acceptance_failed")
    assert event["violations"] == 1
    assert event["reasons"] == "too_old"
    assert event["snapshot_id"] == error.snapshot.snapshot_id


async def test_age_equal_to_the_maximum_is_fine(clock: VirtualClock) -> None:
    builder, _, _ = make_builder(clock, {A: 4.0})
    await builder.build_request(SnapshotRequest(required=[A], acceptance_policy=max_age(4.0)))


async def test_stale_values_are_rejected_when_not_allowed(clock: VirtualClock) -> None:
    # Older than the key's ttl (30 s) counts as stale even if the value is not flagged.
    builder, _, _ = make_builder(clock, {A: 31.0, B: 1.0})
    policy = SnapshotAcceptancePolicy(ResourceAcceptanceRule(allow_stale=False))
    with pytest.raises(SnapshotAcceptanceError) as caught:
        await builder.build_request(SnapshotRequest(required=[A, B], acceptance_policy=policy))
    (violation,) = caught.value.violations
    assert violation.reason is SnapshotAcceptanceReason.STALE
    assert violation.key == A
    assert violation.stale is True
    assert violation.current_age_seconds == pytest.approx(31.0)


async def test_insufficient_authority(clock: VirtualClock) -> None:
    builder, _, _ = make_builder(clock, {})
    ok = SnapshotAcceptancePolicy(ResourceAcceptanceRule(minimum_authority_rank=0))
    await builder.build_request(SnapshotRequest(required=[A], acceptance_policy=ok))
    strict = SnapshotAcceptancePolicy(ResourceAcceptanceRule(minimum_authority_rank=1))
    with pytest.raises(SnapshotAcceptanceError) as caught:
        await builder.build_request(SnapshotRequest(required=[A], acceptance_policy=strict))
    (violation,) = caught.value.violations
    assert violation.reason is SnapshotAcceptanceReason.INSUFFICIENT_AUTHORITY
    assert (violation.authority_rank, violation.minimum_authority_rank) == (0, 1)


async def test_several_reasons_for_one_key_are_all_reported(clock: VirtualClock) -> None:
    builder, metrics, events = make_builder(clock, {A: 40.0})
    policy = SnapshotAcceptancePolicy(
        ResourceAcceptanceRule(max_age_seconds=10.0, allow_stale=False, minimum_authority_rank=5)
    )
    with pytest.raises(SnapshotAcceptanceError) as caught:
        await builder.build_request(SnapshotRequest(required=[A], acceptance_policy=policy))
    reasons = [violation.reason.value for violation in caught.value.violations]
    assert reasons == ["stale", "too_old", "insufficient_authority"]
    assert caught.value.violations[1].stale is True
    assert metrics.counter("snapshot_acceptance_violation_total", reason="stale") == 1
    assert events.of("snapshot_acceptance_failed")[0]["reasons"] == (
        "insufficient_authority,stale,too_old"
    )


async def test_optional_keys_are_checked_only_when_asked(clock: VirtualClock) -> None:
    builder, _, _ = make_builder(clock, {A: 1.0, B: 9.0})
    lax = SnapshotRequest(required=[A], optional=[B], acceptance_policy=max_age(5.0))
    assert (await builder.build_request(lax)).value(B) == "B"
    policy = SnapshotAcceptancePolicy(
        ResourceAcceptanceRule(max_age_seconds=5.0), include_optional_resources=True
    )
    with pytest.raises(SnapshotAcceptanceError) as caught:
        await builder.build_request(
            SnapshotRequest(required=[A], optional=[B], acceptance_policy=policy)
        )
    assert [violation.key for violation in caught.value.violations] == [B]


async def test_an_explicit_rule_checks_an_optional_key(clock: VirtualClock) -> None:
    builder, _, _ = make_builder(clock, {B: 9.0})
    policy = SnapshotAcceptancePolicy(resource_rules={B: ResourceAcceptanceRule(max_age_seconds=5)})
    with pytest.raises(SnapshotAcceptanceError):
        await builder.build_request(
            SnapshotRequest(required=[A], optional=[B], acceptance_policy=policy)
        )


async def test_an_unresolved_optional_key_makes_no_per_key_violation(clock: VirtualClock) -> None:
    builder, _, _ = make_builder(clock, {}, fail=(B,))
    policy = SnapshotAcceptancePolicy(
        ResourceAcceptanceRule(max_age_seconds=5.0),
        resource_rules={B: ResourceAcceptanceRule(max_age_seconds=1.0)},
        include_optional_resources=True,
    )
    snapshot = await builder.build_request(
        SnapshotRequest(required=[A], optional=[B], acceptance_policy=policy)
    )
    assert B in snapshot.errors


async def test_required_errors_come_first_as_a_plain_build_error(clock: VirtualClock) -> None:
    builder, metrics, _ = make_builder(clock, {A: 99.0}, fail=(B,))
    with pytest.raises(SnapshotBuildError) as caught:
        await builder.build_request(
            SnapshotRequest(required=[A, B], acceptance_policy=max_age(1.0))
        )
    assert type(caught.value) is SnapshotBuildError
    assert metrics.counter("snapshot_acceptance_total", status="error") == 0


async def test_consistency_is_checked_before_acceptance(clock: VirtualClock) -> None:
    builder, _, _ = make_builder(clock, {A: 1.0, B: 20.0})
    request = SnapshotRequest(
        required=[A, B],
        consistency_policy=SnapshotConsistencyPolicy(5.0),
        acceptance_policy=max_age(2.0),
    )
    with pytest.raises(SnapshotConsistencyError):
        await builder.build_request(request)


# --- requirement groups ---------------------------------------------------------------------


async def test_a_bad_alternative_does_not_reject_when_enough_are_acceptable(
    clock: VirtualClock,
) -> None:
    builder, _, _ = make_builder(clock, {A: 1.0, B: 50.0, C: 1.0})
    requirement = SnapshotRequirement.at_least(2, [A, B, C], name="venues")
    policy = SnapshotAcceptancePolicy(
        resource_rules={key: ResourceAcceptanceRule(max_age_seconds=5.0) for key in (A, B, C)},
        requirements=[requirement],
    )
    # Explicit rules check B directly; use optional keys and group-only rules instead.
    group_only = SnapshotAcceptancePolicy(
        ResourceAcceptanceRule(max_age_seconds=5.0), requirements=[requirement]
    )
    request = SnapshotRequest(required=[A], optional=[B, C], acceptance_policy=group_only)
    snapshot = await builder.build_request(request)
    assert snapshot.value(B) == "B"
    with pytest.raises(SnapshotAcceptanceError):
        await builder.build_request(
            SnapshotRequest(required=[A], optional=[B, C], acceptance_policy=policy)
        )


async def test_an_unsatisfied_group_adds_member_violations_then_the_group(
    clock: VirtualClock,
) -> None:
    builder, metrics, _ = make_builder(clock, {A: 1.0, B: 50.0, C: 60.0}, fail=(D,))
    requirement = SnapshotRequirement.at_least(2, [B, C, D], name="venues")
    policy = SnapshotAcceptancePolicy(
        ResourceAcceptanceRule(max_age_seconds=5.0), requirements=[requirement]
    )
    request = SnapshotRequest(required=[A], optional=[B, C, D], acceptance_policy=policy)
    with pytest.raises(SnapshotAcceptanceError) as caught:
        await builder.build_request(request)
    violations = caught.value.violations
    assert [(v.reason.value, v.key) for v in violations] == [
        ("too_old", B),
        ("too_old", C),
        ("requirement_unsatisfied", None),
    ]
    group = violations[-1]
    assert group.keys == (B, C, D)
    assert group.requirement_name == "venues"
    assert (group.accepted_count, group.required_count) == (0, 2)
    assert "venues" in group.message
    assert set(caught.value.errors) == {B, C, D}
    assert metrics.counter("snapshot_acceptance_violation_total", reason="too_old") == 1
    assert (
        metrics.counter("snapshot_acceptance_violation_total", reason="requirement_unsatisfied")
        == 1
    )


async def test_missing_members_count_as_not_acceptable(clock: VirtualClock) -> None:
    builder, _, _ = make_builder(clock, {}, fail=(B,))
    policy = SnapshotAcceptancePolicy(requirements=[SnapshotRequirement.all_of([A, B])])
    with pytest.raises(SnapshotAcceptanceError) as caught:
        await builder.build_request(
            SnapshotRequest(required=[A], optional=[B], acceptance_policy=policy)
        )
    (violation,) = caught.value.violations
    assert violation.reason is SnapshotAcceptanceReason.REQUIREMENT_UNSATISFIED
    assert violation.accepted_count == 1


# --- session resolve_request ----------------------------------------------------------------


async def test_session_values_age_while_pinned(clock: VirtualClock) -> None:
    builder, _, _ = make_builder(clock, {A: 1.0})
    request = SnapshotRequest(required=[A], acceptance_policy=max_age(5.0))
    async with builder.session() as session:
        await session.resolve_request(request)
        await _advance(10.0)
        with pytest.raises(SnapshotAcceptanceError) as caught:
            await session.resolve_request(request)
    assert caught.value.violations[0].current_age_seconds == pytest.approx(11.0, abs=0.01)


async def test_session_accepts_and_reports(clock: VirtualClock) -> None:
    builder, metrics, _ = make_builder(clock, {A: 1.0, B: 1.0})
    policy = SnapshotAcceptancePolicy(requirements=[SnapshotRequirement.any_of([A, B])])
    async with builder.session() as session:
        snapshot = await session.resolve_request(
            SnapshotRequest(required=[A], optional=[B], acceptance_policy=policy)
        )
    assert snapshot.value(A) == "A"
    assert metrics.counter("snapshot_acceptance_total", status="success") == 1


async def test_a_build_without_a_policy_evaluates_nothing(clock: VirtualClock) -> None:
    builder, metrics, _ = make_builder(clock, {A: 99.0})
    await builder.build_request(SnapshotRequest(required=[A]))
    await builder.build([A])
    assert metrics.counter("snapshot_acceptance_total", status="success") == 0


async def _advance(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


# --- sync twins -----------------------------------------------------------------------------


@pytest.fixture
def sync_builder() -> Iterator[SyncSnapshotBuilder]:
    ages = {A: 1.0, B: 100.0}

    def fetch(key: ResourceKey, _ctx: Any) -> SourcePayload[str]:
        return SourcePayload(key.subject, observed_at=time.time() - ages.get(key, 0.0))

    source = CallableSource(name="feed", priority=1, supports=lambda key: True, fetcher=fetch)
    builder = SnapshotBuilder([source], default_policy=LONG)
    with SyncSnapshotBuilder(builder, shutdown_timeout_seconds=1.0) as facade:
        yield facade


def test_sync_build_request_accepts_and_rejects(sync_builder: SyncSnapshotBuilder) -> None:
    assert sync_builder.build_request(
        SnapshotRequest(required=[A], acceptance_policy=max_age(50.0))
    ).value(A) == ("A")
    with pytest.raises(SnapshotAcceptanceError) as caught:
        sync_builder.build_request(
            SnapshotRequest(required=[A, B], acceptance_policy=max_age(50.0))
        )
    assert [violation.key for violation in caught.value.violations] == [B]


def test_sync_session_resolve_request_rejects(sync_builder: SyncSnapshotBuilder) -> None:
    with sync_builder.session() as session:
        with pytest.raises(SnapshotAcceptanceError):
            session.resolve_request(SnapshotRequest(required=[B], acceptance_policy=max_age(50.0)))
        policy = SnapshotAcceptancePolicy(requirements=[SnapshotRequirement.any_of([A, B])])
        assert session.resolve_request(
            SnapshotRequest(required=[A], optional=[B], acceptance_policy=policy)
        ).value(A) == ("A")


# --- transactional revalidation -------------------------------------------------------------


class Versioned:
    """Values ``"<subject>#<n>"`` (n counts fetches), observed ``lag[key]`` seconds ago."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.lag: dict[ResourceKey, float] = {}
        self.calls = 0

    async def fetch(self, key: ResourceKey, _ctx: Any) -> SourcePayload[str]:
        self.calls += 1
        observed = self.clock.now() - self.lag.get(key, 0.0)
        return SourcePayload(f"{key.subject}#{self.calls}", observed_at=observed)


def versioned_builder(clock: VirtualClock) -> tuple[SnapshotBuilder, Versioned, Events]:
    feed, events = Versioned(clock), Events()
    source = CallableSource(name="feed", priority=1, supports=lambda key: True, fetcher=feed.fetch)
    builder = SnapshotBuilder([source], clock=clock, default_policy=LONG, events=events)
    return builder, feed, events


async def test_revalidation_commits_an_acceptable_state(clock: VirtualClock) -> None:
    builder, _, events = versioned_builder(clock)
    async with builder.session() as session:
        await session.resolve([A])
        snapshot = await session.revalidate([A], force_refresh=True, acceptance_policy=max_age(5))
    assert snapshot.value(A) == "A#2"
    assert events.of("snapshot_session_revalidated")[-1]["acceptance_failed"] is False


async def test_without_a_policy_the_revalidation_event_keeps_its_0_5_7_keys(
    clock: VirtualClock,
) -> None:
    builder, _, events = versioned_builder(clock)
    async with builder.session() as session:
        await session.resolve([A])
        await session.revalidate([A])
    assert "acceptance_failed" not in events.of("snapshot_session_revalidated")[-1]


@pytest.mark.parametrize("strict", [True, False])
async def test_a_rejected_revalidation_commits_nothing(clock: VirtualClock, strict: bool) -> None:
    builder, feed, events = versioned_builder(clock)
    async with builder.session() as session:
        await session.resolve([A])
        feed.lag[A] = 20.0
        with pytest.raises(SnapshotAcceptanceError) as caught:
            await session.revalidate(
                [A], strict=strict, force_refresh=True, acceptance_policy=max_age(5.0)
            )
        assert session.snapshot().value(A) == "A#1"
        # The memo was not changed either: a later stage still shows the retained value.
        assert (await session.resolve([A])).value(A) == "A#1"
    error = caught.value
    assert error.snapshot is not None
    assert error.snapshot.value(A) == "A#1"  # the retained previous state
    assert [violation.key for violation in error.violations] == [A]
    health = await builder.health_snapshot()
    assert health.revalidation_attempt_count == 1
    assert health.revalidation_failure_count == 1
    event = events.of("snapshot_session_revalidated")[-1]
    assert event["acceptance_failed"] is True
    assert event["committed"] is False
    assert events.of("snapshot_acceptance_failed")


async def test_explicit_rules_check_pinned_keys_that_were_not_revalidated(
    clock: VirtualClock,
) -> None:
    builder, _, _ = versioned_builder(clock)
    policy = SnapshotAcceptancePolicy(resource_rules={B: ResourceAcceptanceRule(max_age_seconds=5)})
    async with builder.session() as session:
        await session.resolve([A, B])
        await _advance(10.0)  # pinned B ages; A is revalidated fresh
        with pytest.raises(SnapshotAcceptanceError) as caught:
            await session.revalidate([A], force_refresh=True, acceptance_policy=policy)
        assert session.snapshot().value(A) == "A#1"
    assert [violation.key for violation in caught.value.violations] == [B]


async def test_requirement_keys_absent_from_the_session_count_as_missing(
    clock: VirtualClock,
) -> None:
    builder, _, _ = versioned_builder(clock)
    policy = SnapshotAcceptancePolicy(requirements=[SnapshotRequirement.all_of([A, C])])
    async with builder.session() as session:
        await session.resolve([A])
        with pytest.raises(SnapshotAcceptanceError) as caught:
            await session.revalidate([A], force_refresh=True, acceptance_policy=policy)
    (violation,) = caught.value.violations
    assert violation.reason is SnapshotAcceptanceReason.REQUIREMENT_UNSATISFIED
    assert violation.accepted_count == 1


@pytest.mark.parametrize("bad", [SnapshotConsistencyPolicy(1.0), ResourceAcceptanceRule(), 5])
async def test_revalidate_rejects_a_non_policy(clock: VirtualClock, bad: Any) -> None:
    builder, _, _ = versioned_builder(clock)
    async with builder.session() as session:
        await session.resolve([A])
        with pytest.raises(TypeError, match="acceptance_policy"):
            await session.revalidate([A], acceptance_policy=bad)


def test_sync_revalidate_with_an_acceptance_policy(sync_builder: SyncSnapshotBuilder) -> None:
    with sync_builder.session() as session:
        session.resolve([A, B])
        assert session.revalidate([A], acceptance_policy=max_age(50.0)).value(A) == "A"
        with pytest.raises(SnapshotAcceptanceError):
            session.revalidate([B], strict=False, acceptance_policy=max_age(50.0))
