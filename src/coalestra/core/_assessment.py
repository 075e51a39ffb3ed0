"""Assessing a :class:`~coalestra.BuilderHealth`: severities, reasons, findings, the policy.

:func:`assess_health` is a pure function of one health snapshot (and, for counter changes, an
earlier one): it reads no clock and calls nothing, so the same snapshots always give the same
assessment. The rules and their order are the 0.6 API's (``docs/health.md`` lists them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, final

from ._validation import check_bool, check_enum, check_int, check_str
from ._wire import to_wire

if TYPE_CHECKING:
    from ._health import BuilderHealth

BUILDER_HEALTH_ASSESSMENT_SCHEMA: Final = "coalestra.builder-health-assessment"
"""The ``schema`` of :meth:`BuilderHealthAssessment.to_dict`."""
BUILDER_HEALTH_ASSESSMENT_SCHEMA_VERSION: Final = 1
"""The ``schema_version`` of :meth:`BuilderHealthAssessment.to_dict`."""


@final
class BuilderHealthSeverity(str, Enum):
    """How bad an assessment or one finding is: ``healthy`` < ``degraded`` < ``critical``."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    CRITICAL = "critical"


@final
class BuilderHealthReason(str, Enum):
    """Why a finding was made (one per assessment rule; see ``docs/health.md``)."""

    BUILDER_CLOSED = "builder_closed"
    SOURCE_CAPACITY_WAITING = "source_capacity_waiting"
    PAYLOAD_COPY_CAPACITY_WAITING = "payload_copy_capacity_waiting"
    SUBMISSION_BACKLOG_HIGH = "submission_backlog_high"
    OBSERVABILITY_BACKLOG_HIGH = "observability_backlog_high"
    CIRCUIT_OPEN = "circuit_open"
    CIRCUIT_HALF_OPEN = "circuit_half_open"
    PAYLOAD_COPY_SHUTDOWN_INCOMPLETE = "payload_copy_shutdown_incomplete"
    OBSERVABILITY_SHUTDOWN_INCOMPLETE = "observability_shutdown_incomplete"
    OBSERVABILITY_WORKER_STOPPED = "observability_worker_stopped"
    QUEUE_TIMEOUTS_INCREASED = "queue_timeouts_increased"
    SOURCE_TIMEOUTS_INCREASED = "source_timeouts_increased"
    SOURCE_TRANSPORT_TIMEOUT_VIOLATIONS_INCREASED = "source_transport_timeout_violations_increased"
    DEADLINES_EXCEEDED_INCREASED = "deadlines_exceeded_increased"
    REVALIDATION_FAILURES_INCREASED = "revalidation_failures_increased"
    PAYLOAD_COPY_FAILURES_INCREASED = "payload_copy_failures_increased"
    PAYLOAD_COPY_TIMEOUTS_INCREASED = "payload_copy_timeouts_increased"
    PAYLOAD_COPY_SHUTDOWN_TIMEOUTS_INCREASED = "payload_copy_shutdown_timeouts_increased"
    OBSERVABILITY_DROPS_INCREASED = "observability_drops_increased"
    OBSERVABILITY_SHUTDOWN_TIMEOUTS_INCREASED = "observability_shutdown_timeouts_increased"
    OBSERVABILITY_FAILURES_INCREASED = "observability_failures_increased"
    UNSAFE_BLOCKING_SOURCE = "unsafe_blocking_source"


_Reason = BuilderHealthReason
_Severity = BuilderHealthSeverity

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

Measure = bool | int | float


def _check_measure(name: str, value: object, *, optional: bool) -> Measure | None:
    if value is None and optional:
        return None
    if not isinstance(value, (bool, int, float)):
        accepted = "a bool, an int, a float or None" if optional else "a bool, an int or a float"
        raise TypeError(f"{name} must be {accepted}, got {type(value).__name__}")
    return value


