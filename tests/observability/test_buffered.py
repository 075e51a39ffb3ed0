"""BufferedEventSink / BufferedMetricsSink: overflow, flush, close, failures, the worker thread.

The downstream is a stand-in whose delivery a test holds and releases with ``threading.Event``s,
so the queue fills deterministically and no test sleeps or asserts on wall time.
"""

from __future__ import annotations

import gc
import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalestra.core import EventSink, MetricsSink
from coalestra.observability import (
    BufferedEventSink,
    BufferedMetricsSink,
    BufferedSinkStats,
    BufferOverflowPolicy,
    InMemoryMetrics,
    NullEventSink,
    NullMetrics,
)

WAIT = 10.0  # bound on real waits for the worker; only reached when something is broken


def _counts(stats: BufferedSinkStats) -> tuple[int | bool, ...]:
    """The six 0.5.7 counters (0.6 appended max_pending, peak_pending, worker_alive, ...)."""
    return (
        stats.enqueued,
        stats.delivered,
        stats.dropped,
        stats.failures,
        stats.pending,
        stats.closed,
    )


class GatedEvents:
    """An event sink that records deliveries and can hold delivery of chosen event types.

    ``hold(t)`` makes delivering ``t`` block until ``release``; ``entered(t)`` is set once the
    worker started delivering ``t``, so a test knows which record is in flight.
    """

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.payloads: list[dict[str, Any]] = []
        self._gates: dict[str, threading.Event] = {}
        self._entered: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def hold(self, event_type: str) -> None:
        self._gates[event_type] = threading.Event()

    def release(self, event_type: str | None = None) -> None:
        for name, gate in self._gates.items():
            if event_type is None or name == event_type:
                gate.set()

    def entered(self, event_type: str) -> threading.Event:
        with self._lock:
            return self._entered.setdefault(event_type, threading.Event())

    def emit(self, event_type: str, **payload: Any) -> None:
        self.entered(event_type).set()
        gate = self._gates.get(event_type)
        if gate is not None:
            gate.wait()
        self.delivered.append(event_type)
        self.payloads.append(payload)


class FailingEvents:
    """Raises on event types listed in ``failing``; records the others."""

    def __init__(self, *failing: str) -> None:
        self.failing = set(failing)
        self.delivered: list[str] = []

    def emit(self, event_type: str, **payload: Any) -> None:
        if event_type in self.failing:
            raise RuntimeError(f"cannot write {event_type}")
        self.delivered.append(event_type)


@pytest.fixture
def gated() -> Iterator[GatedEvents]:
    sink = GatedEvents()
    yield sink
    sink.release()  # never leave a worker blocked, even when a test fails


def _workers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("coalestra-Buffered")}


def _start_blocked(gated: GatedEvents, sink: BufferedEventSink) -> None:
    """Put a held record ``"first"`` in flight, so later records stay queued."""
    gated.hold("first")
    sink.emit("first")
    assert gated.entered("first").wait(WAIT)


# --- overflow policies --------------------------------------------------------------------


def test_drop_oldest_evicts_the_oldest_queued_records(gated: GatedEvents) -> None:
    sink = BufferedEventSink(gated, max_pending=3)
    _start_blocked(gated, sink)
    for index in range(1, 6):
        sink.emit(f"e{index}")
    stats = sink.stats()
    assert (stats.enqueued, stats.dropped, stats.pending) == (6, 2, 4)
    gated.release()
    assert sink.close() is True
    assert gated.delivered == ["first", "e3", "e4", "e5"]
    assert _counts(sink.stats()) == (6, 4, 2, 0, 0, True)


def test_drop_newest_discards_the_new_records(gated: GatedEvents) -> None:
    sink = BufferedEventSink(gated, max_pending=3, overflow=BufferOverflowPolicy.DROP_NEWEST)
    _start_blocked(gated, sink)
    for index in range(1, 6):
        sink.emit(f"e{index}")
    stats = sink.stats()
    assert (stats.enqueued, stats.dropped, stats.pending) == (4, 2, 4)
    gated.release()
    assert sink.close() is True
    assert gated.delivered == ["first", "e1", "e2", "e3"]
    assert _counts(sink.stats()) == (4, 4, 2, 0, 0, True)


