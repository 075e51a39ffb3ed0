"""The simple sinks: null sinks, LoggingEventSink, InMemoryMetrics; and the public surface."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from coalestra.core import EventSink, MetricsSink
from coalestra.observability import (
    InMemoryMetrics,
    LoggingEventSink,
    NullEventSink,
    NullMetrics,
    ObservationSummary,
)


def test_null_sinks_implement_the_protocols_and_do_nothing() -> None:
    events, metrics = NullEventSink(), NullMetrics()
    assert isinstance(events, EventSink)
    assert isinstance(metrics, MetricsSink)
    assert events.emit("anything", resource="market:price:BTC") is None
    assert metrics.increment("m_total", 5, source="rest") is None
    assert metrics.observe("m_seconds", 0.25, source="rest") is None
    assert repr(events) == "NullEventSink()"
    assert repr(metrics) == "NullMetrics()"


# --- LoggingEventSink -----------------------------------------------------------------------


def test_logging_sink_logs_event_and_payload_at_info(caplog: pytest.LogCaptureFixture) -> None:
    sink = LoggingEventSink()
    with caplog.at_level(logging.INFO, logger="coalestra.events"):
        sink.emit("build_finished", resource="market:price:BTCUSDT?venue=spot", failed=0)
    (record,) = caplog.records
    assert record.name == "coalestra.events"
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        "build_finished resource='market:price:BTCUSDT?venue=spot' failed=0"
    )
    record_data: Any = record
    assert record_data.event_type == "build_finished"
    assert record_data.payload == {"resource": "market:price:BTCUSDT?venue=spot", "failed": 0}


def test_logging_sink_uses_the_given_logger(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.observability.custom")
    sink = LoggingEventSink(logger)
    assert sink.logger is logger
    with caplog.at_level(logging.INFO, logger=logger.name):
        sink.emit("refresh", outcome="completed")
    assert [r.name for r in caplog.records] == [logger.name]


def test_logging_sink_payload_may_use_log_record_attribute_names(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = LoggingEventSink()
    with caplog.at_level(logging.INFO, logger="coalestra.events"):
        sink.emit("odd", name="n", message="m", args="a", levelname="l")  # no KeyError
    (record,) = caplog.records
    record_data: Any = record
    assert record_data.payload == {"name": "n", "message": "m", "args": "a", "levelname": "l"}
    assert record.name == "coalestra.events"


def test_logging_sink_skips_work_below_info(caplog: pytest.LogCaptureFixture) -> None:
    rendered: list[str] = []

    class Loud:
        def __repr__(self) -> str:
            rendered.append("rendered")
            return "Loud()"

    sink = LoggingEventSink()
    with caplog.at_level(logging.WARNING, logger="coalestra.events"):
        sink.emit("quiet", value=Loud())
    assert caplog.records == []
    assert rendered == []


def test_logging_sink_rejects_a_non_logger() -> None:
    with pytest.raises(TypeError, match="logger"):
        LoggingEventSink("coalestra.events")  # type: ignore[arg-type]


# --- InMemoryMetrics ------------------------------------------------------------------------


def test_counters_are_kept_per_exact_label_set() -> None:
    metrics = InMemoryMetrics()
    metrics.increment("hits_total", resource_namespace="market", resource_name="price")
    metrics.increment("hits_total", 4, resource_name="price", resource_namespace="market")
    metrics.increment("hits_total", resource_namespace="market", resource_name="book")
    metrics.increment("hits_total")
    assert metrics.counter("hits_total", resource_name="price", resource_namespace="market") == 5
    assert metrics.counter("hits_total", resource_namespace="market", resource_name="book") == 1
    assert metrics.counter("hits_total") == 1
    assert metrics.counter("hits_total", resource_namespace="market") == 0
    assert metrics.counter("never_total") == 0


def test_summaries_aggregate_observations_per_label_set() -> None:
    metrics = InMemoryMetrics()
    assert metrics.summary("latency_seconds", source="rest") is None
    for value in (0.5, 0.25, 0.75):  # binary fractions: the sum is exact
        metrics.observe("latency_seconds", value, source="rest")
    metrics.observe("latency_seconds", 7, source="ws")
    assert metrics.summary("latency_seconds", source="rest") == ObservationSummary(
        count=3, total=1.5, minimum=0.25, maximum=0.75
    )
    ws = metrics.summary("latency_seconds", source="ws")
    assert ws is not None
    assert (ws.count, ws.total, ws.minimum, ws.maximum, ws.average) == (1, 7.0, 7.0, 7.0, 7.0)
    assert metrics.summary("latency_seconds") is None


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m: m.increment("m_total", -1), ValueError, "value"),
        (lambda m: m.increment("m_total", 1.0), TypeError, "value"),
        (lambda m: m.increment("m_total", True), TypeError, "value"),
        (lambda m: m.increment("", 1), ValueError, "metric"),
        (lambda m: m.increment("m_total", source=None), TypeError, "source"),
        (lambda m: m.observe("m_seconds", float("inf")), ValueError, "value"),
        (lambda m: m.observe("m_seconds", "0.1"), TypeError, "value"),
        (lambda m: m.counter(3), TypeError, "metric"),
    ],
)
def test_in_memory_metrics_validates(call: Any, error: type[Exception], match: str) -> None:
    metrics = InMemoryMetrics()
    with pytest.raises(error, match=match):
        call(metrics)
    assert metrics.counter("m_total") == 0
    assert metrics.summary("m_seconds") is None


def test_in_memory_metrics_is_exact_under_concurrent_writers() -> None:
    metrics = InMemoryMetrics()
    start = threading.Barrier(4)

    def work() -> None:
        start.wait()
        for _ in range(5_000):
            metrics.increment("c_total", source="s")
            metrics.observe("o_seconds", 1.0, source="s")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert metrics.counter("c_total", source="s") == 20_000
    summary = metrics.summary("o_seconds", source="s")
    assert summary is not None
    assert (summary.count, summary.total) == (20_000, 20_000.0)
