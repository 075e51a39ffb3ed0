"""Snapshot, SnapshotRequest, SnapshotDiagnostics, DiagnosticsCollector and BuilderHealth."""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from coalestra.core import (
    BuilderHealth,
    DiagnosticsCollector,
    ResourceKey,
    ResourceResolutionError,
    Snapshot,
    SnapshotConsistencyPolicy,
    SnapshotDiagnostics,
    SnapshotRequest,
    SnapshotValue,
    SourceFailure,
)

ACCOUNT = ResourceKey("account", "balance")
POSITION = ResourceKey("account", "position", "BTCUSDT")
ORDERS = ResourceKey("account", "orders", "BTCUSDT")
HEALTH = ResourceKey("market", "health")
MISSING = ResourceKey("never", "requested")


def make_value(key: ResourceKey, payload: Any, *, stale: bool = False) -> SnapshotValue[Any]:
    return SnapshotValue(key, payload, "rest", 100.0, 101.0, 1.0, stale, False, 2.0)


# --- SnapshotRequest ---------------------------------------------------------------------------


def test_request_keeps_order_and_drops_duplicates() -> None:
    request = SnapshotRequest(
        required=[POSITION, ACCOUNT, POSITION], optional=[HEALTH, ORDERS, HEALTH]
    )
    assert request.required == (POSITION, ACCOUNT)
    assert request.optional == (HEALTH, ORDERS)
    assert request.keys == (POSITION, ACCOUNT, HEALTH, ORDERS)
    assert request.consistency_policy is None


def test_key_in_both_lists_is_rejected() -> None:
    with pytest.raises(ValueError, match="cannot be both required and optional: account:balance"):
        SnapshotRequest(required=[ACCOUNT], optional=[HEALTH, ACCOUNT])


def test_required_and_optional_keys() -> None:
    request = SnapshotRequest(required=[ACCOUNT], optional=[HEALTH])
    assert request.keys == (ACCOUNT, HEALTH)
    assert request.is_required(ACCOUNT)
    assert not request.is_required(HEALTH)
    assert not request.is_required(MISSING)


def test_equal_keys_built_differently_are_the_same_key() -> None:
    legacy = ResourceKey.legacy("ACCOUNT", "Balance")
    assert SnapshotRequest(required=[ACCOUNT, legacy]).required == (ACCOUNT,)
    with pytest.raises(ValueError, match="both required and optional"):
        SnapshotRequest(required=[ACCOUNT], optional=[legacy])


def test_request_accepts_any_iterable_once() -> None:
    keys: Iterator[ResourceKey] = iter([ACCOUNT, POSITION])
    request = SnapshotRequest(required=keys, optional={HEALTH: None}.keys())
    assert request.required == (ACCOUNT, POSITION)
    assert request.optional == (HEALTH,)


def test_empty_request_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least one resource key"):
        SnapshotRequest()


def test_request_with_consistency_policy() -> None:
    policy = SnapshotConsistencyPolicy(max_observation_skew_seconds=2.0)
    request = SnapshotRequest(required=[ACCOUNT], consistency_policy=policy)
    assert request.consistency_policy is policy


def test_request_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        SnapshotRequest([ACCOUNT])  # type: ignore[call-arg]


@pytest.mark.parametrize("field", ["required", "optional"])
@pytest.mark.parametrize(
    "bad",
    [ACCOUNT, "account:balance", b"account", 5, ["account:balance"], [ACCOUNT, None], [[ACCOUNT]]],
)
def test_request_rejects_non_keys(field: str, bad: Any) -> None:
    with pytest.raises(TypeError, match=field):
        SnapshotRequest(**{field: bad})


def test_request_rejects_a_bad_consistency_policy() -> None:
    with pytest.raises(TypeError, match="consistency_policy"):
        SnapshotRequest(required=[ACCOUNT], consistency_policy=2.0)  # type: ignore[arg-type]


def test_request_is_a_frozen_hashable_picklable_value() -> None:
    request = SnapshotRequest(
        required=[ACCOUNT], optional=[HEALTH], consistency_policy=SnapshotConsistencyPolicy(1.0)
    )
    same = SnapshotRequest(
        required=[ACCOUNT], optional=[HEALTH], consistency_policy=SnapshotConsistencyPolicy(1.0)
    )
    assert request == same
    assert hash(request) == hash(same)
    assert pickle.loads(pickle.dumps(request)) == request
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.required = ()  # type: ignore[misc]
    assert [item.name for item in dataclasses.fields(SnapshotRequest)] == [
        "required",
        "optional",
        "consistency_policy",
        "acceptance_policy",
    ]