def test_raise_refuses_the_new_record_with_queue_full(gated: GatedEvents) -> None:
    sink = BufferedEventSink(gated, max_pending=2, overflow=BufferOverflowPolicy.RAISE)
    _start_blocked(gated, sink)
    sink.emit("e1")
    sink.emit("e2")
    with pytest.raises(queue.Full, match="2 records pending"):
        sink.emit("e3")
    with pytest.raises(OverflowError):  # also what our 0.x raised
        sink.emit("e3")
    assert sink.stats().dropped == 0  # refused to the caller, not dropped
    gated.release()
    assert sink.flush(timeout=WAIT) is True
    sink.emit("e4")  # room again: accepted
    assert sink.close() is True
    assert gated.delivered == ["first", "e1", "e2", "e4"]
    assert _counts(sink.stats()) == (4, 4, 0, 0, 0, True)


def test_overflow_refuses_the_policy_string_value(gated: GatedEvents) -> None:
    # 0.6 (B7): only a BufferOverflowPolicy member; our 0.x accepted its string value.
    with pytest.raises(TypeError, match="overflow"):
        BufferedEventSink(gated, max_pending=1, overflow="drop_newest")  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(
    max_pending=st.integers(min_value=1, max_value=6),
    count=st.integers(min_value=0, max_value=15),
    policy=st.sampled_from([BufferOverflowPolicy.DROP_OLDEST, BufferOverflowPolicy.DROP_NEWEST]),
)
def test_delivery_matches_a_model_of_the_bounded_queue(
    max_pending: int, count: int, policy: BufferOverflowPolicy
) -> None:
    downstream = GatedEvents()
    sink = BufferedEventSink(downstream, max_pending=max_pending, overflow=policy)
    try:
        _start_blocked(downstream, sink)
        names = [f"e{index}" for index in range(count)]
        for name in names:
            sink.emit(name)
        if policy is BufferOverflowPolicy.DROP_OLDEST:
            kept = names[-max_pending:] if count else []
        else:
            kept = names[:max_pending]
        downstream.release()
        assert sink.close() is True
    finally:
        downstream.release()
    dropped = max(0, count - max_pending)
    assert downstream.delivered == ["first", *kept]
    stats = sink.stats()
    assert (stats.delivered, stats.dropped, stats.pending) == (1 + len(kept), dropped, 0)
    # Every accepted record is delivered, failed, pending or evicted.
    evicted = dropped if policy is BufferOverflowPolicy.DROP_OLDEST else 0
    assert stats.enqueued == stats.delivered + stats.failures + stats.pending + evicted


# --- downstream failures ------------------------------------------------------------------


def test_a_raising_downstream_is_counted_and_never_propagates() -> None:
    downstream = FailingEvents("bad")
    sink = BufferedEventSink(downstream)
    for name in ("ok1", "bad", "ok2", "bad", "ok3"):
        sink.emit(name)  # never raises, whatever the downstream does
    assert sink.flush(timeout=WAIT) is True
    assert downstream.delivered == ["ok1", "ok2", "ok3"]
    stats = sink.stats()
    assert (stats.delivered, stats.failures, stats.pending) == (3, 2, 0)
    assert sink.close() is True


def test_a_downstream_raising_base_exception_does_not_stop_delivery() -> None:
    class Exiting:
        def __init__(self) -> None:
            self.delivered: list[str] = []

        def emit(self, event_type: str, **payload: Any) -> None:
            if event_type == "exit":
                raise SystemExit(3)
            self.delivered.append(event_type)

    downstream = Exiting()
    sink = BufferedEventSink(downstream)
    sink.emit("exit")
    sink.emit("after")
    assert sink.close() is True
    assert downstream.delivered == ["after"]
    assert sink.stats().failures == 1


# --- flush ----------------------------------------------------------------------------------


def test_flush_times_out_while_the_downstream_blocks(gated: GatedEvents) -> None:
    sink = BufferedEventSink(gated)
    _start_blocked(gated, sink)
    assert sink.flush(timeout=0) is False
    gated.release()
    assert sink.flush() is True
    assert sink.stats().pending == 0
    assert sink.close() is True


