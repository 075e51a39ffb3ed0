"""The internal Instrumentation helper: the published names, low-cardinality labels, safe sinks,
full-identity events."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalestra.core import ResourceKey, Snapshot, SnapshotValue
from coalestra.observability import (
    BufferedEventSink,
    BufferedMetricsSink,
    BufferOverflowPolicy,
    InMemoryMetrics,
    MetricRecord,
    NullEventSink,
    NullMetrics,
)
from coalestra.observability import _names as inst
from coalestra.observability._instrumentation import Instrumentation
from coalestra.observability._sinkcalls import key_type

NAMESPACES = ("market", "account")
NAMES = ("price", "book", "balance")
SOURCES = ("rest", "ws", "local")
STATUSES = ("published", "ignored_older")
REASONS = ("manual", "dependency")
# Every value a label may take when the helper is driven by ``_drive``.
ALLOWED_VALUES = {
    *NAMESPACES,
    *NAMES,
    *SOURCES,
    *STATUSES,
    "success",
    "error",
    "failure",
    "stale",
    "circuit_open",
    "invalid_timestamp",
    "fresh",
    "miss",
    "stale_while_revalidate",
    "stale_fallback",
    "revalidation_bypass",
    "scheduled",
    "cancelled",
    "queue_timeout",
    "snapshot_deadline",
    "observation_skew",
}
SNAPSHOT = Snapshot("snap-1", 0.0, {})


class RecordingMetrics:
    """Keeps every call as a MetricRecord, so a test can inspect every label set."""

    def __init__(self) -> None:
        self.records: list[MetricRecord] = []

    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        self.records.append(MetricRecord("increment", metric, value, labels))

    def observe(self, metric: str, value: float, **labels: str) -> None:
        self.records.append(MetricRecord("observe", metric, value, labels))


class RecordingEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, event_type: str, **payload: Any) -> None:
        self.events.append((event_type, payload))


class RaisingSink:
    """Both sink protocols; every call raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def emit(self, event_type: str, **payload: Any) -> None:
        self.calls += 1
        raise self.error

    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        self.calls += 1
        raise self.error

    def observe(self, metric: str, value: float, **labels: str) -> None:
        self.calls += 1
        raise self.error


def _keys(subjects: list[str]) -> list[ResourceKey]:
    return [
        ResourceKey(
            NAMESPACES[i % 2], NAMES[i % 3], subject, {"venue": f"v-{subject}", "account": "acc9"}
        )
        for i, subject in enumerate(subjects)
    ]


def _drive(helper: Instrumentation, keys: list[ResourceKey]) -> None:
    """Report every kind of fact the engine reports, for ``keys``."""
    counts = helper.count_by_type(keys)
    helper.cache_accesses("fresh", counts)
    helper.cache_accesses("miss", {key_type(keys[0]): 1})
    helper.cache_hits(keys)
    helper.cache_bypassed(keys)
    for i, key in enumerate(keys):
        source = SOURCES[i % 3]
        helper.fetched(source, "success")
        helper.resolved(
            key, source, latency_ms=1.0, attempts=1, source_kind="single", authority_rank=0
        )
        helper.source_failed(key, source, ValueError("x"))
        helper.payload_rejected(key, source, ValueError("x"))
        helper.circuit_open(source, key, ValueError("x"))
        helper.stale_fallback(key, "ValueError")
        helper.published(_value(key, source), None, status=STATUSES[i % 2], forced=False)
        helper.invalidation(key, REASONS[i % 2])
        helper.refresh_scheduled(key, "stale_while_revalidate", "snap-1")
        helper.refresh_completed(key, source, "stale_while_revalidate")
        helper.refresh_failed(key, "refresh_ahead", ValueError("x"))
        helper.refresh_cancelled(key)
    helper.fetch_latency("rest", 200.0)
    helper.batch_call("rest", "success", len(keys))
    helper.single_flight_joined(keys[:3])
    helper.capacity_wait("rest", 2.0)
    helper.capacity_timeout("rest", "queue_timeout")
    helper.build_finished(SNAPSHOT, build_failed=False, strict=True, resources=len(keys))
    helper.session_resolved(
        SNAPSHOT, requested=1, stage_failed=False, strict=True, retry_errors=False
    )