@final
@dataclass(frozen=True, slots=True)
class BuilderHealthFinding:
    """One thing an assessment found: why, how bad, and the measurement behind it.

    Args:
        reason: a :class:`BuilderHealthReason` (or its string value).
        severity: ``degraded`` or ``critical`` (a :class:`BuilderHealthSeverity` or its value).
        metric: the measured quantity, e.g. ``"waiting_for_capacity"`` (not blank).
        observed: the measured value (a bool, int or float).
        threshold: the limit it reached (``None`` when there is none).
        component: the part concerned (a capacity limit, a buffer, source names), or ``""``.

    Raises:
        TypeError: a field has the wrong type. ValueError: an unknown reason or severity, a
            blank metric.
    """

    reason: BuilderHealthReason
    severity: BuilderHealthSeverity
    metric: str
    observed: Measure
    threshold: Measure | None = None
    component: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", check_enum("reason", self.reason, _Reason))
        object.__setattr__(self, "severity", check_enum("severity", self.severity, _Severity))
        check_str("metric", self.metric)
        _check_measure("observed", self.observed, optional=False)
        _check_measure("threshold", self.threshold, optional=True)
        check_str("component", self.component, allow_empty=True)

    def to_dict(self) -> dict[str, Any]:
        """``{"reason", "severity", "metric", "observed", "threshold", "component"}``, with the
        enums as their string values (JSON-safe)."""
        return {
            "reason": self.reason.value,
            "severity": self.severity.value,
            "metric": self.metric,
            "observed": to_wire(self.observed),
            "threshold": to_wire(self.threshold),
            "component": self.component,
        }