def test_flush_waits_only_for_records_accepted_before_the_call(gated: GatedEvents) -> None:
    sink = BufferedEventSink(gated)
    _start_blocked(gated, sink)
    sink.emit("before")
    results: list[bool] = []
    flusher = threading.Thread(target=lambda: results.append(sink.flush(timeout=WAIT)))
    flusher.start()
    # Only once the flusher waits may "after" be offered; the buffer counts its flush waiters.
    while sink._buffer._flush_waiters == 0 and flusher.is_alive():
        threading.Event().wait(0.001)
    gated.hold("after")
    sink.emit("after")
    gated.release("first")
    flusher.join(WAIT)
    assert results == [True]  # returned although "after" is still held in the downstream
    assert gated.entered("after").wait(WAIT)
    assert sink.stats().pending == 1
    gated.release()
    assert sink.close() is True
    assert gated.delivered == ["first", "before", "after"]


def test_flush_with_nothing_pending_returns_true_without_a_worker() -> None:
    before = _workers()
    sink = BufferedEventSink(NullEventSink())
    assert sink.flush(timeout=0) is True
    assert _workers() == before  # the worker starts lazily, at the first record
    assert sink.close() is True


def test_flush_from_inside_the_downstream_does_not_deadlock() -> None:
    results: list[bool] = []

    class Reentrant:
        sink: BufferedEventSink

        def emit(self, event_type: str, **payload: Any) -> None:
            results.append(self.sink.flush())

    downstream = Reentrant()
    downstream.sink = BufferedEventSink(downstream)
    downstream.sink.emit("x")
    assert downstream.sink.close() is True
    assert results == [False]


# --- close ----------------------------------------------------------------------------------


def test_close_drains_queued_records(gated: GatedEvents) -> None:
    sink = BufferedEventSink(gated)
    _start_blocked(gated, sink)
    sink.emit("a")
    sink.emit("b")
    gated.release()
    assert sink.close(drain=True) is True
    assert gated.delivered == ["first", "a", "b"]
    assert _counts(sink.stats()) == (3, 3, 0, 0, 0, True)


def test_close_without_drain_discards_and_counts_the_queue(gated: GatedEvents) -> None:
    sink = BufferedEventSink(gated)
    _start_blocked(gated, sink)
    sink.emit("a")
    sink.emit("b")
    assert sink.close(drain=False, timeout=0) is False  # the worker is still in the sink
    stats = sink.stats()
    assert (stats.dropped, stats.pending, stats.closed) == (2, 1, True)
    gated.release()
    assert sink.close(timeout=WAIT) is True  # 0.6: True once the worker has stopped
    assert gated.delivered == ["first"]
    assert _counts(sink.stats()) == (3, 1, 2, 0, 0, True)


def test_close_timeout_returns_false_and_counts_what_it_abandons(gated: GatedEvents) -> None:
    before = _workers()
    sink = BufferedEventSink(gated)
    _start_blocked(gated, sink)
    (worker,) = _workers() - before
    sink.emit("queued")
    assert sink.close(timeout=0) is False
    stats = sink.stats()
    assert (stats.delivered, stats.dropped, stats.pending) == (0, 1, 1)
    assert worker.is_alive()  # still inside the downstream with "first"
    assert sink.stats().shutdown_timeout_count == 1
    gated.release()
    assert sink.close(timeout=WAIT) is True  # the worker stopped now
    assert not worker.is_alive()
    assert gated.delivered == ["first"]  # "queued" was abandoned, not delivered late


def test_close_is_idempotent() -> None:
    downstream = GatedEvents()
    sink = BufferedEventSink(downstream)
    sink.emit("a")
    assert sink.close() is True
    assert sink.close() is True
    assert sink.close(drain=False) is True
    assert downstream.delivered == ["a"]
    assert _counts(sink.stats()) == (1, 1, 0, 0, 0, True)


def test_records_after_close_raise_runtime_error() -> None:
    downstream = GatedEvents()
    sink = BufferedEventSink(downstream)
    assert sink.close() is True
    with pytest.raises(RuntimeError, match=r"^buffered sink is closed$"):
        sink.emit("late")
    assert downstream.delivered == []
    assert _counts(sink.stats()) == (0, 0, 0, 0, 0, True)