def _value(key: ResourceKey, source: str) -> SnapshotValue[int]:
    return SnapshotValue(key, 1, source, 0.0, 0.0, 0.0, False, False, 0.0)


def _assert_low_cardinality(records: list[MetricRecord], keys: list[ResourceKey]) -> None:
    forbidden = {str(key) for key in keys} | {key.subject for key in keys}
    forbidden |= {value for key in keys for _, value in key.qualifiers}
    assert records
    for record in records:
        assert set(record.labels) <= inst.ALLOWED_LABELS, record
        assert set(record.labels.values()) <= ALLOWED_VALUES, record
        assert not forbidden & set(record.labels.values()), record


def test_metric_labels_never_carry_subjects_qualifiers_or_keys() -> None:
    metrics, events = RecordingMetrics(), RecordingEvents()
    keys = _keys([f"SYM{i}" for i in range(200)])
    _drive(Instrumentation(metrics, events), keys)
    _assert_low_cardinality(metrics.records, keys)
    # Each metric keeps one fixed set of label names (as Prometheus exporters require).
    label_names: dict[str, set[frozenset[str]]] = {}
    for record in metrics.records:
        label_names.setdefault(record.metric, set()).add(frozenset(record.labels))
    assert all(len(sets) == 1 for sets in label_names.values()), label_names
    # Bounded: the series count depends on resource types and sources, not on 200 subjects.
    series = {(r.metric, tuple(sorted(r.labels.items()))) for r in metrics.records}
    assert len(series) < 100


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12).map(lambda s: f"S-{s}"), min_size=1, max_size=20))
def test_labels_stay_low_cardinality_for_any_subjects(subjects: list[str]) -> None:
    metrics = RecordingMetrics()
    keys = _keys(subjects)
    _drive(Instrumentation(metrics, RecordingEvents()), keys)
    _assert_low_cardinality(metrics.records, keys)


def test_events_carry_the_full_resource_identity() -> None:
    events = RecordingEvents()
    key = ResourceKey("market", "price", "BTCUSDT", {"venue": "spot"})
    helper = Instrumentation(NullMetrics(), events)
    helper.published(_value(key, "ws"), None, status="published", forced=False)
    helper.invalidation(key, "manual")
    helper.refresh_failed(key, "refresh_ahead", ValueError("x"))
    helper.source_failed(key, "rest", ValueError("x"))
    resources = [payload.get("resource") for _, payload in events.events]
    assert resources == ["market:price:BTCUSDT?venue=spot"] * 4
    assert [event_type for event_type, _ in events.events] == [
        inst.EVENT_PUBLISHED,
        inst.EVENT_INVALIDATED,
        inst.EVENT_REFRESH_FAILED,
        inst.EVENT_SOURCE_FAILED,
    ]


def test_metrics_land_under_the_documented_names_and_labels() -> None:
    metrics = InMemoryMetrics()
    helper = Instrumentation(metrics, NullEventSink())
    price = ("market", "price")
    helper.cache_accesses("fresh", {price: 998, ("market", "book"): 0})
    helper.cache_accesses("miss", {price: 2})
    helper.build_finished(SNAPSHOT, build_failed=False, strict=True, resources=1)
    helper.fetch_latency("rest", 500.0)
    helper.single_flight_joined([])
    helper.single_flight_joined(_keys(["A", "B", "C", "D", "E", "F"])[::3])
    helper.capacity_wait("rest", 125.0)
    type_labels = {"resource_namespace": "market", "resource_name": "price"}
    assert metrics.counter(inst.CACHE_ACCESS_TOTAL, status="fresh", **type_labels) == 998
    assert metrics.counter(inst.CACHE_ACCESS_TOTAL, status="miss", **type_labels) == 2
    book = {"resource_namespace": "market", "resource_name": "book"}
    assert metrics.counter(inst.CACHE_ACCESS_TOTAL, status="fresh", **book) == 0
    assert metrics.counter(inst.SNAPSHOT_BUILD_TOTAL, status="success") == 1
    assert metrics.counter(inst.SESSION_RESOLVE_TOTAL, status="success") == 1
    latency = metrics.summary(inst.SOURCE_FETCH_LATENCY_MS, source="rest")
    assert latency is not None
    assert latency.total == 500.0
    assert metrics.counter(inst.SINGLEFLIGHT_JOIN_TOTAL, **type_labels) == 1
    wait = metrics.summary(inst.SOURCE_CAPACITY_WAIT_MS, source="rest")
    assert wait is not None
    assert wait.count == 1


