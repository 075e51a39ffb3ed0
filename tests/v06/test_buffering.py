"""Section 6 of the 0.6 API: observability buffering as an explicit builder choice (keeping the
0.5.7 default of direct calls), buffer health, bounded buffered shutdown; the buffered sinks'
0.6 changes (overflow type check, close semantics, new stats fields), async and sync."""

from __future__ import annotations

import asyncio
import math
import pickle
import threading
from typing import Any

import pytest

from coalestra import (
    BufferedEventSink,
    BufferedMetricsSink,
    BufferedSinkStats,
    BufferOverflowPolicy,
    BuilderHealthReason,
    CallableSource,
    CoalestraError,
    InMemoryMetrics,
    LoggingEventSink,
    NullEventSink,
    NullMetrics,
    ObservabilityShutdownTimeoutError,
    ResourceKey,
    SnapshotBuilder,
    SyncSnapshotBuilder,
)
from coalestra.testing import VirtualClock

KEY = ResourceKey("md", "quote", "A")
WAIT = 5.0  # a generous real-time bound for waits that end as soon as a thread is done


class Recorder:
    """An event sink remembering events, the threads they arrived on, and being closed."""

    def __init__(self, log: list[str] | None = None) -> None:
        self.events: list[str] = []
        self.threads: set[int] = set()
        self.closed = False
        self.log = log if log is not None else []

    def emit(self, event_type: str, **payload: Any) -> None:
        self.events.append(event_type)
        self.threads.add(threading.get_ident())

    def close(self) -> None:
        self.closed = True
        self.log.append("events closed")


class Gated(Recorder):
    """Blocks in ``emit`` until released."""

    def __init__(self, log: list[str] | None = None) -> None:
        super().__init__(log)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def emit(self, event_type: str, **payload: Any) -> None:
        self.entered.set()
        assert self.gate.wait(WAIT)
        super().emit(event_type, **payload)


class Failing(Recorder):
    def emit(self, event_type: str, **payload: Any) -> None:
        raise RuntimeError("sink down")


class Declared(Recorder):
    coalestra_non_blocking = 1  # truthy, not True


class DeclaredFalse(Recorder):
    coalestra_non_blocking = 0


async def fetch(key: ResourceKey, ctx: Any) -> str:
    return "v"


def source() -> CallableSource[Any]:
    return CallableSource(name="feed", priority=1, supports=lambda key: True, fetcher=fetch)


def builder(clock: Any = None, **options: Any) -> SnapshotBuilder:
    return SnapshotBuilder([source()], clock=clock, **options)


# --- which sinks are buffered ---------------------------------------------------------------


@pytest.mark.parametrize("mode", [None, False])
def test_default_and_false_call_sinks_directly(mode: bool | None) -> None:
    events, metrics = LoggingEventSink(), InMemoryMetrics()
    options = {} if mode is None else {"buffer_observability": mode}
    made = builder(events=events, metrics=metrics, **options)
    assert made.events is events
    assert made.metrics is metrics
    assert made.buffer_observability is mode


def test_the_default_is_none() -> None:
    assert builder().buffer_observability is None


async def test_direct_calls_reach_the_sink_before_build_returns(clock: VirtualClock) -> None:
    events = Recorder()
    async with builder(clock, events=events) as made:
        await made.build([KEY])
        assert "snapshot_built" in events.events  # inspected right after the build
        assert events.threads == {threading.get_ident()}


@pytest.mark.parametrize("mode", [None, False, True, "auto"])
def test_an_already_buffered_sink_is_reused_never_wrapped(mode: Any) -> None:
    events = BufferedEventSink(Recorder())
    metrics = BufferedMetricsSink(InMemoryMetrics())
    made = builder(events=events, metrics=metrics, buffer_observability=mode)
    assert made.events is events
    assert made.metrics is metrics
    events.close()
    metrics.close()


def test_auto_buffers_sinks_that_do_not_declare_non_blocking() -> None:
    logging_sink = LoggingEventSink()
    made = builder(events=logging_sink, metrics=InMemoryMetrics(), buffer_observability="auto")
    assert isinstance(made.events, BufferedEventSink)
    assert isinstance(made.metrics, InMemoryMetrics)  # declares coalestra_non_blocking
    assert made.buffer_observability == "auto"


