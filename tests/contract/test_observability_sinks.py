"""Contract facts B-OBS-1 and B-OBS-2: in-memory metric summaries and the buffered sinks."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import pytest

from coalestra import (
    BufferedEventSink,
    BufferedMetricsSink,
    BufferOverflowPolicy,
    InMemoryMetrics,
    NullEventSink,
    NullMetrics,
)

WAIT = 10.0


# --- B-OBS-1 ------------------------------------------------------------------------------------


def test_b_obs_1_observe_average_of_two_observations() -> None:
    metrics = InMemoryMetrics()
    metrics.observe("latency_ms", 5.0, source="rest")
    metrics.observe("latency_ms", 15.0, source="rest")
    summary = metrics.summary("latency_ms", source="rest")
    assert summary is not None
    assert (summary.count, summary.total, summary.minimum, summary.maximum) == (2, 20.0, 5.0, 15.0)
    assert summary.average == 10.0


def test_b_obs_1_summary_is_none_without_observations() -> None:
    metrics = InMemoryMetrics()
    assert metrics.summary("latency_ms") is None
    metrics.observe("latency_ms", 1.0, source="rest")
    assert metrics.summary("latency_ms") is None  # the label set must match exactly
    assert metrics.summary("latency_ms", source="cache") is None


def test_b_obs_1_counter_matches_the_exact_label_set() -> None:
    metrics = InMemoryMetrics()
    metrics.increment("calls_total", source="rest", status="ok")
    metrics.increment("calls_total", 2, source="rest", status="ok")
    assert metrics.counter("calls_total", source="rest", status="ok") == 3
    assert metrics.counter("calls_total", status="ok", source="rest") == 3  # order is irrelevant
    assert metrics.counter("calls_total", source="rest") == 0  # a subset is no match
    assert metrics.counter("calls_total", source="rest", status="ok", extra="x") == 0
    assert metrics.counter("other_total") == 0


# --- B-OBS-2 ------------------------------------------------------------------------------------

_CALLS: list[tuple[str, Callable[[Any], None]]] = [
    ("emit", lambda sink: sink.emit("built", snapshot_id="s")),
    ("increment", lambda sink: sink.increment("calls_total", source="rest")),
    ("observe", lambda sink: sink.observe("latency_ms", 1.0, source="rest")),
]


def _sink_for(method: str) -> Any:
    return (
        BufferedEventSink(NullEventSink())
        if method == "emit"
        else BufferedMetricsSink(NullMetrics())
    )


@pytest.mark.parametrize(("method", "call"), _CALLS, ids=[name for name, _ in _CALLS])
def test_b_obs_2_records_after_close_raise(method: str, call: Callable[[Any], None]) -> None:
    sink = _sink_for(method)
    call(sink)
    assert sink.close() is True
    with pytest.raises(RuntimeError, match=r"^buffered sink is closed$"):
        call(sink)
    stats = sink.stats()
    assert (stats.enqueued, stats.delivered, stats.dropped) == (1, 1, 0)


class _Held:
    """A downstream that holds its first delivery until released, so later records queue up."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.seen: list[str] = []

    def emit(self, event_type: str, **payload: Any) -> None:
        self.entered.set()
        self.gate.wait(WAIT)
        self.seen.append(event_type)


def _blocked_sink(policy: BufferOverflowPolicy | None) -> tuple[BufferedEventSink, _Held]:
    downstream = _Held()
    if policy is None:
        sink = BufferedEventSink(downstream, max_pending=2)
    else:
        sink = BufferedEventSink(downstream, max_pending=2, overflow=policy)
    sink.emit("first")  # in flight, held by the downstream
    assert downstream.entered.wait(WAIT)
    sink.emit("a")
    sink.emit("b")  # the queue is now full
    return sink, downstream


def test_b_obs_2_raise_policy_raises_queue_full_and_counts_no_drop() -> None:
    sink, downstream = _blocked_sink(BufferOverflowPolicy.RAISE)
    try:
        with pytest.raises(queue.Full):
            sink.emit("refused")
        assert sink.stats().dropped == 0
    finally:
        downstream.gate.set()
    assert sink.close() is True
    assert downstream.seen == ["first", "a", "b"]
    assert sink.stats().dropped == 0


def test_b_obs_2_option_full_is_also_an_overflow_error() -> None:
    sink, downstream = _blocked_sink(BufferOverflowPolicy.RAISE)
    try:
        with pytest.raises(OverflowError):
            sink.emit("refused")
    finally:
        downstream.gate.set()
    assert sink.close() is True


@pytest.mark.parametrize(
    ("policy", "delivered"),
    [
        (None, ["first", "c", "d"]),  # the default is DROP_OLDEST
        (BufferOverflowPolicy.DROP_OLDEST, ["first", "c", "d"]),
        (BufferOverflowPolicy.DROP_NEWEST, ["first", "a", "b"]),
    ],
    ids=["default", "drop_oldest", "drop_newest"],
)
def test_b_obs_2_drop_policies_count_each_drop(
    policy: BufferOverflowPolicy | None, delivered: list[str]
) -> None:
    sink, downstream = _blocked_sink(policy)
    try:
        sink.emit("c")
        sink.emit("d")
        assert sink.stats().dropped == 2
    finally:
        downstream.gate.set()
    assert sink.close() is True
    assert downstream.seen == delivered
    assert sink.stats().dropped == 2


@pytest.mark.parametrize("method", ["emit", "increment"])
def test_b_obs_2_a_negative_flush_timeout_is_refused(method: str) -> None:
    sink = _sink_for(method)
    with pytest.raises(ValueError, match=r"^timeout cannot be negative$"):
        sink.flush(timeout=-0.1)
    assert sink.flush(timeout=0) is True
    assert sink.close() is True
