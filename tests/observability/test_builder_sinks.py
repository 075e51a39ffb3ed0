"""Observability never fails or slows a build: through a real builder, with sinks that raise
and sinks whose downstream blocks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from coalestra import (
    BufferedEventSink,
    BufferedMetricsSink,
    CallableSource,
    FetchContext,
    InMemoryMetrics,
    ResourceKey,
    SnapshotBuilder,
)
from coalestra.testing import VirtualClock

KEYS = [ResourceKey("market", "price", f"S{i}", {"venue": "spot"}) for i in range(20)]


def source() -> CallableSource:
    async def fetch(key: ResourceKey, context: FetchContext) -> str:
        return key.subject

    return CallableSource(
        name="rest", priority=1, supports=lambda key: key.namespace == "market", fetcher=fetch
    )


class Raising:
    """A metrics and event sink whose every call raises."""

    calls = 0

    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        self._boom()

    def observe(self, metric: str, value: float, **labels: str) -> None:
        self._boom()

    def emit(self, event_type: str, **payload: Any) -> None:
        self._boom()

    def _boom(self) -> None:
        self.calls += 1
        raise RuntimeError("sink down")


class Blocking:
    """A downstream that blocks every delivery until released (a stuck exporter)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.delivered = 0

    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        self._wait()

    def observe(self, metric: str, value: float, **labels: str) -> None:
        self._wait()

    def emit(self, event_type: str, **payload: Any) -> None:
        self._wait()

    def _wait(self) -> None:
        self.release.wait(timeout=10)
        self.delivered += 1


@pytest.fixture
def blocking() -> Iterator[Blocking]:
    downstream = Blocking()
    yield downstream
    downstream.release.set()


async def test_sinks_that_raise_do_not_fail_builds(clock: VirtualClock) -> None:
    sink = Raising()
    async with SnapshotBuilder([source()], clock=clock, metrics=sink, events=sink) as builder:
        snapshot = await builder.build(KEYS)
        again = await builder.build(KEYS)
        await builder.publisher.publish(KEYS[0], "pushed", source="stream")
    assert snapshot.complete
    assert again.complete
    assert snapshot.value(KEYS[3]) == "S3"
    assert sink.calls > 0  # the sinks were really called, and raised


async def test_a_blocked_downstream_does_not_slow_builds(
    clock: VirtualClock, blocking: Blocking
) -> None:
    events = BufferedEventSink(blocking, max_pending=1000)
    metrics = BufferedMetricsSink(blocking, max_pending=1000)
    async with SnapshotBuilder([source()], clock=clock, metrics=metrics, events=events) as builder:
        start = clock.monotonic()
        for _ in range(5):
            snapshot = await builder.build(KEYS)
        assert snapshot.complete
        # Virtual time stands still while a thread works; no build waited for the exporter.
        assert clock.monotonic() == start
    assert events.stats().enqueued > 0
    assert metrics.stats().enqueued > 0
    assert blocking.delivered <= 1  # the exporter is still stuck on its first record
    blocking.release.set()
    assert events.close(timeout=5.0)
    assert metrics.close(timeout=5.0)
    assert events.stats().delivered == events.stats().enqueued


async def test_metric_labels_never_carry_subjects_or_qualifiers(clock: VirtualClock) -> None:
    metrics = InMemoryMetrics()
    async with SnapshotBuilder([source()], clock=clock, metrics=metrics) as builder:
        await builder.build(KEYS)
        await builder.build(KEYS)
    # Every recorded series (read off the sink's private table: there is no public listing).
    series = [*metrics._counters, *metrics._observations]
    assert series
    rendered = repr(series)
    for key in KEYS:
        assert f"'{key.subject}'" not in rendered
    assert "spot" not in rendered
    assert "venue" not in rendered
    assert metrics.counter(
        "cache_access_total", status="fresh", resource_namespace="market", resource_name="price"
    ) == len(KEYS)