@pytest.mark.parametrize(
    ("sink", "buffered"), [(Declared, False), (DeclaredFalse, True), (Recorder, True)]
)
def test_auto_reads_a_truthy_coalestra_non_blocking(sink: type[Recorder], buffered: bool) -> None:
    made = builder(events=sink(), buffer_observability="auto")
    assert isinstance(made.events, BufferedEventSink) is buffered


def test_true_buffers_every_sink_that_is_not_buffered() -> None:
    made = builder(events=Declared(), metrics=InMemoryMetrics(), buffer_observability=True)
    assert isinstance(made.events, BufferedEventSink)
    assert isinstance(made.metrics, BufferedMetricsSink)


@pytest.mark.parametrize("mode", [True, "auto"])
def test_null_sinks_get_no_buffer(mode: Any) -> None:
    made = builder(buffer_observability=mode)
    assert isinstance(made.events, NullEventSink)
    assert isinstance(made.metrics, NullMetrics)


def test_which_sinks_declare_non_blocking() -> None:
    for sink in (NullMetrics(), InMemoryMetrics(), NullEventSink()):
        assert sink.coalestra_non_blocking is True  # type: ignore[attr-defined]
    with BufferedEventSink(NullEventSink()) as events, BufferedMetricsSink(NullMetrics()) as m:
        assert events.coalestra_non_blocking is True
        assert m.coalestra_non_blocking is True
    assert not getattr(LoggingEventSink(), "coalestra_non_blocking", False)


def test_options_are_readable_with_their_defaults() -> None:
    made = builder()
    assert made.observability_max_pending == 10000
    assert made.observability_overflow is BufferOverflowPolicy.DROP_OLDEST
    assert made.observability_shutdown_timeout_seconds == 5.0
    assert made.observability_drain_on_shutdown is True
    other = builder(
        observability_max_pending=3,
        observability_overflow=BufferOverflowPolicy.RAISE,
        observability_shutdown_timeout_seconds=2,
        observability_drain_on_shutdown=False,
    )
    assert other.observability_max_pending == 3
    assert other.observability_overflow is BufferOverflowPolicy.RAISE
    assert other.observability_shutdown_timeout_seconds == 2.0
    assert other.observability_drain_on_shutdown is False


def test_the_builder_buffer_uses_the_options() -> None:
    made = builder(
        events=Recorder(),
        buffer_observability=True,
        observability_max_pending=7,
        observability_overflow=BufferOverflowPolicy.DROP_NEWEST,
    )
    assert made.events.stats().max_pending == 7  # type: ignore[attr-defined]
    made.events.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("options", "error", "name"),
    [
        ({"buffer_observability": 1}, TypeError, "buffer_observability"),
        ({"buffer_observability": "yes"}, ValueError, "buffer_observability"),
        ({"buffer_observability": "AUTO"}, ValueError, "buffer_observability"),
        ({"observability_max_pending": "10"}, TypeError, "observability_max_pending"),
        ({"observability_max_pending": True}, TypeError, "observability_max_pending"),
        ({"observability_max_pending": 10.0}, TypeError, "observability_max_pending"),
        ({"observability_max_pending": 0}, ValueError, "observability_max_pending"),
        ({"observability_overflow": "drop_oldest"}, TypeError, "observability_overflow"),
        ({"observability_overflow": None}, TypeError, "observability_overflow"),
        ({"observability_shutdown_timeout_seconds": "5"}, TypeError, "shutdown_timeout"),
        ({"observability_shutdown_timeout_seconds": None}, TypeError, "shutdown_timeout"),
        ({"observability_shutdown_timeout_seconds": True}, TypeError, "shutdown_timeout"),
        ({"observability_shutdown_timeout_seconds": 0}, ValueError, "shutdown_timeout"),
        ({"observability_shutdown_timeout_seconds": -1.0}, ValueError, "shutdown_timeout"),
        ({"observability_shutdown_timeout_seconds": math.nan}, ValueError, "shutdown_timeout"),
        ({"observability_shutdown_timeout_seconds": math.inf}, ValueError, "shutdown_timeout"),
        ({"observability_drain_on_shutdown": 1}, TypeError, "observability_drain_on_shutdown"),
        ({"observability_drain_on_shutdown": None}, TypeError, "observability_drain"),
    ],
)
def test_bad_options(options: dict[str, Any], error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=name):
        builder(**options)


