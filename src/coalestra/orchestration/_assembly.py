"""Step 7 of a build: turn outcomes into a :class:`Snapshot`, check consistency, raise for
required failures (carrying the partial snapshot, so nothing resolved is lost)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from ..core import (
    DiagnosticsCollector,
    ResourceKey,
    Snapshot,
    SnapshotAcceptanceError,
    SnapshotAcceptancePolicy,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotValue,
)
from ..core._acceptance import TtlFor, evaluate_acceptance
from ..core._snapshot import key_tuple
from ..core._validation import EMPTY_MAPPING, ReadOnlyDict
from ..observability._instrumentation import Instrumentation


def requested_keys(keys: Iterable[ResourceKey]) -> tuple[ResourceKey, ...]:
    """The keys a build, resolve or revalidate was asked for: validated, de-duplicated.

    Raises:
        TypeError: ``keys`` is not an iterable of :class:`ResourceKey`.
        ValueError: no key (``"at least one resource key is required"``, B-TIME-5).
    """
    ordered = key_tuple("keys", keys)
    if not ordered:
        raise ValueError("at least one resource key is required")
    return ordered


def assemble(
    keys: Sequence[ResourceKey],
    values: Mapping[ResourceKey, SnapshotValue[Any]],
    errors: Mapping[ResourceKey, Exception],
    *,
    snapshot_id: str,
    created_at: float,
    diag: DiagnosticsCollector,
    duration_ms: float,
) -> Snapshot:
    """Build the snapshot in request order, with frozen diagnostics."""
    if not errors and len(values) == len(keys) and list(values) == list(keys):
        # Every key resolved, already in request order (a warm build): no re-keying needed.
        resources: Mapping[ResourceKey, SnapshotValue[Any]] = ReadOnlyDict(values)
    else:
        resources = {key: values[key] for key in keys if key in values}
    failed = {key: errors[key] for key in keys if key in errors} if errors else EMPTY_MAPPING
    diag.requested_resources += len(keys)
    diag.resolved_resources += len(resources)
    diag.failed_resources += len(failed)
    # Comprehensions: on Python 3.11+ their slot reads beat map() over an attrgetter.
    diag.stale_values += len([value for value in resources.values() if value.stale])
    observed = [value.observed_at for value in resources.values()]
    skew_ms = (max(observed) - min(observed)) * 1000.0 if observed else 0.0
    return Snapshot(
        snapshot_id=snapshot_id,
        created_at=created_at,
        resources=resources,
        errors=failed,
        diagnostics=diag.freeze(duration_ms=duration_ms, observation_skew_ms=skew_ms),
    )


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


def raise_for_required(snapshot: Snapshot, required: Collection[ResourceKey]) -> None:
    """Raise :class:`SnapshotBuildError` with the partial snapshot if a required key failed."""
    if not snapshot.errors:
        return
    errors = {key: snapshot.errors[key] for key in required if key in snapshot.errors}
    if errors:
        raise SnapshotBuildError(errors, snapshot=snapshot)


def check_acceptance(
    snapshot: Snapshot,
    policy: SnapshotAcceptancePolicy,
    required: Collection[ResourceKey],
    optional: Collection[ResourceKey],
    *,
    now: float,
    ttl_for: TtlFor,
    report: Instrumentation,
) -> None:
    """Raise :class:`SnapshotAcceptanceError` (carrying ``snapshot``) when the resolved values
    break ``policy``; report the evaluation either way. Called only when a policy is given."""
    violations = evaluate_acceptance(
        snapshot.resources, policy, required, optional, now=now, ttl_for=ttl_for
    )
    report.acceptance_evaluated(snapshot.snapshot_id, violations)
    if violations:
        raise SnapshotAcceptanceError(violations=violations, snapshot=snapshot)