@final
@dataclass(frozen=True, slots=True)
class BuilderHealthAssessment:
    """The verdict on one health snapshot: its severity and the findings behind it.

    Args:
        severity: the overall severity (a :class:`BuilderHealthSeverity` or its value).
        findings: the findings, in rule order (any iterable; stored as a tuple).
        baseline_used: True when counters were compared with a previous snapshot.

    Raises:
        TypeError: a finding is not a :class:`BuilderHealthFinding`, or a field has the wrong
            type. ValueError: an unknown severity.
    """

    severity: BuilderHealthSeverity
    findings: tuple[BuilderHealthFinding, ...] = ()
    baseline_used: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "severity", check_enum("severity", self.severity, _Severity))
        given: object = self.findings
        if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
            raise TypeError("findings must be an iterable of BuilderHealthFinding")
        findings = tuple(given)
        for finding in findings:
            if not isinstance(finding, BuilderHealthFinding):
                raise TypeError(
                    f"findings must hold BuilderHealthFinding, got {type(finding).__name__}"
                )
        object.__setattr__(self, "findings", findings)
        check_bool("baseline_used", self.baseline_used)

    @property
    def reasons(self) -> tuple[BuilderHealthReason, ...]:
        """The distinct reasons, in finding order."""
        return tuple(dict.fromkeys(finding.reason for finding in self.findings))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe wire form (schema ``"coalestra.builder-health-assessment"``, v1)."""
        return {
            "schema": BUILDER_HEALTH_ASSESSMENT_SCHEMA,
            "schema_version": BUILDER_HEALTH_ASSESSMENT_SCHEMA_VERSION,
            "severity": self.severity.value,
            "baseline_used": self.baseline_used,
            "reasons": [reason.value for reason in self.reasons],
            "findings": [finding.to_dict() for finding in self.findings],
        }


def _check_ratio(name: str, value: object, *, at_most_one: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    ratio = float(value)
    if not math.isfinite(ratio) or ratio <= 0.0 or (at_most_one and ratio > 1.0):
        accepted = "in (0, 1]" if at_most_one else "finite and > 0"
        raise ValueError(f"{name} must be {accepted}, got {value!r}")
    return ratio


def _check_order(degraded: str, degraded_value: float, critical: str, value: float) -> None:
    if value < degraded_value:
        raise ValueError(f"{critical} must be >= {degraded}, got {value!r} < {degraded_value!r}")


@final
@dataclass(frozen=True, slots=True)
class BuilderHealthAssessmentPolicy:
    """The thresholds :meth:`BuilderHealth.assess` applies.

    Args:
        capacity_waiting_degraded: source-capacity waiters that make a finding (int >= 1).
        capacity_waiting_critical_ratio: the largest ``waiting / limit`` of one capacity limit
            that makes it critical (finite, > 0; above 1 allowed).
        copy_waiting_degraded / copy_waiting_critical_ratio: the same for payload copies.
        submission_backlog_degraded_ratio / submission_backlog_critical_ratio: the sync
            facade's ``pending / max`` submissions for a degraded / critical finding (in (0, 1],
            critical >= degraded).
        observability_backlog_degraded_ratio / observability_backlog_critical_ratio: the same
            for the fullest observability buffer.
        counter_delta_degraded / counter_delta_critical: how much a counter must have grown
            since the previous snapshot (ints >= 1, critical >= degraded).

    Raises:
        TypeError: a count is not an int (bools too) or a ratio not a number.
        ValueError: a value out of the ranges above.
    """

    capacity_waiting_degraded: int = 1
    capacity_waiting_critical_ratio: float = 1.0
    copy_waiting_degraded: int = 1
    copy_waiting_critical_ratio: float = 1.0
    submission_backlog_degraded_ratio: float = 0.5
    submission_backlog_critical_ratio: float = 0.9
    observability_backlog_degraded_ratio: float = 0.5
    observability_backlog_critical_ratio: float = 0.9
    counter_delta_degraded: int = 1
    counter_delta_critical: int = 5

    def __post_init__(self) -> None:
        for name in (
            "capacity_waiting_degraded",
            "copy_waiting_degraded",
            "counter_delta_degraded",
            "counter_delta_critical",
        ):
            check_int(name, getattr(self, name), minimum=1)
        _check_order(
            "counter_delta_degraded",
            self.counter_delta_degraded,
            "counter_delta_critical",
            self.counter_delta_critical,
        )
        for name in ("capacity_waiting_critical_ratio", "copy_waiting_critical_ratio"):
            object.__setattr__(
                self, name, _check_ratio(name, getattr(self, name), at_most_one=False)
            )
        for prefix in ("submission_backlog", "observability_backlog"):
            degraded, critical = f"{prefix}_degraded_ratio", f"{prefix}_critical_ratio"
            low = _check_ratio(degraded, getattr(self, degraded), at_most_one=True)
            high = _check_ratio(critical, getattr(self, critical), at_most_one=True)
            _check_order(degraded, low, critical, high)
            object.__setattr__(self, degraded, low)
            object.__setattr__(self, critical, high)


DEFAULT_ASSESSMENT_POLICY: Final = BuilderHealthAssessmentPolicy()


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


def _unsafe_sources(health: BuilderHealth) -> BuilderHealthFinding | None:
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


def _circuits(health: BuilderHealth, state: str) -> int:
    return sum(1 for circuit in health.circuits.values() if _state(circuit) == state)


def _state(circuit: object) -> object:
    state = _part(circuit, "state")
    return state.value if isinstance(state, Enum) else state


def _circuit_findings(health: BuilderHealth) -> list[BuilderHealthFinding]:
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
    health: BuilderHealth, previous: BuilderHealth, policy: BuilderHealthAssessmentPolicy
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


def _state_findings(
    health: BuilderHealth, policy: BuilderHealthAssessmentPolicy
) -> list[BuilderHealthFinding | None]:
    """Rules 1 to 9: what the snapshot itself shows, in the documented order."""
    pending, limit = health.pending_submissions, health.max_pending_submissions
    buffers = health.observability_buffers
    fullest = _largest_ratio(buffers, "pending", "max_pending")
    stopped = [
        str(name)
        for name, stats in buffers.items()
        if _part(stats, "worker_alive") is False and _part(stats, "closed") is False
    ]
    return [
        _flag(_Reason.BUILDER_CLOSED, "closed", health.closed),
        _unsafe_sources(health),
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
    health: BuilderHealth,
    previous: BuilderHealth | None,
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