# --- Snapshot ----------------------------------------------------------------------------------


def make_snapshot() -> Snapshot:
    failure = ResourceResolutionError(ORDERS, (SourceFailure("rest", "TimeoutError", "slow"),))
    return Snapshot(
        snapshot_id="cycle-42",
        created_at=1000.0,
        resources={
            ACCOUNT: make_value(ACCOUNT, {"balance": "10"}),
            POSITION: make_value(POSITION, [1, 2], stale=True),
            HEALTH: make_value(HEALTH, None),
        },
        errors={ORDERS: failure},
    )


def test_snapshot_is_a_mapping_of_resolved_values() -> None:
    snapshot = make_snapshot()
    assert isinstance(snapshot, Mapping)
    assert len(snapshot) == 3
    assert list(snapshot) == [ACCOUNT, POSITION, HEALTH]
    assert ACCOUNT in snapshot
    assert ORDERS not in snapshot  # failed keys are not items
    assert "account:balance" not in snapshot
    assert snapshot[ACCOUNT].value == {"balance": "10"}
    assert snapshot.get(ORDERS) is None
    assert set(snapshot.keys()) == {ACCOUNT, POSITION, HEALTH}
    assert dict(snapshot.items())[POSITION].stale
    with pytest.raises(KeyError):
        snapshot[ORDERS]


def test_value_returns_the_payload() -> None:
    snapshot = make_snapshot()
    assert snapshot.value(ACCOUNT) == {"balance": "10"}
    assert snapshot.value(ACCOUNT, dict) == {"balance": "10"}
    assert snapshot.value(POSITION, list) == [1, 2]
    assert snapshot.value(HEALTH) is None


def test_value_checks_the_expected_type() -> None:
    with pytest.raises(TypeError, match=r"^Resource account:balance contains dict, expected list$"):
        make_snapshot().value(ACCOUNT, list)


def test_value_of_a_failed_key_raises_key_error_chained_to_its_error() -> None:
    snapshot = make_snapshot()
    with pytest.raises(KeyError) as caught:
        snapshot.value(ORDERS)
    assert caught.value.__cause__ is snapshot.errors[ORDERS]
    assert snapshot.error_for(ORDERS) is snapshot.errors[ORDERS]
    with pytest.raises(KeyError):
        snapshot.value(ORDERS, dict)


def test_value_of_an_unknown_key_raises_key_error() -> None:
    with pytest.raises(KeyError):
        make_snapshot().value(MISSING)


def test_maybe_value() -> None:
    snapshot = make_snapshot()
    assert snapshot.maybe_value(ACCOUNT) == {"balance": "10"}
    assert snapshot.maybe_value(ACCOUNT, dict) == {"balance": "10"}
    assert snapshot.maybe_value(ORDERS) is None
    assert snapshot.maybe_value(ORDERS, dict) is None
    assert snapshot.maybe_value(MISSING) is None
    with pytest.raises(TypeError, match="expected str"):
        snapshot.maybe_value(POSITION, str)


def test_complete_stale_keys_and_error_for() -> None:
    snapshot = make_snapshot()
    assert not snapshot.complete
    assert snapshot.stale_keys == (POSITION,)
    assert isinstance(snapshot.error_for(ORDERS), ResourceResolutionError)
    assert snapshot.error_for(ACCOUNT) is None
    assert snapshot.error_for(MISSING) is None
    whole = Snapshot("s", 1.0, {ACCOUNT: make_value(ACCOUNT, 1)})
    assert whole.complete
    assert whole.stale_keys == ()
    assert whole.errors == {}
    assert whole.diagnostics == SnapshotDiagnostics()


def test_snapshot_mappings_are_read_only_copies() -> None:
    resources = {ACCOUNT: make_value(ACCOUNT, 1)}
    errors: dict[ResourceKey, Exception] = {ORDERS: ValueError("x")}
    snapshot = Snapshot("s", 1.0, resources, errors)
    resources[POSITION] = make_value(POSITION, 2)
    errors.clear()
    assert list(snapshot) == [ACCOUNT]
    assert ORDERS in snapshot.errors
    with pytest.raises(TypeError):
        snapshot.resources[POSITION] = make_value(POSITION, 2)  # type: ignore[index]
    with pytest.raises(TypeError):
        snapshot.errors.pop(ORDERS)  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.snapshot_id = "other"  # type: ignore[misc]


