"""Non-throwing request builds (``try_*``): resolve a request without raising for what went
wrong, and classify the outcome with a :class:`~coalestra.RequestDegradationPolicy`.

The checks and the classification shared by the builder's and the session's ``try_*`` methods;
the module-level 0.6 entry points are in :mod:`._entry_points`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..core import (
    CoalestraError,
    RequestDegradationPolicy,
    Snapshot,
    SnapshotConsistencyError,
    SnapshotRequest,
    SnapshotResult,
)
from ..core._acceptance import TtlFor, evaluate_acceptance
from ..core._degradation import classify, rejected_by_error
from ..observability._instrumentation import Instrumentation
from ._checks import check_consistency

_DEFAULT_POLICY = RequestDegradationPolicy()


def check_try_arguments(
    request: object, policy: object
) -> tuple[SnapshotRequest, RequestDegradationPolicy]:
    """Validate before anything runs (a bad argument raises; it is not a rejected result)."""
    if not isinstance(request, SnapshotRequest):
        raise TypeError(f"request must be a SnapshotRequest, got {type(request).__name__}")
    if policy is None:
        return request, _DEFAULT_POLICY
    if not isinstance(policy, RequestDegradationPolicy):
        raise TypeError(
            f"degradation_policy must be a RequestDegradationPolicy or None, got "
            f"{type(policy).__name__}"
        )
    return request, policy


def check_max_concurrent(value: object) -> int | None:
    """``None`` or an int >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_concurrent must be an int or None, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"max_concurrent must be >= 1, got {value}")
    return value


async def resolve_trying(
    resolve: Callable[[], Awaitable[Snapshot]],
    request: SnapshotRequest,
    policy: RequestDegradationPolicy,
    *,
    now: Callable[[], float],
    ttl_for: TtlFor,
    report: Instrumentation,
) -> SnapshotResult:
    """Run ``resolve`` (a non-strict resolution of every request key), then classify."""
    try:
        snapshot = await resolve()
    except CoalestraError as error:
        result = rejected_by_error(request, policy, error)
    else:
        result = _classified(snapshot, request, policy, now, ttl_for, report)
    report.try_request_resolved(result)
    return result


def _classified(
    snapshot: Snapshot,
    request: SnapshotRequest,
    policy: RequestDegradationPolicy,
    now: Callable[[], float],
    ttl_for: TtlFor,
    report: Instrumentation,
) -> SnapshotResult:
    inconsistent: SnapshotConsistencyError | None = None
    try:
        check_consistency(snapshot, request.consistency_policy, request.required, request.optional)
    except SnapshotConsistencyError as error:
        inconsistent = error
        report.consistency_failed(snapshot.snapshot_id, error)
    violations: tuple[Any, ...] = ()
    acceptance = request.acceptance_policy
    if acceptance is not None:
        violations = evaluate_acceptance(
            snapshot.resources,
            acceptance,
            request.required,
            request.optional,
            now=now(),
            ttl_for=ttl_for,
        )
        report.acceptance_evaluated(snapshot.snapshot_id, violations)
    return classify(
        snapshot,
        request,
        policy,
        consistency_violation=inconsistent,
        acceptance_violations=violations,
    )
