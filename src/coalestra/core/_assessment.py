"""What assessing a :class:`~coalestra.BuilderHealth` gives: severities, reasons, findings, the
policy of thresholds. The rules themselves are in :mod:`._assessing`.

The assessment is a pure function of one health snapshot (and, for counter changes, an earlier
one): it reads no clock and calls nothing, so the same snapshots always give the same
assessment. The rules and their order are the 0.6 API's (``docs/health.md`` lists them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, final

from ._validation import check_bool, check_enum, check_int, check_str, tuple_of
from ._wire import to_wire

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
        findings = tuple_of("findings", self.findings, BuilderHealthFinding, holds="hold")
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
