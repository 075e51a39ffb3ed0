"""The resilience value objects: enums, identities, snapshots and policies, as the contract
fixes them, and their validation."""

from __future__ import annotations

import dataclasses
import math

import pytest

from coalestra.resilience import (
    CircuitBreakerPolicy,
    CircuitIdentity,
    CircuitScope,
    CircuitSnapshot,
    CircuitState,
    RetryPolicy,
    SourceResiliencePolicy,
)


def field_names(cls: type) -> list[str]:
    return [field.name for field in dataclasses.fields(cls)]


def test_dataclass_fields_are_in_contract_order() -> None:
    # The contract's four fields keep their positions; the opt-in filters are keyword-only.
    assert field_names(RetryPolicy) == [
        "max_attempts",
        "base_delay_seconds",
        "max_delay_seconds",
        "jitter_ratio",
        "retry_on",
        "give_up_on",
    ]
    assert [f.kw_only for f in dataclasses.fields(RetryPolicy)] == [False] * 4 + [True] * 2
    assert field_names(CircuitBreakerPolicy) == [
        "scope",
        "failure_threshold",
        "recovery_timeout_seconds",
        "enabled",
    ]
    assert field_names(CircuitIdentity) == ["source", "scope", "discriminator"]
    assert field_names(CircuitSnapshot) == [
        "state",
        "failures",
        "opened_at",
        "half_open_probe_active",
    ]
    assert field_names(SourceResiliencePolicy) == ["retry", "circuit"]


def test_enum_members_and_values() -> None:
    assert {m.name: m.value for m in CircuitScope} == {
        "SOURCE": "source",
        "NAMESPACE": "namespace",
        "SUBJECT": "subject",
        "RESOURCE": "resource",
    }
    assert {m.name: m.value for m in CircuitState} == {
        "CLOSED": "closed",
        "OPEN": "open",
        "HALF_OPEN": "half_open",
    }
    assert CircuitScope.SUBJECT == "subject"  # str enums compare as their values


def test_circuit_breaker_policy_defaults() -> None:
    policy = CircuitBreakerPolicy()
    assert policy.scope is CircuitScope.SOURCE
    assert (policy.failure_threshold, policy.recovery_timeout_seconds) == (3, 10.0)
    assert policy.enabled is True


def test_scope_accepts_its_string_value() -> None:
    assert CircuitBreakerPolicy(scope="subject").scope is CircuitScope.SUBJECT  # type: ignore[arg-type]
    assert CircuitIdentity("s", "resource", "k").scope is CircuitScope.RESOURCE  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"scope": "planet"}, ValueError, "scope"),
        ({"failure_threshold": 0}, ValueError, "failure_threshold"),
        ({"failure_threshold": 2.0}, TypeError, "failure_threshold"),
        ({"recovery_timeout_seconds": -1.0}, ValueError, "recovery_timeout_seconds"),
        ({"recovery_timeout_seconds": math.inf}, ValueError, "recovery_timeout_seconds"),
        ({"recovery_timeout_seconds": math.nan}, ValueError, "recovery_timeout_seconds"),
        ({"recovery_timeout_seconds": "5"}, TypeError, "recovery_timeout_seconds"),
        ({"enabled": 1}, TypeError, "enabled"),
    ],
)
def test_circuit_breaker_policy_validation_names_the_argument(
    kwargs: dict[str, object], error: type[Exception], argument: str
) -> None:
    with pytest.raises(error, match=argument):
        CircuitBreakerPolicy(**kwargs)  # type: ignore[arg-type]


def test_zero_recovery_timeout_is_allowed() -> None:
    assert CircuitBreakerPolicy(recovery_timeout_seconds=0).recovery_timeout_seconds == 0.0


def test_source_resilience_policy_defaults_are_fresh_default_policies() -> None:
    policy = SourceResiliencePolicy()
    assert policy.retry == RetryPolicy()
    assert policy.circuit == CircuitBreakerPolicy()


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"retry": CircuitBreakerPolicy()}, "retry"), ({"circuit": RetryPolicy()}, "circuit")],
)
def test_source_resilience_policy_refuses_wrong_types(
    kwargs: dict[str, object], argument: str
) -> None:
    with pytest.raises(TypeError, match=argument):
        SourceResiliencePolicy(**kwargs)  # type: ignore[arg-type]


def test_policies_are_frozen_and_hashable() -> None:
    policy = SourceResiliencePolicy()
    with pytest.raises(AttributeError):
        policy.retry = RetryPolicy()  # type: ignore[misc]
    assert hash(policy) == hash(SourceResiliencePolicy())


def test_identity_equality_and_validation() -> None:
    assert CircuitIdentity("s", CircuitScope.SOURCE) == CircuitIdentity(
        "s", CircuitScope.SOURCE, ""
    )
    assert CircuitIdentity("s", CircuitScope.SUBJECT, "BTC") != CircuitIdentity(
        "s", CircuitScope.SUBJECT, "ETH"
    )
    with pytest.raises(ValueError, match="source"):
        CircuitIdentity("", CircuitScope.SOURCE)
    with pytest.raises(TypeError, match="discriminator"):
        CircuitIdentity("s", CircuitScope.SUBJECT, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scope"):
        CircuitIdentity("s", "galaxy")  # type: ignore[arg-type]


def test_circuit_snapshot_validation() -> None:
    snap = CircuitSnapshot("open", 3, 12, False)  # type: ignore[arg-type]
    assert snap.state is CircuitState.OPEN
    assert isinstance(snap.opened_at, float)
    with pytest.raises(ValueError, match="failures"):
        CircuitSnapshot(CircuitState.CLOSED, -1, 0.0, False)
    with pytest.raises(TypeError, match="half_open_probe_active"):
        CircuitSnapshot(CircuitState.CLOSED, 0, 0.0, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="opened_at"):
        CircuitSnapshot(CircuitState.OPEN, 1, math.nan, False)