# --- delivery -------------------------------------------------------------------------------


async def test_buffered_delivery_happens_on_the_worker_thread(clock: VirtualClock) -> None:
    events = Recorder()
    made = builder(clock, events=events, buffer_observability="auto")
    await made.build([KEY])
    await made.aclose()
    assert "snapshot_built" in events.events
    assert threading.get_ident() not in events.threads


async def test_a_slow_sink_never_holds_a_build(clock: VirtualClock) -> None:
    events = Gated()
    made = builder(clock, events=events, buffer_observability=True)
    for _ in range(3):
        await made.build([KEY])  # returns although the sink is stuck on the first event
    assert events.entered.wait(WAIT)
    assert events.events == []
    events.gate.set()
    await made.aclose()
    assert events.events.count("snapshot_built") == 3


async def test_downstream_errors_are_counted_never_raised(clock: VirtualClock) -> None:
    made = builder(clock, events=Failing(), buffer_observability=True)
    await made.build([KEY])
    await made.aclose()
    health = await made.health_snapshot()
    assert health.observability_failure_count >= 1
    assert health.observability_buffers["events"].failures == health.observability_failure_count


# --- health ---------------------------------------------------------------------------------


async def test_health_reports_every_buffered_sink_in_use(clock: VirtualClock) -> None:
    given = BufferedMetricsSink(InMemoryMetrics(), max_pending=50)
    made = builder(clock, events=Recorder(), metrics=given, buffer_observability="auto")
    await made.build([KEY])
    health = await made.health_snapshot()
    assert set(health.observability_buffers) == {"events", "metrics"}
    assert health.observability_buffers["metrics"].max_pending == 50
    assert health.observability_buffers["events"].max_pending == 10000
    assert all(stats.worker_alive for stats in health.observability_buffers.values())
    await made.aclose()
    given.close()


async def test_health_without_buffers_has_empty_observability_fields(clock: VirtualClock) -> None:
    async with builder(clock, events=Recorder()) as made:
        health = await made.health_snapshot()
    assert dict(health.observability_buffers) == {}
    assert (health.observability_pending, health.observability_dropped_count) == (0, 0)


async def test_health_sums_pending_peaks_and_drops(clock: VirtualClock) -> None:
    events = Gated()
    made = builder(
        clock,
        events=events,
        buffer_observability=True,
        observability_max_pending=2,
        observability_overflow=BufferOverflowPolicy.DROP_NEWEST,
    )
    for _ in range(3):
        await made.build([KEY])
    assert events.entered.wait(WAIT)
    health = await made.health_snapshot()
    stats = health.observability_buffers["events"]
    # 2 queued (the bound), plus the record inside the sink if it was taken before the
    # queue filled up.
    assert health.observability_pending == stats.pending in (2, 3)
    assert health.observability_peak_pending == stats.peak_pending >= stats.pending
    assert health.observability_dropped_count == stats.dropped > 0
    assessment = health.assess()
    assert BuilderHealthReason.OBSERVABILITY_BACKLOG_HIGH in assessment.reasons
    events.gate.set()
    await made.aclose()
    after = await made.health_snapshot()
    assert after.observability_buffers["events"].closed is True
    assert after.observability_buffers["events"].worker_alive is False
    assert BuilderHealthReason.OBSERVABILITY_WORKER_STOPPED not in after.assess().reasons


# --- shutdown -------------------------------------------------------------------------------


async def test_aclose_drains_then_closes_the_original_sinks(clock: VirtualClock) -> None:
    log: list[str] = []
    events = Recorder(log)
    made = builder(clock, events=events, buffer_observability=True, manage_lifecycle=True)
    await made.build([KEY])
    await made.aclose()
    assert "snapshot_built" in events.events
    assert events.closed is True
    assert made.events.stats().closed is True  # type: ignore[attr-defined]
    await made.wait_for_observability_shutdown()  # nothing pending: returns at once
    await made.wait_for_background_shutdown()


async def test_a_given_buffered_sink_is_not_closed_by_the_builder(clock: VirtualClock) -> None:
    given = BufferedEventSink(Recorder())
    made = builder(clock, events=given, buffer_observability=True)
    await made.build([KEY])
    await made.aclose()
    assert given.stats().closed is False
    assert given.close() is True


