"""Section 2 of the 0.6 API: BuilderHealth's new fields, its wire format (``to_dict``) and its
assessment (``assess``: severities, reasons, findings, counter changes, the policy), async and
sync."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from coalestra import (
    BUILDER_HEALTH_ASSESSMENT_SCHEMA,
    BUILDER_HEALTH_ASSESSMENT_SCHEMA_VERSION,
    BUILDER_HEALTH_SCHEMA,
    BUILDER_HEALTH_SCHEMA_VERSION,
    BufferedSinkStats,
    BuilderHealth,
    BuilderHealthAssessment,
    BuilderHealthAssessmentPolicy,
    BuilderHealthFinding,
    BuilderHealthReason,
    BuilderHealthSeverity,
    CacheStats,
    CallableSource,
    CapacitySnapshot,
    CircuitSnapshot,
    CircuitState,
    ResourceKey,
    SnapshotBuilder,
    SyncSnapshotBuilder,
)
from coalestra.testing import VirtualClock

R = BuilderHealthReason
S = BuilderHealthSeverity
KEY = ResourceKey("md", "quote", "A")

FIELDS_0_5_7 = [
    "closed",
    "background_refreshes",
    "singleflight_in_flight",
    "source_support_cache_entries",
    "capacity",
    "cache",
    "circuits",
    "active_dispatch_workers",
    "waiting_for_capacity",
    "queue_timeout_count",
    "source_timeout_count",
    "deadline_exceeded_count",
    "revalidation_attempt_count",
    "revalidation_failure_count",
    "pending_submissions",
    "max_pending_submissions",
]
# The 0.6 order (public-api-0.6.md section 2): what to_dict() lists.
WIRE_ORDER_0_6 = [
    *FIELDS_0_5_7[:14],
    "source_timeout_guarantees",
    "blocking_source_count",
    "protected_blocking_source_count",
    "unsafe_blocking_source_count",
    "undeclared_source_timeout_count",
    "source_transport_timeout_violation_count",
    "source_transport_timeout_violations",
    "pending_submissions",
    "max_pending_submissions",
    "payload_copy_components",
    "active_payload_copies",
    "waiting_for_copy_capacity",
    "payload_copy_started_count",
    "payload_copy_completed_count",
    "payload_copy_failure_count",
    "payload_copy_timeout_count",
    "payload_copy_capacity_timeout_count",
    "payload_copy_shutdown_incomplete",
    "payload_copy_shutdown_timeout_count",
    "payload_copy_active_at_last_shutdown_timeout",
    "observability_buffers",
    "observability_pending",
    "observability_peak_pending",
    "observability_dropped_count",
    "observability_failure_count",
    "observability_shutdown_incomplete",
    "observability_shutdown_timeout_count",
]
NEW_FIELDS = [name for name in WIRE_ORDER_0_6 if name not in FIELDS_0_5_7]
MAPPING_FIELDS = [
    "source_timeout_guarantees",
    "source_transport_timeout_violations",
    "payload_copy_components",
    "observability_buffers",
]
FLAG_FIELDS = ["payload_copy_shutdown_incomplete", "observability_shutdown_incomplete"]
COUNT_FIELDS = [name for name in NEW_FIELDS if name not in MAPPING_FIELDS + FLAG_FIELDS]
COUNTERS = [
    ("queue_timeout_count", R.QUEUE_TIMEOUTS_INCREASED),
    ("source_timeout_count", R.SOURCE_TIMEOUTS_INCREASED),
    ("source_transport_timeout_violation_count", R.SOURCE_TRANSPORT_TIMEOUT_VIOLATIONS_INCREASED),
    ("deadline_exceeded_count", R.DEADLINES_EXCEEDED_INCREASED),
    ("revalidation_failure_count", R.REVALIDATION_FAILURES_INCREASED),
    ("payload_copy_failure_count", R.PAYLOAD_COPY_FAILURES_INCREASED),
    ("payload_copy_timeout_count", R.PAYLOAD_COPY_TIMEOUTS_INCREASED),
    ("payload_copy_shutdown_timeout_count", R.PAYLOAD_COPY_SHUTDOWN_TIMEOUTS_INCREASED),
    ("observability_dropped_count", R.OBSERVABILITY_DROPS_INCREASED),
    ("observability_shutdown_timeout_count", R.OBSERVABILITY_SHUTDOWN_TIMEOUTS_INCREASED),
    ("observability_failure_count", R.OBSERVABILITY_FAILURES_INCREASED),
]


def health(**fields: Any) -> BuilderHealth:
    base: dict[str, Any] = {
        "closed": False,
        "background_refreshes": 0,
        "singleflight_in_flight": 0,
        "source_support_cache_entries": 0,
    }
    return BuilderHealth(**{**base, **fields})


def strict_json(value: Any) -> Any:
    """The value survives a strict JSON round trip unchanged."""
    return json.loads(json.dumps(value, allow_nan=False))


@dataclasses.dataclass(frozen=True)
class CopyStats:
    """Stands in for the PayloadCopyHealth fields the copy rules read."""

    waiting_for_capacity: int
    max_concurrency: int


@dataclasses.dataclass(frozen=True)
class Guarantee:
    """Stands in for the SourceTimeoutGuarantee fields the unsafe-source rule reads."""

    blocking_io: bool
    protected: bool


def buffer(pending: int, max_pending: int, *, alive: bool = True, closed: bool = False) -> Any:
    return BufferedSinkStats(
        enqueued=pending,
        delivered=0,
        dropped=0,
        failures=0,
        pending=pending,
        closed=closed,
        max_pending=max_pending,
        peak_pending=pending,
        worker_alive=alive,
    )


# --- fields ---------------------------------------------------------------------------------


def test_0_5_7_fields_keep_their_order_and_new_fields_follow_in_0_6_order() -> None:
    names = [field.name for field in dataclasses.fields(BuilderHealth)]
    assert names[:16] == FIELDS_0_5_7
    assert names[16:] == NEW_FIELDS


def test_positional_construction_written_for_0_5_7_still_works() -> None:
    built = BuilderHealth(False, 1, 2, 3, {}, None, {}, 4, 5, 6, 7, 8, 9, 10, 11, 12)
    assert (built.pending_submissions, built.max_pending_submissions) == (11, 12)
    assert built.observability_pending == 0


def test_new_fields_default_to_zero_false_or_an_empty_mapping() -> None:
    built = health()
    for name in COUNT_FIELDS:
        assert getattr(built, name) == 0, name
    for name in FLAG_FIELDS:
        assert getattr(built, name) is False, name
    for name in MAPPING_FIELDS:
        assert dict(getattr(built, name)) == {}, name


@pytest.mark.parametrize("name", [*MAPPING_FIELDS, "capacity", "circuits"])
def test_mapping_fields_are_read_only_copies(name: str) -> None:
    given = {"x": 1}
    built = health(**{name: given})
    given["y"] = 2
    assert dict(getattr(built, name)) == {"x": 1}
    with pytest.raises(TypeError):
        getattr(built, name)["z"] = 3


@pytest.mark.parametrize("name", COUNT_FIELDS)
def test_counts_must_be_ints_of_at_least_zero(name: str) -> None:
    with pytest.raises(TypeError, match=name):
        health(**{name: 1.5})
    with pytest.raises(TypeError, match=name):
        health(**{name: True})
    with pytest.raises(ValueError, match=name):
        health(**{name: -1})


@pytest.mark.parametrize("name", FLAG_FIELDS)
def test_flags_must_be_bools(name: str) -> None:
    with pytest.raises(TypeError, match=name):
        health(**{name: 1})


@pytest.mark.parametrize("name", MAPPING_FIELDS)
def test_mapping_fields_must_be_mappings(name: str) -> None:
    with pytest.raises(TypeError, match=name):
        health(**{name: [1, 2]})


def test_constants() -> None:
    assert BUILDER_HEALTH_SCHEMA == "coalestra.builder-health"
    assert BUILDER_HEALTH_SCHEMA_VERSION == 1
    assert BUILDER_HEALTH_ASSESSMENT_SCHEMA == "coalestra.builder-health-assessment"
    assert BUILDER_HEALTH_ASSESSMENT_SCHEMA_VERSION == 1


def test_enums_values_and_order() -> None:
    assert [(m.name, m.value) for m in BuilderHealthSeverity] == [
        ("HEALTHY", "healthy"),
        ("DEGRADED", "degraded"),
        ("CRITICAL", "critical"),
    ]
    values = [
        "builder_closed",
        "source_capacity_waiting",
        "payload_copy_capacity_waiting",
        "submission_backlog_high",
        "observability_backlog_high",
        "circuit_open",
        "circuit_half_open",
        "payload_copy_shutdown_incomplete",
        "observability_shutdown_incomplete",
        "observability_worker_stopped",
        "queue_timeouts_increased",
        "source_timeouts_increased",
        "source_transport_timeout_violations_increased",
        "deadlines_exceeded_increased",
        "revalidation_failures_increased",
        "payload_copy_failures_increased",
        "payload_copy_timeouts_increased",
        "payload_copy_shutdown_timeouts_increased",
        "observability_drops_increased",
        "observability_shutdown_timeouts_increased",
        "observability_failures_increased",
        "unsafe_blocking_source",
    ]
    assert [m.value for m in BuilderHealthReason] == values
    assert all(m.name == m.value.upper() for m in BuilderHealthReason)
    assert isinstance(R.CIRCUIT_OPEN, str)


# --- to_dict: the wire format ---------------------------------------------------------------


def test_to_dict_keys_schema_then_every_field_in_0_6_order_then_assessment() -> None:
    wire = health().to_dict()
    assert list(wire) == ["schema", "schema_version", *WIRE_ORDER_0_6, "assessment"]
    assert wire["schema"] == "coalestra.builder-health"
    assert wire["schema_version"] == 1
    assert wire["assessment"] == health().assess().to_dict()
    assert strict_json(wire) == wire


def test_to_dict_without_assessment() -> None:
    assert health(closed=True).to_dict(include_assessment=False)["assessment"] is None


def test_to_dict_passes_previous_and_policy_to_the_assessment() -> None:
    before, now = health(), health(queue_timeout_count=3)
    policy = BuilderHealthAssessmentPolicy(counter_delta_degraded=2, counter_delta_critical=3)
    wire = now.to_dict(previous=before, assessment_policy=policy)
    assert wire["assessment"] == now.assess(previous=before, policy=policy).to_dict()
    assert wire["assessment"]["baseline_used"] is True
    assert wire["assessment"]["findings"][0]["severity"] == "critical"


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"include_assessment": 1}, "include_assessment"),
        ({"include_assessment": None}, "include_assessment"),
        ({"previous": {}}, "previous"),
        ({"previous": "health"}, "previous"),
        ({"assessment_policy": {}}, "assessment_policy"),
    ],
)
def test_to_dict_rejects_bad_arguments(arguments: dict[str, Any], name: str) -> None:
    with pytest.raises(TypeError, match=name):
        health().to_dict(**arguments)


class Colour(enum.Enum):
    RED = "red"


class Opaque:
    pass


@dataclasses.dataclass
class Node:
    name: str
    children: list[Any]


def test_to_dict_normalizes_nested_values() -> None:
    node = Node("root", [])
    node.children.append(node)  # a cycle
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    built = health(
        capacity={
            "floats": (1.5, math.nan, math.inf, -math.inf),
            "enum": Colour.RED,
            "str_enum": CircuitState.OPEN,
            "set": {3, 1, 2},
            "frozenset": frozenset({"b", "a"}),
            "mixed_set": {1, "a"},
            "opaque": Opaque(),
            "node": node,
            "cyclic": cyclic,
            "none": None,
            "bytes": b"x",
        },
        circuits={("rest", "md"): {"b": 1, 2: "two"}, "a": None},
        cache=CacheStats(1, None, 2, 3, 4, 5, 6, 7, 8, 9),
    )
    wire = built.to_dict()
    capacity = wire["capacity"]
    assert list(capacity) == sorted(capacity)
    assert capacity["floats"] == [1.5, "nan", "infinity", "-infinity"]
    assert capacity["enum"] == "red"
    assert capacity["str_enum"] == "open"
    assert capacity["set"] == [1, 2, 3]
    assert capacity["frozenset"] == ["a", "b"]
    assert sorted(map(str, capacity["mixed_set"])) == ["1", "a"]
    assert capacity["opaque"] == {"type": f"{__name__}.Opaque"}
    assert capacity["node"] == {
        "name": "root",
        "children": [{"type": f"{__name__}.Node", "cycle": True}],
    }
    assert capacity["cyclic"] == [1, {"type": "builtins.list", "cycle": True}]
    assert capacity["none"] is None
    assert capacity["bytes"] == {"type": "builtins.bytes"}
    assert list(wire["circuits"]) == ["('rest', 'md')", "a"]
    assert wire["circuits"]["('rest', 'md')"] == {"2": "two", "b": 1}
    assert wire["cache"] == {
        "size": 1,
        "max_entries": None,
        "hits": 2,
        "misses": 3,
        "fresh_hits": 4,
        "stale_hits": 5,
        "sets": 6,
        "invalidations": 7,
        "evictions": 8,
        "expirations": 9,
    }
    assert strict_json(wire) == wire


def test_to_dict_of_a_custom_cache_stats_object_names_its_type() -> None:
    wire = health(cache=Opaque()).to_dict()
    assert wire["cache"] == {"type": f"{__name__}.Opaque"}


def test_to_dict_of_observability_buffers_lists_the_buffered_sink_stats_fields() -> None:
    stats = buffer(2, 10)
    wire = health(observability_buffers={"events": stats}).to_dict()
    assert wire["observability_buffers"]["events"] == {
        field.name: getattr(stats, field.name) for field in dataclasses.fields(stats)
    }


def source(fetch: Any = None) -> CallableSource[Any]:
    async def fetcher(key: ResourceKey, ctx: Any) -> str:
        return "v"

    return CallableSource(
        name="feed", priority=1, supports=lambda key: True, fetcher=fetch or fetcher
    )


async def test_to_dict_of_a_live_builder(clock: VirtualClock) -> None:
    async with SnapshotBuilder([source()], clock=clock, source_concurrency={"feed": 2}) as builder:
        await builder.build([KEY])
        wire = (await builder.health_snapshot()).to_dict()
    assert wire["capacity"] == {
        "__global__": {"limit": 8, "in_use": 0, "waiting": 0},
        "feed": {"limit": 2, "in_use": 0, "waiting": 0},
    }
    assert set(wire["cache"]) == {field.name for field in dataclasses.fields(CacheStats)}
    assert wire["cache"]["sets"] == 1
    assert wire["closed"] is False
    assert wire["assessment"]["severity"] == "healthy"
    assert strict_json(wire) == wire


# --- assess: the rules ----------------------------------------------------------------------


def only(assessment: BuilderHealthAssessment) -> BuilderHealthFinding:
    (finding,) = assessment.findings
    return finding


def as_tuple(finding: BuilderHealthFinding) -> tuple[Any, ...]:
    return (
        finding.reason,
        finding.severity,
        finding.metric,
        finding.observed,
        finding.threshold,
        finding.component,
    )


def test_a_quiet_builder_is_healthy() -> None:
    assessment = health().assess()
    assert assessment == BuilderHealthAssessment(S.HEALTHY, (), False)
    assert assessment.reasons == ()


def test_rule_1_closed_is_critical() -> None:
    finding = only(health(closed=True).assess())
    assert as_tuple(finding) == (R.BUILDER_CLOSED, S.CRITICAL, "closed", True, False, "")


def test_rule_2_unsafe_blocking_sources_are_critical_and_named() -> None:
    guarantees = {
        "zeta": Guarantee(blocking_io=True, protected=False),
        "alpha": Guarantee(blocking_io=True, protected=False),
        "safe": Guarantee(blocking_io=True, protected=True),
        "async": Guarantee(blocking_io=False, protected=False),
    }
    built = health(unsafe_blocking_source_count=2, source_timeout_guarantees=guarantees)
    assert as_tuple(only(built.assess())) == (
        R.UNSAFE_BLOCKING_SOURCE,
        S.CRITICAL,
        "unsafe_blocking_source_count",
        2,
        0,
        "alpha,zeta",
    )
    assert health(source_timeout_guarantees=guarantees).assess().findings == ()


def capacity(**entries: tuple[int, int]) -> dict[str, CapacitySnapshot]:
    return {
        name: CapacitySnapshot(limit=limit, in_use=limit, waiting=waiting)
        for name, (limit, waiting) in entries.items()
    }


def test_rule_3_capacity_waiters_are_degraded_below_the_critical_ratio() -> None:
    built = health(waiting_for_capacity=3, capacity=capacity(__global__=(8, 1), feed=(4, 2)))
    assert as_tuple(only(built.assess())) == (
        R.SOURCE_CAPACITY_WAITING,
        S.DEGRADED,
        "waiting_for_capacity",
        3,
        1,
        "feed",
    )


def test_rule_3_capacity_waiters_at_the_critical_ratio_are_critical() -> None:
    built = health(waiting_for_capacity=5, capacity=capacity(__global__=(8, 1), feed=(4, 4)))
    assert as_tuple(only(built.assess())) == (
        R.SOURCE_CAPACITY_WAITING,
        S.CRITICAL,
        "maximum_waiting_to_limit_ratio",
        1.0,
        1.0,
        "feed",
    )


def test_rule_3_respects_the_policy_thresholds() -> None:
    built = health(waiting_for_capacity=2, capacity=capacity(feed=(4, 2)))
    assert built.assess(policy=BuilderHealthAssessmentPolicy(capacity_waiting_degraded=3)) == (
        BuilderHealthAssessment(S.HEALTHY)
    )
    critical = built.assess(
        policy=BuilderHealthAssessmentPolicy(capacity_waiting_critical_ratio=0.5)
    )
    assert as_tuple(only(critical)) == (
        R.SOURCE_CAPACITY_WAITING,
        S.CRITICAL,
        "maximum_waiting_to_limit_ratio",
        0.5,
        0.5,
        "feed",
    )


def test_rule_4_copy_waiters_degraded_and_critical() -> None:
    components = {
        "builder": CopyStats(waiting_for_capacity=1, max_concurrency=4),
        "cache": CopyStats(waiting_for_capacity=2, max_concurrency=4),
    }
    degraded = health(waiting_for_copy_capacity=3, payload_copy_components=components)
    assert as_tuple(only(degraded.assess())) == (
        R.PAYLOAD_COPY_CAPACITY_WAITING,
        S.DEGRADED,
        "waiting_for_copy_capacity",
        3,
        1,
        "cache",
    )
    components["cache"] = CopyStats(waiting_for_capacity=8, max_concurrency=4)
    critical = health(waiting_for_copy_capacity=9, payload_copy_components=components)
    assert as_tuple(only(critical.assess())) == (
        R.PAYLOAD_COPY_CAPACITY_WAITING,
        S.CRITICAL,
        "maximum_waiting_to_limit_ratio",
        2.0,
        1.0,
        "cache",
    )
    assert health(waiting_for_copy_capacity=0).assess().findings == ()


@pytest.mark.parametrize(
    ("pending", "limit", "expected"),
    [
        (4, 10, None),
        (5, 10, (S.DEGRADED, 0.5, 0.5)),
        (8, 10, (S.DEGRADED, 0.8, 0.5)),
        (9, 10, (S.CRITICAL, 0.9, 0.9)),
        (10, 10, (S.CRITICAL, 1.0, 0.9)),
        (100, None, None),  # no maximum: ratio 0
    ],
)
def test_rule_5_submission_backlog(pending: int, limit: int | None, expected: Any) -> None:
    assessment = health(pending_submissions=pending, max_pending_submissions=limit).assess()
    if expected is None:
        assert assessment.findings == ()
        return
    severity, observed, threshold = expected
    assert as_tuple(only(assessment)) == (
        R.SUBMISSION_BACKLOG_HIGH,
        severity,
        "submission_backlog_ratio",
        observed,
        threshold,
        "",
    )


def test_rule_6_the_fullest_observability_buffer() -> None:
    degraded = health(observability_buffers={"events": buffer(2, 10), "metrics": buffer(6, 10)})
    assert as_tuple(only(degraded.assess())) == (
        R.OBSERVABILITY_BACKLOG_HIGH,
        S.DEGRADED,
        "observability_backlog_ratio",
        0.6,
        0.5,
        "metrics",
    )
    critical = health(observability_buffers={"events": buffer(10, 10)})
    assert as_tuple(only(critical.assess())) == (
        R.OBSERVABILITY_BACKLOG_HIGH,
        S.CRITICAL,
        "observability_backlog_ratio",
        1.0,
        0.9,
        "events",
    )
    assert health(observability_buffers={"events": buffer(4, 10)}).assess().findings == ()


def test_rule_7_a_stopped_worker_of_an_open_buffer_is_critical() -> None:
    buffers = {
        "events": buffer(0, 10, alive=False),
        "metrics": buffer(0, 10, alive=False, closed=True),  # closed: stopping is expected
    }
    assert as_tuple(only(health(observability_buffers=buffers).assess())) == (
        R.OBSERVABILITY_WORKER_STOPPED,
        S.CRITICAL,
        "stopped_observability_workers",
        1,
        0,
        "events",
    )


def circuit(state: CircuitState) -> CircuitSnapshot:
    return CircuitSnapshot(state=state, failures=3, opened_at=1.0, half_open_probe_active=False)


def test_rule_8_open_and_half_open_circuits_are_degraded() -> None:
    circuits = {
        "a": circuit(CircuitState.OPEN),
        ("b", "x"): circuit(CircuitState.OPEN),
        "c": circuit(CircuitState.HALF_OPEN),
        "d": circuit(CircuitState.CLOSED),
    }
    assessment = health(circuits=circuits).assess()
    assert [as_tuple(finding) for finding in assessment.findings] == [
        (R.CIRCUIT_OPEN, S.DEGRADED, "open_circuits", 2, 0, ""),
        (R.CIRCUIT_HALF_OPEN, S.DEGRADED, "half_open_circuits", 1, 0, ""),
    ]
    assert assessment.severity is S.DEGRADED


@pytest.mark.parametrize(
    ("flag", "reason"),
    [
        ("payload_copy_shutdown_incomplete", R.PAYLOAD_COPY_SHUTDOWN_INCOMPLETE),
        ("observability_shutdown_incomplete", R.OBSERVABILITY_SHUTDOWN_INCOMPLETE),
    ],
)
def test_rule_9_incomplete_shutdowns_are_critical(flag: str, reason: BuilderHealthReason) -> None:
    assert as_tuple(only(health(**{flag: True}).assess())) == (
        reason,
        S.CRITICAL,
        flag,
        True,
        False,
        "",
    )


@pytest.mark.parametrize(("counter", "reason"), COUNTERS)
def test_rule_10_counter_deltas(counter: str, reason: BuilderHealthReason) -> None:
    before = health(**{counter: 10})
    assert health(**{counter: 10}).assess(previous=before).findings == ()
    assert health(**{counter: 3}).assess(previous=before).findings == ()  # went down: ignored
    degraded = health(**{counter: 14}).assess(previous=before)
    assert as_tuple(only(degraded)) == (reason, S.DEGRADED, f"delta_{counter}", 4, 1, "")
    critical = health(**{counter: 15}).assess(previous=before)
    assert as_tuple(only(critical)) == (reason, S.CRITICAL, f"delta_{counter}", 5, 5, "")
    assert critical.baseline_used is True
    # Without a baseline, counters are not judged at all.
    assert health(**{counter: 15}).assess() == BuilderHealthAssessment(S.HEALTHY)


def test_rule_10_thresholds_come_from_the_policy() -> None:
    policy = BuilderHealthAssessmentPolicy(counter_delta_degraded=3, counter_delta_critical=3)
    before = health()
    assert health(source_timeout_count=2).assess(previous=before, policy=policy).findings == ()
    finding = only(health(source_timeout_count=3).assess(previous=before, policy=policy))
    assert (finding.severity, finding.threshold) == (S.CRITICAL, 3)


def test_findings_follow_the_rule_order_and_severity_is_the_worst() -> None:
    everything = health(
        closed=True,
        unsafe_blocking_source_count=1,
        waiting_for_capacity=1,
        capacity=capacity(feed=(4, 1)),
        waiting_for_copy_capacity=1,
        payload_copy_components={"builder": CopyStats(1, 4)},
        pending_submissions=5,
        max_pending_submissions=10,
        observability_buffers={"events": buffer(5, 10, alive=False)},
        circuits={"a": circuit(CircuitState.OPEN), "b": circuit(CircuitState.HALF_OPEN)},
        payload_copy_shutdown_incomplete=True,
        observability_shutdown_incomplete=True,
        **{counter: 1 for counter, _ in COUNTERS},
    )
    assessment = everything.assess(previous=health())
    assert assessment.reasons == (
        R.BUILDER_CLOSED,
        R.UNSAFE_BLOCKING_SOURCE,
        R.SOURCE_CAPACITY_WAITING,
        R.PAYLOAD_COPY_CAPACITY_WAITING,
        R.SUBMISSION_BACKLOG_HIGH,
        R.OBSERVABILITY_BACKLOG_HIGH,
        R.OBSERVABILITY_WORKER_STOPPED,
        R.CIRCUIT_OPEN,
        R.CIRCUIT_HALF_OPEN,
        R.PAYLOAD_COPY_SHUTDOWN_INCOMPLETE,
        R.OBSERVABILITY_SHUTDOWN_INCOMPLETE,
        *(reason for _, reason in COUNTERS),
    )
    assert assessment.severity is S.CRITICAL
    assert assessment.baseline_used is True


def test_degraded_findings_only_make_a_degraded_assessment() -> None:
    assessment = health(pending_submissions=5, max_pending_submissions=10).assess()
    assert assessment.severity is S.DEGRADED


def test_assess_is_pure() -> None:
    built = health(closed=True)
    assert built.assess() == built.assess()


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"previous": {}}, "previous"),
        ({"previous": 1}, "previous"),
        ({"policy": {}}, "policy"),
        ({"policy": "strict"}, "policy"),
    ],
)
def test_assess_rejects_bad_arguments(arguments: dict[str, Any], name: str) -> None:
    with pytest.raises(TypeError, match=name):
        health().assess(**arguments)


# --- findings and assessments ---------------------------------------------------------------


def test_finding_fields_defaults_and_to_dict() -> None:
    finding = BuilderHealthFinding(R.CIRCUIT_OPEN, S.DEGRADED, "open_circuits", 2)
    assert (finding.threshold, finding.component) == (None, "")
    assert finding.to_dict() == {
        "reason": "circuit_open",
        "severity": "degraded",
        "metric": "open_circuits",
        "observed": 2,
        "threshold": None,
        "component": "",
    }
    assert [field.name for field in dataclasses.fields(finding)] == [
        "reason",
        "severity",
        "metric",
        "observed",
        "threshold",
        "component",
    ]


def test_finding_accepts_enum_values_as_strings() -> None:
    finding = BuilderHealthFinding("circuit_open", "critical", "m", 1.5)  # type: ignore[arg-type]
    assert finding.reason is R.CIRCUIT_OPEN
    assert finding.severity is S.CRITICAL


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (("nope", S.DEGRADED, "m", 1), ValueError),
        ((R.CIRCUIT_OPEN, "bad", "m", 1), ValueError),
        ((R.CIRCUIT_OPEN, S.DEGRADED, "", 1), ValueError),
        ((R.CIRCUIT_OPEN, S.DEGRADED, 3, 1), TypeError),
        ((R.CIRCUIT_OPEN, S.DEGRADED, "m", "1"), TypeError),
        ((R.CIRCUIT_OPEN, S.DEGRADED, "m", None), TypeError),
        ((R.CIRCUIT_OPEN, S.DEGRADED, "m", 1, "0"), TypeError),
        ((R.CIRCUIT_OPEN, S.DEGRADED, "m", 1, 0, None), TypeError),
    ],
)
def test_finding_rejects_bad_input(arguments: tuple[Any, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        BuilderHealthFinding(*arguments)


def test_assessment_to_dict_and_reasons_are_distinct_in_order() -> None:
    first = BuilderHealthFinding(R.CIRCUIT_OPEN, S.DEGRADED, "open_circuits", 1, 0)
    second = BuilderHealthFinding(R.BUILDER_CLOSED, S.CRITICAL, "closed", True, False)
    assessment = BuilderHealthAssessment(
        "critical",  # type: ignore[arg-type]
        [first, second, first],  # type: ignore[arg-type]
        baseline_used=True,
    )
    assert assessment.severity is S.CRITICAL
    assert assessment.findings == (first, second, first)
    assert assessment.reasons == (R.CIRCUIT_OPEN, R.BUILDER_CLOSED)
    wire = assessment.to_dict()
    assert wire == {
        "schema": "coalestra.builder-health-assessment",
        "schema_version": 1,
        "severity": "critical",
        "baseline_used": True,
        "reasons": ["circuit_open", "builder_closed"],
        "findings": [first.to_dict(), second.to_dict(), first.to_dict()],
    }
    assert strict_json(wire) == wire


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (("worst",), ValueError),
        ((S.HEALTHY, "abc"), TypeError),
        ((S.HEALTHY, [object()]), TypeError),
        ((S.HEALTHY, 5), TypeError),
        ((S.HEALTHY, (), 1), TypeError),
    ],
)
def test_assessment_rejects_bad_input(arguments: tuple[Any, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        BuilderHealthAssessment(*arguments)


# --- the policy -----------------------------------------------------------------------------


def test_policy_defaults_in_order() -> None:
    policy = BuilderHealthAssessmentPolicy()
    assert [(field.name, getattr(policy, field.name)) for field in dataclasses.fields(policy)] == [
        ("capacity_waiting_degraded", 1),
        ("capacity_waiting_critical_ratio", 1.0),
        ("copy_waiting_degraded", 1),
        ("copy_waiting_critical_ratio", 1.0),
        ("submission_backlog_degraded_ratio", 0.5),
        ("submission_backlog_critical_ratio", 0.9),
        ("observability_backlog_degraded_ratio", 0.5),
        ("observability_backlog_critical_ratio", 0.9),
        ("counter_delta_degraded", 1),
        ("counter_delta_critical", 5),
    ]


def test_policy_accepts_edge_values() -> None:
    policy = BuilderHealthAssessmentPolicy(
        capacity_waiting_critical_ratio=2,
        copy_waiting_critical_ratio=0.01,
        submission_backlog_degraded_ratio=1,
        submission_backlog_critical_ratio=1,
        counter_delta_degraded=2,
        counter_delta_critical=2,
    )
    assert policy.capacity_waiting_critical_ratio == 2.0
    assert isinstance(policy.capacity_waiting_critical_ratio, float)
    assert policy.submission_backlog_critical_ratio == 1.0


INT_FIELDS = [
    "capacity_waiting_degraded",
    "copy_waiting_degraded",
    "counter_delta_degraded",
    "counter_delta_critical",
]
WAITING_RATIOS = ["capacity_waiting_critical_ratio", "copy_waiting_critical_ratio"]
BACKLOG_RATIOS = [
    "submission_backlog_degraded_ratio",
    "submission_backlog_critical_ratio",
    "observability_backlog_degraded_ratio",
    "observability_backlog_critical_ratio",
]


def bad_policy_cases() -> Iterator[tuple[str, Any, type[Exception]]]:
    for name in INT_FIELDS:
        yield name, True, TypeError
        yield name, 1.0, TypeError
        yield name, "1", TypeError
        yield name, 0, ValueError
        yield name, -1, ValueError
    for name in WAITING_RATIOS + BACKLOG_RATIOS:
        yield name, True, TypeError
        yield name, "0.5", TypeError
        yield name, None, TypeError
        yield name, 0, ValueError
        yield name, -0.5, ValueError
        yield name, math.nan, ValueError
        yield name, math.inf, ValueError
    for name in BACKLOG_RATIOS:
        yield name, 1.5, ValueError


@pytest.mark.parametrize(("name", "value", "error"), list(bad_policy_cases()))
def test_policy_rejects_bad_values(name: str, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=name):
        BuilderHealthAssessmentPolicy(**{name: value})


@pytest.mark.parametrize(
    "arguments",
    [
        {"counter_delta_degraded": 3, "counter_delta_critical": 2},
        {"submission_backlog_degraded_ratio": 0.8, "submission_backlog_critical_ratio": 0.7},
        {"observability_backlog_degraded_ratio": 0.95},
    ],
)
def test_policy_critical_below_degraded_is_rejected(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="critical"):
        BuilderHealthAssessmentPolicy(**arguments)


# --- live builders, async and sync ----------------------------------------------------------


async def test_a_closed_builder_assesses_critical(clock: VirtualClock) -> None:
    builder = SnapshotBuilder([source()], clock=clock)
    before = await builder.health_snapshot()
    await builder.aclose()
    after = await builder.health_snapshot()
    assert after.assess(previous=before).reasons == (R.BUILDER_CLOSED,)


async def test_a_live_builder_reports_growing_timeouts(clock: VirtualClock) -> None:
    import asyncio

    async def slow(key: ResourceKey, ctx: Any) -> str:
        await asyncio.sleep(10)
        return "late"

    slow_source = CallableSource(
        name="slow", priority=1, supports=lambda key: True, fetcher=slow, timeout_seconds=1.0
    )
    async with SnapshotBuilder([slow_source], clock=clock) as builder:
        before = await builder.health_snapshot()
        await builder.build([KEY], strict=False)
        after = await builder.health_snapshot()
    assessment = after.assess(previous=before)
    assert R.SOURCE_TIMEOUTS_INCREASED in assessment.reasons
    assert assessment.severity is S.DEGRADED


def test_sync_health_serializes_and_assesses_the_submission_backlog() -> None:
    with SyncSnapshotBuilder(SnapshotBuilder([source()]), max_pending_submissions=4) as sync:
        built = sync.health_snapshot()
        wire = built.to_dict()
        assert wire["pending_submissions"] == 0
        assert wire["max_pending_submissions"] == 4
        assert strict_json(wire) == wire
        assert built.assess().severity is S.HEALTHY
        loaded = dataclasses.replace(built, pending_submissions=4)
        assert only(loaded.assess()).reason is R.SUBMISSION_BACKLOG_HIGH


async def test_a_live_unsafe_blocking_source_is_named_critical(clock: VirtualClock) -> None:
    def blocking(key: ResourceKey, ctx: Any) -> str:
        return "v"

    unsafe = CallableSource(
        name="legacy-db",
        priority=2,
        supports=lambda key: True,
        fetcher=blocking,
        blocking_io=True,  # declared blocking, but no transport timeout: not protected
    )
    async with SnapshotBuilder(
        [unsafe, source()], clock=clock, allow_unsafe_blocking_sources=True
    ) as builder:
        health = await builder.health_snapshot()
    finding = next(
        item for item in health.assess().findings if item.reason is R.UNSAFE_BLOCKING_SOURCE
    )
    assert as_tuple(finding) == (
        R.UNSAFE_BLOCKING_SOURCE,
        S.CRITICAL,
        "unsafe_blocking_source_count",
        1,
        0,
        "legacy-db",
    )
    wire = health.to_dict()
    assert wire["source_timeout_guarantees"]["legacy-db"]["blocking_io"] is True
    assert strict_json(wire) == wire