def test_snapshot_equality_and_unhashability() -> None:
    first = make_snapshot()
    second = Snapshot("cycle-42", 2000.0, dict(first.resources), dict(first.errors))
    assert first == second  # created_at and diagnostics do not matter
    assert first != Snapshot("other", 1000.0, dict(first.resources), dict(first.errors))
    assert first != Snapshot("cycle-42", 1000.0, {}, dict(first.errors))
    with pytest.raises(TypeError):
        hash(first)


def test_snapshot_pickles_and_deep_copies() -> None:
    snapshot = make_snapshot()
    for clone in (pickle.loads(pickle.dumps(snapshot)), copy.deepcopy(snapshot)):
        assert dict(clone.resources) == dict(snapshot.resources)
        assert clone.snapshot_id == "cycle-42"
        assert clone.stale_keys == (POSITION,)
        error = clone.error_for(ORDERS)
        assert isinstance(error, ResourceResolutionError)
        assert error.failures == (SourceFailure("rest", "TimeoutError", "slow"),)
        assert clone.value(POSITION) is not snapshot.value(POSITION)


@pytest.mark.parametrize(
    ("arguments", "error", "text"),
    [
        ({"snapshot_id": 5}, TypeError, "snapshot_id"),
        ({"created_at": math.nan}, ValueError, "created_at"),
        ({"created_at": "now"}, ValueError, "created_at"),
        ({"resources": [ACCOUNT]}, TypeError, "resources"),
        ({"errors": "none"}, TypeError, "errors"),
        ({"diagnostics": {}}, TypeError, "diagnostics"),
    ],
)
def test_snapshot_validation(arguments: dict[str, Any], error: type[Exception], text: str) -> None:
    fields: dict[str, Any] = {"snapshot_id": "s", "created_at": 1.0, "resources": {}}
    fields.update(arguments)
    with pytest.raises(error, match=text):
        Snapshot(**fields)


# --- SnapshotDiagnostics -----------------------------------------------------------------------


def test_diagnostics_defaults_are_zero() -> None:
    diagnostics = SnapshotDiagnostics()
    for item in dataclasses.fields(SnapshotDiagnostics):
        value = getattr(diagnostics, item.name)
        assert value in (0, 0.0, {}), item.name


def test_diagnostics_mappings_are_read_only_copies() -> None:
    calls = {"rest": 2}
    diagnostics = SnapshotDiagnostics(source_calls_by_source=calls)
    calls["rest"] = 3
    assert diagnostics.source_calls_by_source == {"rest": 2}
    with pytest.raises(TypeError):
        diagnostics.source_calls_by_source["rest"] = 4  # type: ignore[index]


@pytest.mark.parametrize(
    ("field", "bad", "error"),
    [
        ("cache_hits", -1, ValueError),
        ("cache_hits", 1.5, TypeError),
        ("source_calls", True, TypeError),
        ("duration_ms", -0.5, ValueError),
        ("duration_ms", math.nan, ValueError),
        ("observation_skew_ms", math.inf, ValueError),
        ("observation_skew_ms", "0", TypeError),
        ("source_calls_by_source", [("rest", 1)], TypeError),
        ("source_latency_ms_by_source", 3, TypeError),
    ],
)
def test_diagnostics_validation(field: str, bad: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=field):
        SnapshotDiagnostics(**{field: bad})


# --- DiagnosticsCollector ----------------------------------------------------------------------


def test_collector_freezes_its_counters() -> None:
    collector = DiagnosticsCollector()
    collector.add("cache_hits")
    collector.add("cache_hits", 2)
    collector.add("requested_resources", 5)
    collector.record_source_call("rest", 12.5)
    collector.record_source_call("rest", 7.5)
    collector.record_source_call("stream", 1.0)
    diagnostics = collector.freeze(duration_ms=30.0, observation_skew_ms=4.0)
    assert isinstance(diagnostics, SnapshotDiagnostics)
    assert diagnostics.cache_hits == 3
    assert diagnostics.requested_resources == 5
    assert diagnostics.cache_misses == 0
    assert diagnostics.duration_ms == 30.0
    assert diagnostics.observation_skew_ms == 4.0
    assert diagnostics.source_calls_by_source == {"rest": 2, "stream": 1}
    assert diagnostics.source_latency_ms_by_source == {"rest": 20.0, "stream": 1.0}