def test_metric_names_are_the_published_ones() -> None:
    assert set(inst.COUNTERS) == {
        "snapshot_build_total",
        "snapshot_session_resolve_total",
        "snapshot_session_revalidate_total",
        "snapshot_consistency_total",
        "snapshot_acceptance_total",
        "snapshot_acceptance_violation_total",
        "snapshot_try_request_total",
        "cache_access_total",
        "source_fetch_total",
        "source_batch_call_total",
        "source_capacity_timeout_total",
        "singleflight_join_total",
        "resource_refresh_total",
        "resource_publish_total",
        "resource_invalidation_total",
        "source_transport_budget_rejection_total",
        "source_transport_timeout_violation_total",
    }
    assert set(inst.OBSERVATIONS) == {
        "source_fetch_latency_ms",
        "source_capacity_wait_ms",
        "source_batch_size",
    }
    for name in inst.COUNTERS:
        assert re.fullmatch(r"[a-z_]+_total", name), name


def test_a_raising_sink_never_fails_the_caller_and_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = RaisingSink(RuntimeError("exporter down"))
    helper = Instrumentation(sink, sink)
    _drive(helper, _keys(["A", "B"]))
    assert sink.calls > 0
    assert helper.sink_failures == sink.calls
    # Logged once, not once per failure.
    assert len([r for r in caplog.records if "sink raised" in r.getMessage()]) == 1


def test_cancellation_is_never_swallowed() -> None:
    sink = RaisingSink(asyncio.CancelledError())
    helper = Instrumentation(sink, NullEventSink())
    with pytest.raises(asyncio.CancelledError):
        helper.fetch_latency("rest", 0.1)


def test_queue_full_from_a_full_buffered_sink_is_counted_not_raised() -> None:
    gate, entered = threading.Event(), threading.Event()

    class Blocking:
        def emit(self, event_type: str, **payload: Any) -> None:
            entered.set()
            gate.wait()

    events = BufferedEventSink(Blocking(), max_pending=1, overflow=BufferOverflowPolicy.RAISE)
    helper = Instrumentation(NullMetrics(), events)
    try:
        key = ResourceKey("market", "price", "A")
        helper.invalidation(key, "a")  # in flight, held by the downstream
        assert entered.wait(10.0)
        helper.invalidation(key, "b")  # queued: the queue is now full
        helper.invalidation(key, "c")  # queue.Full inside the sink: swallowed, counted
        assert helper.sink_failures == 1
        assert events.stats().dropped == 0  # refused (raised), not dropped
    finally:
        gate.set()
    assert events.close() is True
    assert events.stats().delivered == 2


def test_records_after_a_buffered_sink_closed_are_counted_not_raised() -> None:
    metrics = BufferedMetricsSink(NullMetrics(), overflow=BufferOverflowPolicy.RAISE)
    assert metrics.close() is True
    helper = Instrumentation(metrics, NullEventSink())
    # RuntimeError in the sink: swallowed
    helper.build_finished(SNAPSHOT, build_failed=False, strict=True, resources=1)
    assert helper.sink_failures == 2
    assert metrics.stats().enqueued == 0


def test_enabled_reflects_the_sinks() -> None:
    assert Instrumentation(NullMetrics(), NullEventSink()).enabled is False
    assert Instrumentation(InMemoryMetrics(), NullEventSink()).enabled is True
    assert Instrumentation(NullMetrics(), RecordingEvents()).enabled is True


