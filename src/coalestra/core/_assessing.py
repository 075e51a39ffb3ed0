"""The rules of :meth:`BuilderHealth.assess() <coalestra.BuilderHealth.assess>`, in their
documented order (``docs/health.md``): a pure function of one health snapshot and, for counter
changes, an earlier one.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, Final, Protocol

from ._assessment import (
    BuilderHealthAssessment,
    BuilderHealthAssessmentPolicy,
    BuilderHealthFinding,
    BuilderHealthReason,
    BuilderHealthSeverity,
)

_Reason = BuilderHealthReason
_Severity = BuilderHealthSeverity


class AssessedHealth(Protocol):
    """What the rules read of a :class:`~coalestra.BuilderHealth` (the counters of
    ``_COUNTER_REASONS`` are read by name)."""

    @property
    def closed(self) -> bool: ...
    @property
    def capacity(self) -> Mapping[str, Any]: ...
    @property
    def circuits(self) -> Mapping[Any, Any]: ...
    @property
    def waiting_for_capacity(self) -> int: ...
    @property
    def pending_submissions(self) -> int: ...
    @property
    def max_pending_submissions(self) -> int | None: ...
    @property
    def source_timeout_guarantees(self) -> Mapping[str, Any]: ...
    @property
    def unsafe_blocking_source_count(self) -> int: ...
    @property
    def payload_copy_components(self) -> Mapping[str, Any]: ...
    @property
    def waiting_for_copy_capacity(self) -> int: ...
    @property
    def payload_copy_shutdown_incomplete(self) -> bool: ...
    @property
    def observability_buffers(self) -> Mapping[str, Any]: ...
    @property
    def observability_shutdown_incomplete(self) -> bool: ...


# The counters compared with a previous snapshot, in the order their findings appear.
_COUNTER_REASONS: Final = (
    ("queue_timeout_count", _Reason.QUEUE_TIMEOUTS_INCREASED),
    ("source_timeout_count", _Reason.SOURCE_TIMEOUTS_INCREASED),
    (
        "source_transport_timeout_violation_count",
        _Reason.SOURCE_TRANSPORT_TIMEOUT_VIOLATIONS_INCREASED,
    ),
    ("deadline_exceeded_count", _Reason.DEADLINES_EXCEEDED_INCREASED),
    ("revalidation_failure_count", _Reason.REVALIDATION_FAILURES_INCREASED),
    ("payload_copy_failure_count", _Reason.PAYLOAD_COPY_FAILURES_INCREASED),
    ("payload_copy_timeout_count", _Reason.PAYLOAD_COPY_TIMEOUTS_INCREASED),
    ("payload_copy_shutdown_timeout_count", _Reason.PAYLOAD_COPY_SHUTDOWN_TIMEOUTS_INCREASED),
    ("observability_dropped_count", _Reason.OBSERVABILITY_DROPS_INCREASED),
    ("observability_shutdown_timeout_count", _Reason.OBSERVABILITY_SHUTDOWN_TIMEOUTS_INCREASED),
    ("observability_failure_count", _Reason.OBSERVABILITY_FAILURES_INCREASED),
)


def _part(entry: object, name: str) -> Any:
    """One field of a nested health entry: an attribute, or a key of a plain mapping."""
    if isinstance(entry, Mapping):
        return entry.get(name)
    return getattr(entry, name, None)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _largest_ratio(
    entries: Mapping[Any, Any], numerator: str, denominator: str
) -> tuple[float, str]:
    """The largest ``numerator / denominator`` over ``entries`` and its entry's name.

    Entries without a positive limit are skipped; ties go to the first name in sorted order;
    ``(0.0, "")`` when no entry counts.
    """
    best, best_name = 0.0, ""
    for name in sorted(entries, key=str):
        entry = entries[name]
        part, whole = _number(_part(entry, numerator)), _number(_part(entry, denominator))
        if part is None or whole is None or whole <= 0.0:
            continue
        ratio = part / whole
        if not best_name or ratio > best:
            best, best_name = ratio, str(name)
    return best, best_name


def _waiting(
    reason: BuilderHealthReason,
    waiters: int,
    degraded_at: int,
    critical_ratio: float,
    ratio: tuple[float, str],
    degraded_metric: str,
) -> BuilderHealthFinding | None:
    if waiters < degraded_at:
        return None
    largest, component = ratio
    if largest >= critical_ratio:
        return BuilderHealthFinding(
            reason,
            _Severity.CRITICAL,
            "maximum_waiting_to_limit_ratio",
            largest,
            critical_ratio,
            component,
        )
    return BuilderHealthFinding(
        reason, _Severity.DEGRADED, degraded_metric, waiters, degraded_at, component
    )


def _backlog(
    reason: BuilderHealthReason,
    metric: str,
    ratio: float,
    degraded_at: float,
    critical_at: float,
    component: str = "",
) -> BuilderHealthFinding | None:
    if ratio >= critical_at:
        return BuilderHealthFinding(
            reason, _Severity.CRITICAL, metric, ratio, critical_at, component
        )
    if ratio >= degraded_at:
        return BuilderHealthFinding(
            reason, _Severity.DEGRADED, metric, ratio, degraded_at, component
        )
    return None


def _flag(reason: BuilderHealthReason, metric: str, raised: bool) -> BuilderHealthFinding | None:
    if not raised:
        return None
    return BuilderHealthFinding(reason, _Severity.CRITICAL, metric, True, False)


def _count(
    reason: BuilderHealthReason,
    severity: BuilderHealthSeverity,
    metric: str,
    names: list[str],
) -> BuilderHealthFinding | None:
    if not names:
        return None
    return BuilderHealthFinding(reason, severity, metric, len(names), 0, ",".join(sorted(names)))


def _unsafe_sources(health: AssessedHealth) -> BuilderHealthFinding | None:
    count = health.unsafe_blocking_source_count
    if count <= 0:
        return None
    names = sorted(
        str(name)
        for name, guarantee in health.source_timeout_guarantees.items()
        if _part(guarantee, "blocking_io") is True and _part(guarantee, "protected") is not True
    )
    return BuilderHealthFinding(
        _Reason.UNSAFE_BLOCKING_SOURCE,
        _Severity.CRITICAL,
        "unsafe_blocking_source_count",
        count,
        0,
        ",".join(names),
    )


def _circuits(health: AssessedHealth, state: str) -> int:
    return sum(1 for circuit in health.circuits.values() if _state(circuit) == state)


def _state(circuit: object) -> object:
    state = _part(circuit, "state")
    return state.value if isinstance(state, Enum) else state


def _circuit_findings(health: AssessedHealth) -> list[BuilderHealthFinding]:
    found = []
    for reason, metric, state in (
        (_Reason.CIRCUIT_OPEN, "open_circuits", "open"),
        (_Reason.CIRCUIT_HALF_OPEN, "half_open_circuits", "half_open"),
    ):
        count = _circuits(health, state)
        if count:
            found.append(BuilderHealthFinding(reason, _Severity.DEGRADED, metric, count, 0))
    return found


def _counter_findings(
    health: AssessedHealth, previous: AssessedHealth, policy: BuilderHealthAssessmentPolicy
) -> list[BuilderHealthFinding]:
    found = []
    for field_name, reason in _COUNTER_REASONS:
        delta = max(0, getattr(health, field_name) - getattr(previous, field_name))
        if delta >= policy.counter_delta_critical:
            severity, threshold = _Severity.CRITICAL, policy.counter_delta_critical
        elif delta >= policy.counter_delta_degraded:
            severity, threshold = _Severity.DEGRADED, policy.counter_delta_degraded
        else:
            continue
        found.append(
            BuilderHealthFinding(reason, severity, f"delta_{field_name}", delta, threshold)
        )
    return found


def _waiting_findings(
    health: AssessedHealth, policy: BuilderHealthAssessmentPolicy
) -> list[BuilderHealthFinding | None]:
    """Rules 3 and 4: calls waiting for source capacity, then for copy capacity."""
    return [
        _waiting(
            _Reason.SOURCE_CAPACITY_WAITING,
            health.waiting_for_capacity,
            policy.capacity_waiting_degraded,
            policy.capacity_waiting_critical_ratio,
            _largest_ratio(health.capacity, "waiting", "limit"),
            "waiting_for_capacity",
        ),
        _waiting(
            _Reason.PAYLOAD_COPY_CAPACITY_WAITING,
            health.waiting_for_copy_capacity,
            policy.copy_waiting_degraded,
            policy.copy_waiting_critical_ratio,
            _largest_ratio(
                health.payload_copy_components, "waiting_for_capacity", "max_concurrency"
            ),
            "waiting_for_copy_capacity",
        ),
    ]


def _backlog_findings(
    health: AssessedHealth, policy: BuilderHealthAssessmentPolicy
) -> list[BuilderHealthFinding | None]:
    """Rules 5 to 7: the submission backlog, the fullest observability buffer, and the
    observability workers that stopped before their buffer was closed."""
    pending, limit = health.pending_submissions, health.max_pending_submissions
    buffers = health.observability_buffers
    fullest = _largest_ratio(buffers, "pending", "max_pending")
    stopped = [
        str(name)
        for name, stats in buffers.items()
        if _part(stats, "worker_alive") is False and _part(stats, "closed") is False
    ]
    return [
        _backlog(
            _Reason.SUBMISSION_BACKLOG_HIGH,
            "submission_backlog_ratio",
            pending / limit if limit else 0.0,
            policy.submission_backlog_degraded_ratio,
            policy.submission_backlog_critical_ratio,
        ),
        _backlog(
            _Reason.OBSERVABILITY_BACKLOG_HIGH,
            "observability_backlog_ratio",
            fullest[0],
            policy.observability_backlog_degraded_ratio,
            policy.observability_backlog_critical_ratio,
            fullest[1],
        ),
        _count(
            _Reason.OBSERVABILITY_WORKER_STOPPED,
            _Severity.CRITICAL,
            "stopped_observability_workers",
            stopped,
        ),
    ]


def _state_findings(
    health: AssessedHealth, policy: BuilderHealthAssessmentPolicy
) -> list[BuilderHealthFinding | None]:
    """Rules 1 to 9: what the snapshot itself shows, in the documented order."""
    return [
        _flag(_Reason.BUILDER_CLOSED, "closed", health.closed),
        _unsafe_sources(health),
        *_waiting_findings(health, policy),
        *_backlog_findings(health, policy),
        *_circuit_findings(health),
        _flag(
            _Reason.PAYLOAD_COPY_SHUTDOWN_INCOMPLETE,
            "payload_copy_shutdown_incomplete",
            health.payload_copy_shutdown_incomplete,
        ),
        _flag(
            _Reason.OBSERVABILITY_SHUTDOWN_INCOMPLETE,
            "observability_shutdown_incomplete",
            health.observability_shutdown_incomplete,
        ),
    ]


def assess_health(
    health: AssessedHealth,
    previous: AssessedHealth | None,
    policy: BuilderHealthAssessmentPolicy,
) -> BuilderHealthAssessment:
    """The assessment of ``health`` (arguments already checked by the caller)."""
    findings = [finding for finding in _state_findings(health, policy) if finding is not None]
    if previous is not None:
        findings.extend(_counter_findings(health, previous, policy))
    severities = {finding.severity for finding in findings}
    if _Severity.CRITICAL in severities:
        severity = _Severity.CRITICAL
    elif findings:
        severity = _Severity.DEGRADED
    else:
        severity = _Severity.HEALTHY
    return BuilderHealthAssessment(severity, tuple(findings), previous is not None)
