"""A build's checks, called only when there is something to check: its deadline argument,
required keys that failed, consistency (the observation skew of the values in scope) and
acceptance (a policy over the resolved values).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from ..core import (
    ResourceKey,
    Snapshot,
    SnapshotAcceptanceError,
    SnapshotAcceptancePolicy,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotValue,
)
from ..core._acceptance import SnapshotAcceptanceViolation, evaluate_acceptance
from ._machinery import Machinery


def check_consistency(
    snapshot: Snapshot,
    policy: SnapshotConsistencyPolicy | None,
    required: Collection[ResourceKey],
    optional: Collection[ResourceKey],
) -> None:
    """Raise :class:`SnapshotConsistencyError` when the scoped values were observed too far
    apart. The scope is the resolved required keys, plus resolved optional ones when the
    policy says; a skew equal to the limit passes."""
    if policy is None:
        return
    scope = list(required)
    if policy.include_optional_resources:
        scope += optional
    error = skew_violation(snapshot.resources, scope, policy, snapshot)
    if error is not None:
        raise error


def skew_violation(
    values: Mapping[ResourceKey, SnapshotValue[Any]],
    scope: Iterable[ResourceKey],
    policy: SnapshotConsistencyPolicy,
    snapshot: Snapshot,
) -> SnapshotConsistencyError | None:
    """The violation of ``policy`` by the values of ``scope`` found in ``values``, if any,
    carrying ``snapshot`` (which need not hold those values: a failed revalidation reports
    the state it kept)."""
    present = [(values[key].observed_at, key) for key in scope if key in values]
    if len(present) < 2:
        return None
    oldest = min(present, key=lambda item: item[0])
    newest = max(present, key=lambda item: item[0])
    skew = newest[0] - oldest[0]
    if skew <= policy.max_observation_skew_seconds:
        return None
    return SnapshotConsistencyError(
        keys=tuple(key for _, key in present),
        oldest_key=oldest[1],
        oldest_observed_at=oldest[0],
        newest_key=newest[1],
        newest_observed_at=newest[0],
        observation_skew_seconds=skew,
        max_observation_skew_seconds=policy.max_observation_skew_seconds,
        snapshot=snapshot,
    )


def check_acceptance(
    engine: Machinery,
    snapshot: Snapshot,
    policy: SnapshotAcceptancePolicy,
    required: Collection[ResourceKey],
    optional: Collection[ResourceKey],
) -> None:
    """Raise :class:`SnapshotAcceptanceError` (carrying ``snapshot``) when the resolved values
    break ``policy`` (see :func:`acceptance_violations`). Called only when a policy is given."""
    resources, snapshot_id = snapshot.resources, snapshot.snapshot_id
    violations = acceptance_violations(engine, resources, policy, required, optional, snapshot_id)
    if violations:
        raise SnapshotAcceptanceError(violations=violations, snapshot=snapshot)


def acceptance_violations(
    engine: Machinery,
    values: Mapping[ResourceKey, SnapshotValue[Any]],
    policy: SnapshotAcceptancePolicy,
    required: Collection[ResourceKey],
    optional: Collection[ResourceKey],
    snapshot_id: str,
) -> tuple[SnapshotAcceptanceViolation, ...]:
    """Every violation of ``policy`` by ``values``, judged now by ``engine``'s clock and each
    key's TTL; the evaluation is reported either way."""
    policy_for = engine.policy_for
    violations = evaluate_acceptance(
        values,
        policy,
        required,
        optional,
        now=engine.clock.now(),
        ttl_for=lambda key: policy_for(key).ttl_seconds,
    )
    engine.report.acceptance_evaluated(snapshot_id, violations)
    return violations


def raise_for_required(snapshot: Snapshot, required: Collection[ResourceKey]) -> None:
    """Raise :class:`SnapshotBuildError` with the partial snapshot if a required key failed."""
    if not snapshot.errors:
        return
    errors = {key: snapshot.errors[key] for key in required if key in snapshot.errors}
    if errors:
        raise SnapshotBuildError(errors, snapshot=snapshot)


def check_deadline(deadline_seconds: object) -> float:
    """The budget in seconds: a finite number > 0 (B-TIME-5).

    Raises:
        TypeError: not a number.
        ValueError: ``"deadline_seconds must be positive"`` (NaN included), or not finite.
    """
    if isinstance(deadline_seconds, bool) or not isinstance(deadline_seconds, (int, float)):
        raise TypeError(f"deadline_seconds must be a number, got {type(deadline_seconds).__name__}")
    if not deadline_seconds > 0:  # written so that NaN fails too
        raise ValueError("deadline_seconds must be positive")
    if math.isinf(deadline_seconds):
        raise ValueError("deadline_seconds must be finite")
    return float(deadline_seconds)
