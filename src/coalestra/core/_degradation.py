"""Non-throwing request builds: classify a resolved request as accepted, degraded or rejected.

:class:`RequestDegradationPolicy` says when a partial or rejected snapshot is still usable, and
for which actions; :class:`SnapshotResult` carries the verdict, the snapshot and every problem
found. :func:`classify` is the pure function the builder and sessions call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, final

from ._acceptance import SnapshotAcceptanceError, SnapshotAcceptanceViolation
from ._build_errors import SnapshotBuildError, SnapshotConsistencyError
from ._errors import CoalestraError, error_type_name
from ._keys import ResourceKey
from ._snapshot import Snapshot, SnapshotRequest
from ._validation import EMPTY_MAPPING, ReadOnlyDict, check_bool, check_int, frozen_mapping

_ALL_ACTIONS = ("read", "evaluate", "act")
_READ_ACTIONS = ("read", "evaluate")
_RISK_ACCEPTED = ("read", "evaluate", "cancel_orders", "reduce_only_exit")
_RISK_DEGRADED = ("read", "cancel_orders", "reduce_only_exit")


class SnapshotResultState(str, Enum):
    """The verdict of a non-throwing request build."""

    ACCEPTED = "accepted"
    DEGRADED = "degraded"
    REJECTED = "rejected"


def _actions(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be an iterable of action names")
    result: list[str] = []
    for action in value:
        if not isinstance(action, str):
            raise TypeError(f"{name} must contain only str, got {type(action).__name__}")
        if not action.strip():
            raise ValueError(f"{name} cannot contain a blank action")
        result.append(action.strip())
    return tuple(dict.fromkeys(result))


@final
@dataclass(frozen=True, slots=True)
class RequestDegradationPolicy:
    """When a request that did not fully succeed is still usable (DEGRADED) or not (REJECTED),
    and which actions each verdict allows."""

    minimum_resolved_resources: int = 1
    minimum_resolved_required_resources: int = 0
    fail_closed: bool = False
    reject_on_required_error: bool = False
    reject_on_acceptance_violation: bool = False
    reject_on_consistency_violation: bool = False
    accepted_actions: tuple[str, ...] = _ALL_ACTIONS
    degraded_actions: tuple[str, ...] = _READ_ACTIONS
    rejected_actions: tuple[str, ...] = ()
    # Left out of the hash (a mapping is not hashable); equality still compares it.
    metadata: Mapping[str, Any] = field(default_factory=lambda: EMPTY_MAPPING, hash=False)

    def __post_init__(self) -> None:
        for count in ("minimum_resolved_resources", "minimum_resolved_required_resources"):
            check_int(count, getattr(self, count), minimum=0)
        for flag in (
            "fail_closed",
            "reject_on_required_error",
            "reject_on_acceptance_violation",
            "reject_on_consistency_violation",
        ):
            check_bool(flag, getattr(self, flag))
        for name in ("accepted_actions", "degraded_actions", "rejected_actions"):
            object.__setattr__(self, name, _actions(name, getattr(self, name)))
        object.__setattr__(self, "metadata", frozen_mapping("metadata", self.metadata))

    @classmethod
    def fail_closed_policy(
        cls, *, accepted_actions: Iterable[str] = _ALL_ACTIONS
    ) -> RequestDegradationPolicy:
        """Anything short of full success is REJECTED."""
        return cls(
            fail_closed=True,
            reject_on_required_error=True,
            reject_on_acceptance_violation=True,
            reject_on_consistency_violation=True,
            accepted_actions=tuple(accepted_actions),
            degraded_actions=(),
        )

    @classmethod
    def read_only_degraded(
        cls,
        *,
        minimum_resolved_resources: int = 1,
        accepted_actions: Iterable[str] = _READ_ACTIONS,
        degraded_actions: Iterable[str] = _READ_ACTIONS,
    ) -> RequestDegradationPolicy:
        """Never act: read and evaluate, degraded or not."""
        return cls(
            minimum_resolved_resources=minimum_resolved_resources,
            accepted_actions=tuple(accepted_actions),
            degraded_actions=tuple(degraded_actions),
        )

    @classmethod
    def risk_reduction(cls, *, minimum_resolved_resources: int = 1) -> RequestDegradationPolicy:
        """Degraded data may still cancel orders or exit positions (reduce-only)."""
        return cls(
            minimum_resolved_resources=minimum_resolved_resources,
            accepted_actions=_RISK_ACCEPTED,
            degraded_actions=_RISK_DEGRADED,
        )


@final
@dataclass(frozen=True, slots=True)
class SnapshotResult:
    """The outcome of a non-throwing request build: never raised, always returned."""

    state: SnapshotResultState
    snapshot: Snapshot | None
    request: SnapshotRequest
    allowed_actions: tuple[str, ...] = ()
    reason: str = ""
    required_errors: Mapping[ResourceKey, Exception] = field(
        default_factory=lambda: EMPTY_MAPPING, hash=False
    )
    optional_errors: Mapping[ResourceKey, Exception] = field(
        default_factory=lambda: EMPTY_MAPPING, hash=False
    )
    acceptance_violations: tuple[SnapshotAcceptanceViolation, ...] = ()
    consistency_violation: SnapshotConsistencyError | None = None
    error: Exception | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: EMPTY_MAPPING, hash=False)

    def __post_init__(self) -> None:
        state: object = self.state
        if not isinstance(state, SnapshotResultState):
            try:
                state = SnapshotResultState(state)
            except ValueError:
                raise ValueError(f"unknown SnapshotResult state: {state!r}") from None
            object.__setattr__(self, "state", state)
        object.__setattr__(self, "allowed_actions", tuple(self.allowed_actions))
        object.__setattr__(self, "acceptance_violations", tuple(self.acceptance_violations))
        for name in ("required_errors", "optional_errors", "metadata"):
            object.__setattr__(self, name, ReadOnlyDict(getattr(self, name)))

    @property
    def accepted(self) -> bool:
        """The request fully succeeded."""
        return self.state is SnapshotResultState.ACCEPTED

    @property
    def degraded(self) -> bool:
        """Something went wrong, but the policy keeps the snapshot usable."""
        return self.state is SnapshotResultState.DEGRADED

    @property
    def rejected(self) -> bool:
        """The snapshot must not be used."""
        return self.state is SnapshotResultState.REJECTED

    @property
    def complete(self) -> bool:
        """Accepted and every key of the snapshot resolved."""
        return self.accepted and self.snapshot is not None and self.snapshot.complete

    def raise_for_rejected(self) -> None:
        """Raise the error that explains a REJECTED result (see :meth:`require_accepted`)."""
        if self.rejected:
            raise self._explanation()

    def require_accepted(self) -> Snapshot:
        """Return the snapshot of an ACCEPTED result; otherwise raise the stored error, else
        the consistency error, else a :class:`SnapshotAcceptanceError`, else a
        :class:`SnapshotBuildError` of the resource errors."""
        if self.accepted and self.snapshot is not None:
            return self.snapshot
        raise self._explanation()

    def _explanation(self) -> Exception:
        if self.error is not None:
            return self.error
        if self.consistency_violation is not None:
            return self.consistency_violation
        if self.acceptance_violations:
            return SnapshotAcceptanceError(
                violations=self.acceptance_violations, snapshot=self.snapshot
            )
        errors = {**self.required_errors, **self.optional_errors}
        return SnapshotBuildError(errors, snapshot=self.snapshot)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary (states, counts, error type names, violations)."""
        snapshot = self.snapshot
        return {
            "state": self.state.value,
            "snapshot_id": None if snapshot is None else snapshot.snapshot_id,
            "resources": 0 if snapshot is None else len(snapshot.resources),
            "errors": 0 if snapshot is None else len(snapshot.errors),
            "allowed_actions": list(self.allowed_actions),
            "reason": self.reason,
            "required_errors": _error_types(self.required_errors),
            "optional_errors": _error_types(self.optional_errors),
            "acceptance_violations": [_violation_dict(v) for v in self.acceptance_violations],
            "consistency_violation": _consistency_dict(self.consistency_violation),
            "metadata": dict(self.metadata),
        }