def test_freeze_sets_every_field_and_equals_the_checked_constructor() -> None:
    collector = DiagnosticsCollector()
    counters = [f.name for f in dataclasses.fields(SnapshotDiagnostics) if f.type == "int"]
    for number, name in enumerate(counters, start=1):
        collector.add(name, number)
    collector.record_source_call("rest", 2.5)
    diagnostics = collector.freeze(duration_ms=3.0, observation_skew_ms=1.5)
    expected = SnapshotDiagnostics(
        duration_ms=3.0,
        observation_skew_ms=1.5,
        source_calls_by_source={"rest": 1},
        source_latency_ms_by_source={"rest": 2.5},
        **{name: number for number, name in enumerate(counters, start=1)},
    )
    assert type(diagnostics) is SnapshotDiagnostics
    # Every field is set (an unset slot would raise AttributeError) and holds what was counted.
    assert dataclasses.astuple(diagnostics) == dataclasses.astuple(expected)
    assert diagnostics == expected
    with pytest.raises(dataclasses.FrozenInstanceError):
        diagnostics.cache_hits = 0  # type: ignore[misc]


def test_frozen_diagnostics_do_not_follow_the_collector() -> None:
    collector = DiagnosticsCollector()
    collector.record_source_call("rest", 1.0)
    diagnostics = collector.freeze(duration_ms=1.0, observation_skew_ms=0.0)
    collector.add("cache_hits")
    collector.record_source_call("rest", 1.0)
    assert diagnostics.cache_hits == 0
    assert diagnostics.source_calls_by_source == {"rest": 1}


def test_freeze_clamps_negative_durations() -> None:
    diagnostics = DiagnosticsCollector().freeze(duration_ms=-0.001, observation_skew_ms=-2.0)
    assert diagnostics.duration_ms == 0.0
    assert diagnostics.observation_skew_ms == 0.0


def test_collector_counts_every_integer_diagnostic() -> None:
    collector = DiagnosticsCollector()
    int_fields = [
        item.name
        for item in dataclasses.fields(SnapshotDiagnostics)
        if isinstance(getattr(SnapshotDiagnostics(), item.name), int)
    ]
    for index, name in enumerate(int_fields, start=1):
        collector.add(name, index)
    diagnostics = collector.freeze(duration_ms=0.0, observation_skew_ms=0.0)
    for index, name in enumerate(int_fields, start=1):
        assert getattr(diagnostics, name) == index


def test_collector_rejects_unknown_counters() -> None:
    with pytest.raises(AttributeError):
        DiagnosticsCollector().add("no_such_counter")


# --- BuilderHealth -----------------------------------------------------------------------------


def test_builder_health_defaults() -> None:
    health = BuilderHealth(
        closed=False,
        background_refreshes=1,
        singleflight_in_flight=2,
        source_support_cache_entries=3,
    )
    assert health.capacity == {}
    assert health.circuits == {}
    assert health.cache is None
    assert health.active_dispatch_workers == 0
    assert health.revalidation_failure_count == 0
    assert health.pending_submissions == 0
    assert health.max_pending_submissions is None


def test_builder_health_mappings_are_read_only_copies() -> None:
    capacity = {"global": 4}
    health = BuilderHealth(False, 0, 0, 0, capacity=capacity, max_pending_submissions=256)
    capacity["global"] = 8
    assert health.capacity == {"global": 4}
    with pytest.raises(TypeError):
        health.capacity["global"] = 1  # type: ignore[index]
    assert health.max_pending_submissions == 256
    assert pickle.loads(pickle.dumps(health)) == health


@pytest.mark.parametrize(
    ("field", "bad", "error"),
    [
        ("closed", 0, TypeError),
        ("background_refreshes", -1, ValueError),
        ("queue_timeout_count", 1.0, TypeError),
        ("deadline_exceeded_count", -3, ValueError),
        ("pending_submissions", None, TypeError),
        ("max_pending_submissions", 0, ValueError),
        ("capacity", [("global", 4)], TypeError),
        ("circuits", "none", TypeError),
    ],
)
def test_builder_health_validation(field: str, bad: Any, error: type[Exception]) -> None:
    arguments: dict[str, Any] = {
        "closed": False,
        "background_refreshes": 0,
        "singleflight_in_flight": 0,
        "source_support_cache_entries": 0,
        field: bad,
    }
    with pytest.raises(error, match=field):
        BuilderHealth(**arguments)
