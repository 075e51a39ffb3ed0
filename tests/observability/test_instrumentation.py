"""The internal Instrumentation helper: low-cardinality labels, safe sinks, full-identity events."""

from __future__ import annotations

import asyncio
import re
import threading
from enum import Enum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalestra.core import ResourceKey
from coalestra.observability import (
    BufferedEventSink,
    BufferedMetricsSink,
    BufferOverflowPolicy,
    InMemoryMetrics,
    MetricRecord,
    NullEventSink,
    NullMetrics,
)
from coalestra.observability import _instrumentation as inst
from coalestra.observability._instrumentation import Instrumentation, key_type

NAMESPACES = ("market", "account")
NAMES = ("price", "book", "balance")
SOURCES = ("rest", "ws", "local")
OUTCOMES = ("success", "error", "timeout", "complete", "partial")
STATUSES = ("published", "ignored_older")
STATES = ("open", "closed", "half_open")
SCOPES = ("source", "subject")
REASONS = ("manual", "dependency")
# Every value a label may take when the helper is driven by ``_drive``.
ALLOWED_VALUES = {
    *NAMESPACES,
    *NAMES,
    *SOURCES,
    *OUTCOMES,
    *STATUSES,
    *STATES,
    *SCOPES,
    *REASONS,
    "*",
    "completed",
}


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


class State(str, Enum):
    OPEN = "open"


def _keys(subjects: list[str]) -> list[ResourceKey]:
    return [
        ResourceKey(
            NAMESPACES[i % 2], NAMES[i % 3], subject, {"venue": f"v-{subject}", "account": "acc9"}
        )
        for i, subject in enumerate(subjects)
    ]


def _drive(helper: Instrumentation, keys: list[ResourceKey]) -> None:
    """Report every kind of fact the engine reports, for ``keys``."""
    helper.build_started("snap-1", len(keys))
    counts = helper.count_by_type(keys)
    helper.cache_lookups(counts, {key_type(keys[0]): 1}, {})
    for i, key in enumerate(keys):
        source = SOURCES[i % 3]
        helper.source_call(source, key_type(key), "success", 0.01, 1, 1, resource=key)
        helper.publication(key, source, STATUSES[i % 2])
        helper.invalidation(key, REASONS[i % 2])
        helper.refresh("completed", key)
    helper.source_call("rest", None, "timeout", 0.2, len(keys), 2)
    helper.retry("rest", 2, 0.05)
    helper.circuit_transition("ws", "subject", State.OPEN, discriminator=keys[0].subject)
    helper.single_flight_joined(3)
    helper.capacity_wait("rest", 0.002)
    helper.capacity_wait(None, 0.001)
    helper.refresh("completed")
    helper.build_finished("snap-1", 0.5, len(keys), len(keys), 0, "complete")


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
    assert len(series) < 60


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
    helper.publication(key, "ws", "published")
    helper.invalidation(key, "manual")
    helper.refresh("failed", key)
    helper.source_call("rest", key_type(key), "success", 0.1, 1, 1, resource=key)
    resources = [payload.get("resource") for _, payload in events.events]
    assert resources == ["market:price:BTCUSDT?venue=spot"] * 4
    assert [event_type for event_type, _ in events.events] == [
        inst.EVENT_PUBLICATION,
        inst.EVENT_INVALIDATION,
        inst.EVENT_REFRESH,
        inst.EVENT_SOURCE_CALL,
    ]


def test_metrics_land_under_the_documented_names_and_labels() -> None:
    metrics = InMemoryMetrics()
    helper = Instrumentation(metrics, NullEventSink())
    price = ("market", "price")
    helper.cache_lookups({price: 998, ("market", "book"): 0}, {price: 2}, {price: 1})
    helper.build_finished("s", 0.25, 1000, 1000, 0, "complete")
    helper.source_call("rest", None, "success", 0.5, 10, 1)
    helper.circuit_transition("ws", "source", State.OPEN)
    helper.single_flight_joined(0)
    helper.single_flight_joined(4)
    helper.capacity_wait(None, 0.125)
    type_labels = {"resource_namespace": "market", "resource_name": "price"}
    assert metrics.counter(inst.CACHE_HITS_TOTAL, **type_labels) == 998
    assert metrics.counter(inst.CACHE_MISSES_TOTAL, **type_labels) == 2
    assert metrics.counter(inst.CACHE_STALE_TOTAL, **type_labels) == 1
    assert (
        metrics.counter(inst.CACHE_HITS_TOTAL, resource_namespace="market", resource_name="book")
        == 0
    )
    assert metrics.counter(inst.BUILDS_TOTAL, outcome="complete") == 1
    duration = metrics.summary(inst.BUILD_DURATION_SECONDS, outcome="complete")
    assert duration is not None
    assert duration.total == 0.25
    assert (
        metrics.counter(
            inst.SOURCE_CALLS_TOTAL,
            source="rest",
            outcome="success",
            resource_namespace="*",
            resource_name="*",
        )
        == 1
    )
    assert (
        metrics.counter(inst.CIRCUIT_TRANSITIONS_TOTAL, source="ws", scope="source", state="open")
        == 1
    )
    assert metrics.counter(inst.SINGLEFLIGHT_JOINS_TOTAL) == 4
    wait = metrics.summary(inst.CAPACITY_WAIT_SECONDS, source="*")
    assert wait is not None
    assert wait.count == 1