def test_close_ends_the_worker_thread() -> None:
    before = _workers()
    sink = BufferedEventSink(NullEventSink())
    assert _workers() == before
    sink.emit("start")
    (worker,) = _workers() - before
    assert worker.daemon  # never keeps the interpreter alive
    assert sink.close() is True
    assert not worker.is_alive()
    assert worker not in threading.enumerate()


def test_context_manager_closes_and_drains() -> None:
    downstream = GatedEvents()
    with BufferedEventSink(downstream) as sink:
        assert isinstance(sink, BufferedEventSink)
        sink.emit("inside", n=1)
    assert sink.stats().closed is True
    assert downstream.delivered == ["inside"]
    assert downstream.payloads == [{"n": 1}]


def test_metrics_context_manager_closes_and_drains() -> None:
    downstream = InMemoryMetrics()
    with BufferedMetricsSink(downstream) as sink:
        assert isinstance(sink, BufferedMetricsSink)
        sink.increment("m_total", source="rest")
    assert sink.stats().closed is True
    assert downstream.counter("m_total", source="rest") == 1


async def test_aclose_closes_from_async_code() -> None:
    downstream = GatedEvents()
    sink = BufferedEventSink(downstream)
    sink.emit("a")
    assert await sink.aclose() is True
    assert downstream.delivered == ["a"]
    assert sink.stats().closed is True


async def test_aclose_without_drain_reports_loss(gated: GatedEvents) -> None:
    sink = BufferedEventSink(gated)
    _start_blocked(gated, sink)
    sink.emit("queued")
    assert await sink.aclose(drain=False, timeout=0) is False
    gated.release()
    assert await sink.aclose(timeout=WAIT) is True  # the worker stopped (the record was lost)
    assert gated.delivered == ["first"]


def test_a_sink_dropped_without_close_still_delivers_and_ends_its_worker() -> None:
    downstream = GatedEvents()
    before = _workers()
    sink = BufferedEventSink(downstream)
    sink.emit("orphan")
    (worker,) = _workers() - before
    del sink
    gc.collect()
    worker.join(WAIT)
    assert not worker.is_alive()
    assert downstream.delivered == ["orphan"]


# --- metrics sink ---------------------------------------------------------------------------


def test_metrics_sink_replays_increments_and_observations() -> None:
    downstream = InMemoryMetrics()
    sink = BufferedMetricsSink(downstream)
    sink.increment("coalestra_builds_total", outcome="complete")
    sink.increment("coalestra_builds_total", 2, outcome="complete")
    sink.observe("coalestra_build_duration_seconds", 0.5, outcome="complete")
    sink.observe("coalestra_build_duration_seconds", 1.5, outcome="complete")
    assert sink.close() is True
    assert downstream.counter("coalestra_builds_total", outcome="complete") == 3
    summary = downstream.summary("coalestra_build_duration_seconds", outcome="complete")
    assert summary is not None
    assert (summary.count, summary.total, summary.minimum, summary.maximum) == (2, 2.0, 0.5, 1.5)
    assert _counts(sink.stats()) == (4, 4, 0, 0, 0, True)


def test_metrics_sink_counts_downstream_failures() -> None:
    class Broken:
        def increment(self, metric: str, value: int = 1, **labels: str) -> None:
            raise ConnectionError("exporter down")

        def observe(self, metric: str, value: float, **labels: str) -> None:
            raise ConnectionError("exporter down")

    sink = BufferedMetricsSink(Broken())
    sink.increment("m_total")
    sink.observe("m_seconds", 1.0)
    assert sink.close() is True
    stats = sink.stats()
    assert (stats.delivered, stats.failures) == (0, 2)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.increment("", 1), ValueError),
        (lambda s: s.increment("m_total", -1), ValueError),
        (lambda s: s.increment("m_total", 1.5), TypeError),
        (lambda s: s.increment("m_total", source=3), TypeError),
        (lambda s: s.observe("m_seconds", float("nan")), ValueError),
        (lambda s: s.observe("m_seconds", "1"), TypeError),
        (lambda s: s.observe(None, 1.0), TypeError),
    ],
)
def test_metrics_sink_rejects_bad_records_at_the_call(call: Any, error: type[Exception]) -> None:
    sink = BufferedMetricsSink(NullMetrics())
    with pytest.raises(error):
        call(sink)
    assert sink.stats().enqueued == 0
    assert sink.close() is True