async def test_aclose_without_drain_discards_the_queue(clock: VirtualClock) -> None:
    events = Gated()
    made = builder(
        clock, events=events, buffer_observability=True, observability_drain_on_shutdown=False
    )
    for _ in range(3):
        await made.build([KEY])
    assert events.entered.wait(WAIT)
    closing = asyncio.ensure_future(made.aclose())
    # The buffer closes (discarding its queue) in a worker thread: no event to await.
    while not made.events.stats().closed:  # type: ignore[attr-defined]  # noqa: ASYNC110
        await asyncio.sleep(0)
    events.gate.set()
    await closing
    stats = (await made.health_snapshot()).observability_buffers["events"]
    assert stats.dropped >= 1  # queued behind the stuck record, discarded at close
    assert stats.delivered + stats.dropped == stats.enqueued
    assert len(events.events) == stats.delivered


async def test_aclose_timeout_raises_and_keeps_downstream_open(clock: VirtualClock) -> None:
    events = Gated()
    made = builder(clock, events=events, buffer_observability=True, manage_lifecycle=True)
    await made.build([KEY])
    await made.build([KEY])
    assert events.entered.wait(WAIT)
    with pytest.raises(ObservabilityShutdownTimeoutError) as caught:
        await made.aclose(observability_shutdown_timeout_seconds=0.005)
    error = caught.value
    assert isinstance(error, CoalestraError)
    assert isinstance(error, TimeoutError)
    assert error.timeout_seconds == 0.005
    assert set(error.pending_components) == {"events"}
    assert error.pending_records == error.pending_components["events"] >= 2
    assert made.closed
    health = await made.health_snapshot()
    assert health.observability_shutdown_incomplete is True
    assert health.observability_shutdown_timeout_count == 1
    assert BuilderHealthReason.OBSERVABILITY_SHUTDOWN_INCOMPLETE in health.assess().reasons
    assert events.closed is False  # stays open while the worker may still deliver
    events.gate.set()
    await made.wait_for_observability_shutdown()
    assert events.closed is True
    after = await made.health_snapshot()
    assert after.observability_shutdown_incomplete is False
    assert after.observability_buffers["events"].worker_alive is False


async def test_wait_for_background_shutdown_waits_for_late_buffers(clock: VirtualClock) -> None:
    events = Gated()
    made = builder(clock, events=events, buffer_observability=True, manage_lifecycle=True)
    await made.build([KEY])
    assert events.entered.wait(WAIT)
    with pytest.raises(ObservabilityShutdownTimeoutError):
        await made.aclose(observability_shutdown_timeout_seconds=0.005)
    events.gate.set()
    await made.wait_for_background_shutdown()
    assert events.closed is True
    assert (await made.health_snapshot()).observability_shutdown_incomplete is False


async def test_the_builder_option_is_the_default_budget(clock: VirtualClock) -> None:
    events = Gated()
    made = builder(
        clock,
        events=events,
        buffer_observability=True,
        observability_shutdown_timeout_seconds=0.005,
    )
    await made.build([KEY])
    assert events.entered.wait(WAIT)
    with pytest.raises(ObservabilityShutdownTimeoutError) as caught:
        await made.aclose()
    assert caught.value.timeout_seconds == 0.005
    events.gate.set()
    await made.wait_for_observability_shutdown()


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("1", TypeError),
        (True, TypeError),
        (0, ValueError),
        (-1, ValueError),
        (math.nan, ValueError),
    ],
)
async def test_aclose_checks_the_override_before_closing_anything(
    clock: VirtualClock, value: Any, error: type[Exception]
) -> None:
    made = builder(clock, events=Recorder(), buffer_observability=True)
    with pytest.raises(error, match="observability_shutdown_timeout_seconds"):
        await made.aclose(observability_shutdown_timeout_seconds=value)
    assert made.closed is False
    await made.build([KEY])
    await made.aclose()


def test_the_timeout_error_pickles_and_names_what_was_pending() -> None:
    error = ObservabilityShutdownTimeoutError(
        timeout_seconds=2, pending_components={"events": 3, "metrics": 1}
    )
    assert error.timeout_seconds == 2.0
    assert error.pending_records == 4
    assert "events=3" in str(error)
    assert "2 s" in str(error)
    with pytest.raises(TypeError):
        error.pending_components["x"] = 1  # type: ignore[index]
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.timeout_seconds, dict(copy.pending_components)) == (
        2.0,
        {"events": 3, "metrics": 1},
    )
    assert str(copy) == str(error)