def test_metric_names_follow_the_convention() -> None:
    names = [value for name, value in vars(inst).items() if name.endswith(("_TOTAL", "_SECONDS"))]
    assert len(names) == 14
    for name in names:
        assert re.fullmatch(r"coalestra_[a-z_]+_(total|seconds)", name), name
        assert name.endswith("_total") == (name.split("_")[-1] == "total")


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
        helper.retry("rest", 2, 0.1)


def test_queue_full_from_a_full_buffered_sink_is_counted_not_raised() -> None:
    gate, entered = threading.Event(), threading.Event()

    class Blocking:
        def emit(self, event_type: str, **payload: Any) -> None:
            entered.set()
            gate.wait()

    events = BufferedEventSink(Blocking(), max_pending=1, overflow=BufferOverflowPolicy.RAISE)
    helper = Instrumentation(NullMetrics(), events)
    try:
        helper.build_started("a", 1)  # in flight, held by the downstream
        assert entered.wait(10.0)
        helper.build_started("b", 1)  # queued: the queue is now full
        helper.build_started("c", 1)  # queue.Full inside the sink: swallowed, counted
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
    helper.build_finished("s", 0.1, 1, 1, 0, "complete")  # RuntimeError in the sink: swallowed
    assert helper.sink_failures == 2
    assert metrics.stats().enqueued == 0


def test_enabled_reflects_the_sinks() -> None:
    assert Instrumentation(NullMetrics(), NullEventSink()).enabled is False
    assert Instrumentation(InMemoryMetrics(), NullEventSink()).enabled is True
    assert Instrumentation(NullMetrics(), RecordingEvents()).enabled is True


def test_disabled_half_is_not_called() -> None:
    events = RecordingEvents()
    helper = Instrumentation(NullMetrics(), events)
    helper.cache_lookups({("market", "price"): 5}, {}, {})  # metrics only
    helper.single_flight_joined(2)
    helper.capacity_wait("rest", 0.1)
    assert events.events == []
    metrics = RecordingMetrics()
    helper = Instrumentation(metrics, NullEventSink())
    helper.build_started("s", 10)  # event only
    assert metrics.records == []


def test_enum_values_become_plain_label_text() -> None:
    metrics = RecordingMetrics()
    Instrumentation(metrics, NullEventSink()).circuit_transition("ws", "source", State.OPEN)
    (record,) = metrics.records
    assert record.labels["state"] == "open"
    assert type(record.labels["state"]) is str


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
    helper.publication(key, "ws", "published")
    assert await metrics.aclose() is True
    assert await events.aclose() is True
    labels = {
        "source": "ws",
        "status": "published",
        "resource_namespace": "market",
        "resource_name": "price",
    }
    assert downstream_metrics.counter(inst.PUBLICATIONS_TOTAL, **labels) == 1
    assert downstream_events.events == [
        (
            inst.EVENT_PUBLICATION,
            {"resource": "market:price:BTCUSDT?venue=spot", "source": "ws", "status": "published"},
        )
    ]


def test_cache_lookups_report_one_increment_per_nonzero_type() -> None:
    metrics = RecordingMetrics()
    helper = Instrumentation(metrics, NullEventSink())
    helper.cache_lookups({("market", "price"): 5, ("market", "book"): 0}, {}, {})
    assert metrics.records == [
        MetricRecord(
            "increment",
            inst.CACHE_HITS_TOTAL,
            5,
            {"resource_namespace": "market", "resource_name": "price"},
        )
    ]