# --- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_pending": 0}, ValueError, "max_pending"),
        ({"max_pending": True}, TypeError, "max_pending"),
        ({"max_pending": "10"}, TypeError, "max_pending"),
        ({"overflow": "drop_everything"}, TypeError, "overflow"),  # 0.6: strings refused
    ],
)
def test_constructors_validate_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        BufferedEventSink(NullEventSink(), **kwargs)
    with pytest.raises(error, match=match):
        BufferedMetricsSink(NullMetrics(), **kwargs)


def test_downstream_must_implement_the_protocol() -> None:
    with pytest.raises(TypeError, match="EventSink"):
        BufferedEventSink(NullMetrics())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="MetricsSink"):
        BufferedMetricsSink(NullEventSink())  # type: ignore[arg-type]


def test_event_type_is_validated() -> None:
    sink = BufferedEventSink(NullEventSink())
    with pytest.raises(ValueError, match="event_type"):
        sink.emit(" ")
    with pytest.raises(TypeError, match="event_type"):
        sink.emit(3)  # type: ignore[arg-type]
    assert sink.stats().enqueued == 0
    assert sink.close() is True


def test_buffered_sinks_are_sinks_themselves() -> None:
    events = BufferedEventSink(NullEventSink())
    metrics = BufferedMetricsSink(NullMetrics())
    assert isinstance(events, EventSink)
    assert isinstance(metrics, MetricsSink)
    # So they nest: a buffered sink can feed another.
    outer = BufferedEventSink(events)
    outer.emit("x")
    assert outer.close() is True
    assert events.close() is True
    assert events.stats().delivered == 1
    assert metrics.close() is True


# --- product page ---------------------------------------------------------------------------


def test_product_page_buffered_observability(tmp_path: Path) -> None:
    class FileEventSink:
        """A stand-in ``file_event_sink``: one JSON line per event."""

        def __init__(self, path: Path) -> None:
            self.path = path

        def emit(self, event_type: str, **payload: Any) -> None:
            with self.path.open("a") as file:
                file.write(json.dumps({"event": event_type, **payload}) + "\n")

    file_event_sink = FileEventSink(tmp_path / "events.jsonl")
    prometheus_adapter = InMemoryMetrics()  # stand-in exporter

    events = BufferedEventSink(file_event_sink, max_pending=10_000)
    metrics = BufferedMetricsSink(prometheus_adapter, max_pending=10_000)

    events.emit("build_finished", resource="market:price:BTCUSDT?venue=spot")
    metrics.increment("coalestra_cache_hits_total", resource_namespace="market", resource_name="p")

    # During shutdown
    events.close()
    metrics.close()

    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"event": "build_finished", "resource": "market:price:BTCUSDT?venue=spot"}
    ]
    assert (
        prometheus_adapter.counter(
            "coalestra_cache_hits_total", resource_namespace="market", resource_name="p"
        )
        == 1
    )
    assert events.stats().closed
    assert metrics.stats().closed


# --- interpreter exit -----------------------------------------------------------------------

_EXIT_SCRIPT = """
import atexit, sys, threading
import coalestra.observability._buffer as buffer_module
from coalestra.observability import BufferedEventSink

buffer_module._EXIT_DRAIN_SECONDS = 0.2  # bounds the wait for the stuck sink at exit
exiting = threading.Event()
atexit.register(exiting.set)  # registered last, so it runs before the sinks' exit hook

class FileSink:
    def emit(self, event_type, **payload):
        exiting.wait()  # deliver only once the interpreter is exiting
        threading.Event().wait(0.01)  # and late enough that a daemon thread alone would lose it
        with open(sys.argv[1], "a") as file:
            file.write(event_type + "\\n")

class Stuck:
    def emit(self, event_type, **payload):
        threading.Event().wait()  # never returns

stuck = BufferedEventSink(Stuck())
stuck.emit("never delivered")
written = BufferedEventSink(FileSink())
written.emit("queued before exit")
# Neither sink is closed: exit must drain the second and not hang on the first.
"""


def test_interpreter_exit_drains_unclosed_sinks_and_never_hangs(tmp_path: Path) -> None:
    output = tmp_path / "events.txt"
    result = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, str(output)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert output.read_text() == "queued before exit\n"