def _error_types(errors: Mapping[ResourceKey, Exception]) -> dict[str, str]:
    return {str(key): error_type_name(error) for key, error in errors.items()}


def _violation_dict(violation: SnapshotAcceptanceViolation) -> dict[str, Any]:
    return {
        "reason": violation.reason.value,
        "keys": [str(key) for key in violation.keys],
        "message": violation.message,
        "current_age_seconds": violation.current_age_seconds,
        "max_age_seconds": violation.max_age_seconds,
        "authority_rank": violation.authority_rank,
        "minimum_authority_rank": violation.minimum_authority_rank,
        "accepted_count": violation.accepted_count,
        "required_count": violation.required_count,
    }


def _consistency_dict(error: SnapshotConsistencyError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {
        "keys": [str(key) for key in error.keys],
        "oldest_key": str(error.oldest_key),
        "oldest_observed_at": error.oldest_observed_at,
        "newest_key": str(error.newest_key),
        "newest_observed_at": error.newest_observed_at,
        "observation_skew_seconds": error.observation_skew_seconds,
        "max_observation_skew_seconds": error.max_observation_skew_seconds,
    }


def classify(
    snapshot: Snapshot,
    request: SnapshotRequest,
    policy: RequestDegradationPolicy,
    *,
    consistency_violation: SnapshotConsistencyError | None,
    acceptance_violations: tuple[SnapshotAcceptanceViolation, ...],
) -> SnapshotResult:
    """Turn a non-strictly resolved request into a :class:`SnapshotResult` under ``policy``."""
    errors = snapshot.errors
    required_errors = {key: errors[key] for key in request.required if key in errors}
    optional_errors = {key: errors[key] for key in request.optional if key in errors}
    problems = [
        name
        for name, found in (
            ("required_errors", required_errors),
            ("optional_errors", optional_errors),
            ("consistency_violation", consistency_violation is not None),
            ("acceptance_violation", acceptance_violations),
        )
        if found
    ]
    if not problems:
        state, reason, actions = SnapshotResultState.ACCEPTED, "accepted", policy.accepted_actions
    else:
        rejected = _rejects(snapshot, request, policy, problems)
        state = SnapshotResultState.REJECTED if rejected else SnapshotResultState.DEGRADED
        actions = policy.rejected_actions if rejected else policy.degraded_actions
        reason = ",".join(problems)
    return SnapshotResult(
        state=state,
        snapshot=snapshot,
        request=request,
        allowed_actions=actions,
        reason=reason,
        required_errors=required_errors,
        optional_errors=optional_errors,
        acceptance_violations=acceptance_violations,
        consistency_violation=consistency_violation,
        metadata=policy.metadata,
    )


def _rejects(
    snapshot: Snapshot,
    request: SnapshotRequest,
    policy: RequestDegradationPolicy,
    problems: list[str],
) -> bool:
    resources = snapshot.resources
    resolved = sum(1 for key in request.keys if key in resources)
    resolved_required = sum(1 for key in request.required if key in resources)
    return (
        policy.fail_closed
        or resolved < policy.minimum_resolved_resources
        or resolved_required < policy.minimum_resolved_required_resources
        or (policy.reject_on_required_error and "required_errors" in problems)
        or (policy.reject_on_consistency_violation and "consistency_violation" in problems)
        or (policy.reject_on_acceptance_violation and "acceptance_violation" in problems)
    )


def rejected_by_error(
    request: SnapshotRequest, policy: RequestDegradationPolicy, error: CoalestraError
) -> SnapshotResult:
    """The result of a request whose resolution itself raised ``error``."""
    return SnapshotResult(
        state=SnapshotResultState.REJECTED,
        snapshot=getattr(error, "snapshot", None),
        request=request,
        allowed_actions=policy.rejected_actions,
        reason="error",
        error=error,
        metadata=policy.metadata,
    )
