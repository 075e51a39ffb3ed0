"""The builder's aggregated, source-free health view, its wire format and its assessment."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, final

from ._assessing import assess_health
from ._assessment import (
    DEFAULT_ASSESSMENT_POLICY,
    BuilderHealthAssessment,
    BuilderHealthAssessmentPolicy,
)
from ._validation import EMPTY_MAPPING, check_bool, check_int, check_optional_int, frozen_mapping
from ._wire import to_wire

BUILDER_HEALTH_SCHEMA: Final = "coalestra.builder-health"
"""The ``schema`` of :meth:`BuilderHealth.to_dict`."""
BUILDER_HEALTH_SCHEMA_VERSION: Final = 1
"""The ``schema_version`` of :meth:`BuilderHealth.to_dict`."""


def _empty() -> Mapping[Any, Any]:
    return EMPTY_MAPPING


_MAPPINGS: Final = (
    "capacity",
    "circuits",
    "source_timeout_guarantees",
    "source_transport_timeout_violations",
    "payload_copy_components",
    "observability_buffers",
)
_FLAGS: Final = ("closed", "payload_copy_shutdown_incomplete", "observability_shutdown_incomplete")


@final
@dataclass(frozen=True, slots=True)
class BuilderHealth:
    """A cheap, immutable view of a builder's state; gathering it never calls a source.

    It holds aggregates only (no subjects, qualifiers or payloads). Counters are process-local
    and cumulative since the builder was made. Mapping fields are read-only.

    The fields of the 0.6 line follow ``max_pending_submissions`` (so positional construction
    written for 0.5.7 keeps working); :meth:`to_dict` lists every field in the 0.6 order, where
    the two submission fields come after the source-timeout block. Fields of features a builder
    does not use keep their defaults (0, False, an empty mapping).
    """

    closed: bool
    background_refreshes: int
    singleflight_in_flight: int
    source_support_cache_entries: int
    capacity: Mapping[str, Any] = field(default_factory=_empty)
    cache: Any | None = None
    circuits: Mapping[Any, Any] = field(default_factory=_empty)
    active_dispatch_workers: int = 0
    waiting_for_capacity: int = 0
    queue_timeout_count: int = 0
    source_timeout_count: int = 0
    deadline_exceeded_count: int = 0
    revalidation_attempt_count: int = 0
    revalidation_failure_count: int = 0
    pending_submissions: int = 0
    max_pending_submissions: int | None = None
    # -- 0.6: blocking-source timeout declarations (source name -> SourceTimeoutGuarantee)
    source_timeout_guarantees: Mapping[str, Any] = field(default_factory=_empty)
    blocking_source_count: int = 0
    protected_blocking_source_count: int = 0
    unsafe_blocking_source_count: int = 0
    undeclared_source_timeout_count: int = 0
    source_transport_timeout_violation_count: int = 0
    source_transport_timeout_violations: Mapping[str, int] = field(default_factory=_empty)
    # -- 0.6: payload copies (component name -> PayloadCopyHealth)
    payload_copy_components: Mapping[str, Any] = field(default_factory=_empty)
    active_payload_copies: int = 0
    waiting_for_copy_capacity: int = 0
    payload_copy_started_count: int = 0
    payload_copy_completed_count: int = 0
    payload_copy_failure_count: int = 0
    payload_copy_timeout_count: int = 0
    payload_copy_capacity_timeout_count: int = 0
    payload_copy_shutdown_incomplete: bool = False
    payload_copy_shutdown_timeout_count: int = 0
    payload_copy_active_at_last_shutdown_timeout: int = 0
    # -- 0.6: observability buffers ("events" / "metrics" -> BufferedSinkStats)
    observability_buffers: Mapping[str, Any] = field(default_factory=_empty)
    observability_pending: int = 0
    observability_peak_pending: int = 0
    observability_dropped_count: int = 0
    observability_failure_count: int = 0
    observability_shutdown_incomplete: bool = False
    observability_shutdown_timeout_count: int = 0

    def __post_init__(self) -> None:
        for name in _FLAGS:
            check_bool(name, getattr(self, name))
        for name in _COUNTS:
            check_int(name, getattr(self, name), minimum=0)
        check_optional_int("max_pending_submissions", self.max_pending_submissions, minimum=1)
        for name in _MAPPINGS:
            object.__setattr__(self, name, frozen_mapping(name, getattr(self, name)))

    def assess(
        self,
        *,
        previous: BuilderHealth | None = None,
        policy: BuilderHealthAssessmentPolicy | None = None,
    ) -> BuilderHealthAssessment:
        """Judge this snapshot: severity, reasons and findings (see ``docs/health.md``).

        Args:
            previous: an earlier snapshot of the same builder; counters that grew since then
                become findings (``baseline_used=True``). ``None``: counters are not judged.
            policy: the thresholds (default: ``BuilderHealthAssessmentPolicy()``).

        Raises:
            TypeError: ``previous`` is not a BuilderHealth, or ``policy`` not a
                BuilderHealthAssessmentPolicy.
        """
        return assess_health(self, _check_previous(previous), _check_policy(policy))

    def to_dict(
        self,
        *,
        include_assessment: bool = True,
        previous: BuilderHealth | None = None,
        assessment_policy: BuilderHealthAssessmentPolicy | None = None,
    ) -> dict[str, Any]:
        """The JSON-safe wire form (schema ``"coalestra.builder-health"``, version 1).

        Keys: ``schema``, ``schema_version``, every field by name (in the 0.6 order), then
        ``assessment``: :meth:`assess` ``(previous=..., policy=...)`` as a dict, or ``None``
        with ``include_assessment=False``. Nested values are normalized so the result passes
        ``json.dumps(..., allow_nan=False)`` (rules in ``docs/health.md``).

        Raises:
            TypeError: ``include_assessment`` is not a bool, ``previous`` not a BuilderHealth,
                ``assessment_policy`` not a BuilderHealthAssessmentPolicy.
        """
        check_bool("include_assessment", include_assessment)
        baseline = _check_previous(previous)
        policy = _check_policy(assessment_policy, "assessment_policy")
        wire: dict[str, Any] = {
            "schema": BUILDER_HEALTH_SCHEMA,
            "schema_version": BUILDER_HEALTH_SCHEMA_VERSION,
        }
        for name in _WIRE_ORDER:
            wire[name] = to_wire(getattr(self, name))
        wire["assessment"] = (
            assess_health(self, baseline, policy).to_dict() if include_assessment else None
        )
        return wire


def _check_previous(previous: object) -> BuilderHealth | None:
    if previous is not None and not isinstance(previous, BuilderHealth):
        raise TypeError(f"previous must be a BuilderHealth or None, got {type(previous).__name__}")
    return previous


def _check_policy(policy: object, name: str = "policy") -> BuilderHealthAssessmentPolicy:
    if policy is None:
        return DEFAULT_ASSESSMENT_POLICY
    if not isinstance(policy, BuilderHealthAssessmentPolicy):
        raise TypeError(
            f"{name} must be a BuilderHealthAssessmentPolicy or None, got {type(policy).__name__}"
        )
    return policy


def _wire_order() -> tuple[str, ...]:
    """Every field, with the two submission fields where 0.6 has them: after the source block,
    before the payload-copy block. Read from the dataclass, so a new field is never missed."""
    names = [item.name for item in dataclasses.fields(BuilderHealth)]
    moved = ("pending_submissions", "max_pending_submissions")
    rest = [name for name in names if name not in moved]
    at = rest.index("payload_copy_components")
    return (*rest[:at], *moved, *rest[at:])


_WIRE_ORDER: Final = _wire_order()
_COUNTS: Final = tuple(
    item.name
    for item in dataclasses.fields(BuilderHealth)
    if item.type in ("int", int)  # a string under postponed evaluation
)