# --- sync -----------------------------------------------------------------------------------


def test_sync_builds_deliver_through_the_buffer_and_close_drains() -> None:
    events = Recorder()
    with SyncSnapshotBuilder(builder(events=events, buffer_observability="auto")) as sync:
        sync.build([KEY])
        assert isinstance(sync.builder.events, BufferedEventSink)
    assert "snapshot_built" in events.events


def test_sync_close_raises_the_timeout_after_late_workers_finish() -> None:
    events = Gated()
    sync = SyncSnapshotBuilder(
        builder(events=events, buffer_observability=True, manage_lifecycle=True),
        shutdown_timeout_seconds=0.005,
    )
    sync.build([KEY])
    assert events.entered.wait(WAIT)
    buffer = sync.builder.events

    def release_after_the_timeout() -> None:
        # Released only once the budget has passed, so close() must see the timeout.
        while buffer.stats().shutdown_timeout_count == 0:  # type: ignore[attr-defined]
            threading.Event().wait(0.001)
        events.gate.set()

    threading.Thread(target=release_after_the_timeout, daemon=True).start()
    with pytest.raises(ObservabilityShutdownTimeoutError):
        sync.close()
    assert events.closed is True  # the late worker finished before the loop stopped
    assert sync.closed


# --- the buffered sinks' 0.6 changes --------------------------------------------------------


@pytest.mark.parametrize("sink", [BufferedEventSink, BufferedMetricsSink])
def test_overflow_must_be_the_enum(sink: Any) -> None:
    downstream = NullEventSink() if sink is BufferedEventSink else NullMetrics()
    with pytest.raises(TypeError, match="overflow"):
        sink(downstream, overflow="drop_oldest")
    with pytest.raises(TypeError, match="overflow"):
        sink(downstream, overflow=None)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"timeout": -1}, ValueError),
        ({"timeout": "1"}, TypeError),
        ({"drain": 1}, TypeError),
        ({"drain": None}, TypeError),
    ],
)
def test_close_rejects_bad_arguments(arguments: dict[str, Any], error: type[Exception]) -> None:
    sink = BufferedEventSink(NullEventSink())
    with pytest.raises(error):
        sink.close(**arguments)
    assert sink.close() is True


def test_close_returns_whether_the_worker_stopped() -> None:
    events = Gated()
    sink = BufferedEventSink(events)
    sink.emit("first")
    assert events.entered.wait(WAIT)
    sink.emit("queued")
    assert sink.close(timeout=0.0) is False  # the worker is still inside the downstream
    assert sink.stats().shutdown_timeout_count == 1
    events.gate.set()
    assert sink.close(timeout=WAIT) is True  # now it stopped (the queued record was dropped)
    assert sink.stats().shutdown_timeout_count == 1
    assert sink.stats().worker_alive is False


def test_close_without_drain_returns_true_once_the_worker_ends() -> None:
    sink = BufferedEventSink(Recorder())
    sink.emit("a")
    assert sink.close(drain=False) is True


def test_a_sink_never_used_closes_true() -> None:
    assert BufferedMetricsSink(NullMetrics()).close(timeout=0.0) is True


def test_stats_report_bound_peak_and_worker() -> None:
    events = Gated()
    sink = BufferedEventSink(events, max_pending=5)
    stats = sink.stats()
    assert (stats.max_pending, stats.peak_pending, stats.worker_alive) == (5, 0, True)
    assert stats.shutdown_timeout_count == 0
    sink.emit("a")
    assert events.entered.wait(WAIT)
    sink.emit("b")
    sink.emit("c")
    assert sink.stats().peak_pending == 3
    events.gate.set()
    assert sink.close() is True
    stats = sink.stats()
    assert (stats.peak_pending, stats.pending, stats.worker_alive) == (3, 0, False)


def test_stats_validate_the_new_fields() -> None:
    with pytest.raises(TypeError, match="worker_alive"):
        BufferedSinkStats(0, 0, 0, 0, 0, False, worker_alive=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="peak_pending"):
        BufferedSinkStats(0, 0, 0, 0, 0, False, peak_pending=-1)
    assert BufferedSinkStats(0, 0, 0, 0, 0, False).max_pending == 0