def test_disabled_half_is_not_called() -> None:
    events = RecordingEvents()
    helper = Instrumentation(NullMetrics(), events)
    helper.cache_accesses("fresh", {("market", "price"): 5})  # metrics only
    helper.single_flight_joined(_keys(["A", "B"]))
    helper.capacity_wait("rest", 0.1)
    assert events.events == []
    metrics = RecordingMetrics()
    helper = Instrumentation(metrics, NullEventSink())
    helper.cache_hits([ResourceKey("market", "price", "A")])  # event only
    helper.resolved(
        ResourceKey("market", "price", "A"),
        "rest",
        latency_ms=1.0,
        attempts=1,
        source_kind="single",
        authority_rank=0,
    )
    assert metrics.records == []


def test_constructor_checks_the_sinks() -> None:
    with pytest.raises(TypeError, match="metrics"):
        Instrumentation(NullEventSink(), NullEventSink())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="events"):
        Instrumentation(NullMetrics(), NullMetrics())  # type: ignore[arg-type]


def test_count_by_type_groups_keys_by_namespace_and_name() -> None:
    helper = Instrumentation(InMemoryMetrics(), NullEventSink())
    keys = _keys([f"S{i}" for i in range(12)])
    expected = {
        ("market", "price"): 2,
        ("account", "book"): 2,
        ("market", "balance"): 2,
        ("account", "price"): 2,
        ("market", "book"): 2,
        ("account", "balance"): 2,
    }
    assert helper.count_by_type(keys) == expected
    assert helper.count_by_type(tuple(keys)) == expected
    one_namespace = [k for k in keys if k.namespace == "market"]
    assert helper.count_by_type(one_namespace) == {
        ("market", "price"): 2,
        ("market", "balance"): 2,
        ("market", "book"): 2,
    }
    assert helper.count_by_type([]) == {}


def test_count_by_type_remembers_tuples_by_identity_only() -> None:
    helper = Instrumentation(InMemoryMetrics(), NullEventSink())
    first = tuple(_keys(["A", "B", "C"]))
    counts = helper.count_by_type(first)
    assert helper.count_by_type(first) is counts  # a repeated request tuple costs O(1)
    with pytest.raises(TypeError):
        counts[("market", "price")] = 0  # type: ignore[index]
    other = tuple(_keys(["A"]))
    assert helper.count_by_type(other) == {("market", "price"): 1}
    as_list = list(first)
    assert helper.count_by_type(as_list) == counts
    assert helper.count_by_type(as_list) is not helper.count_by_type(as_list)  # lists mutate
    for index in range(16):  # the memo is bounded: old tuples are forgotten
        helper.count_by_type(tuple(_keys([f"X{index}"])))
    again = helper.count_by_type(first)
    assert again == counts
    assert again is not counts


async def test_buffered_sinks_behind_instrumentation_on_the_event_loop() -> None:
    downstream_metrics, downstream_events = InMemoryMetrics(), RecordingEvents()
    metrics = BufferedMetricsSink(downstream_metrics)
    events = BufferedEventSink(downstream_events)
    helper = Instrumentation(metrics, events)
    key = ResourceKey("market", "price", "BTCUSDT", {"venue": "spot"})
    helper.published(_value(key, "ws"), None, status="published", forced=True)
    assert await metrics.aclose() is True
    assert await events.aclose() is True
    labels = {
        "source": "ws",
        "status": "published",
        "resource_namespace": "market",
        "resource_name": "price",
    }
    assert downstream_metrics.counter(inst.RESOURCE_PUBLISH_TOTAL, **labels) == 1
    assert downstream_events.events == [
        (
            inst.EVENT_PUBLISHED,
            {
                "resource": "market:price:BTCUSDT?venue=spot",
                "source": "ws",
                "observed_at": 0.0,
                "replaced": False,
                "forced": True,
                "authority_rank": 0,
            },
        )
    ]


def test_cache_lookups_report_one_increment_per_nonzero_type() -> None:
    metrics = RecordingMetrics()
    helper = Instrumentation(metrics, NullEventSink())
    helper.cache_accesses("fresh", {("market", "price"): 5, ("market", "book"): 0})
    assert metrics.records == [
        MetricRecord(
            "increment",
            inst.CACHE_ACCESS_TOTAL,
            5,
            {"status": "fresh", "resource_namespace": "market", "resource_name": "price"},
        )
    ]
