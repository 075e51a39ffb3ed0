"""Observability: metrics and events from builds and publications, buffered sinks, health, and
a tracer.

See docs/observability.md. Runs on virtual time: ``python examples/observability.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from coalestra import (
    BufferedEventSink,
    BufferedMetricsSink,
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    InMemoryMetrics,
    LoggingEventSink,
    RefreshMode,
    ResourceKey,
    SnapshotBuilder,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner

BTC = ResourceKey("market", "price", "BTCUSDT", {"venue": "spot"})
ETH = ResourceKey("market", "price", "ETHUSDT", {"venue": "spot"})


class Span:
    def __init__(self, name: str) -> None:
        self.name = name
        self.attributes: dict[str, Any] = {}

    def set_attribute(self, name: str, value: str | bool | int | float) -> None:
        self.attributes[name] = value


class PrintingTracer:
    """A minimal tracer: one span per build and per source call attempt."""

    def __init__(self) -> None:
        self.spans: list[Span] = []

    @contextmanager
    def build_span(
        self, snapshot_id: str, key_count: int, deadline_seconds: float | None
    ) -> Iterator[Span]:
        span = Span(f"build of {key_count} keys")
        self.spans.append(span)
        yield span

    @contextmanager
    def source_span(self, source: str, key_count: int, attempt: int) -> Iterator[Span]:
        span = Span(f"call {source} (attempt {attempt})")
        self.spans.append(span)
        yield span


class Rest:
    def __init__(self) -> None:
        self.calls = 0

    async def fetch(self, key: ResourceKey, context: FetchContext) -> float:
        self.calls += 1
        first = self.calls == 1
        await asyncio.sleep(0.05)
        if first:
            raise ConnectionError("blip")  # the very first call fails: one retry
        return 65000.0 if key.subject == "BTCUSDT" else 3400.0


async def tour(metrics: InMemoryMetrics, events: BufferedEventSink, tracer: PrintingTracer) -> None:
    rest = Rest()
    source = CallableSource(name="rest", priority=10, supports=lambda key: True, fetcher=rest.fetch)
    policy = FreshnessPolicy(
        ttl_seconds=5.0, max_stale_seconds=30.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
    )
    buffered = BufferedMetricsSink(metrics)
    builder = SnapshotBuilder(
        [source],
        clock=VirtualClock(),
        default_policy=policy,
        metrics=buffered,
        events=events,
        tracer=tracer,
        manage_lifecycle=True,  # aclose() closes (drains) the sinks too
    )
    async with builder:
        await builder.build([BTC, ETH])
        await builder.build([BTC, ETH])
        await asyncio.sleep(8)
        await builder.build([BTC, ETH])  # stale: served, refreshed in the background
        await builder.wait_for_refreshes()
        await asyncio.sleep(1)
        await builder.publisher.publish(BTC, 65100.0, source="stream")
        await builder.publisher.invalidate(ETH, reason="stream-gap")
        health = await builder.health_snapshot()
        print(
            f"== health: cache={health.cache}\n   capacity={dict(health.capacity)},"
            f" refreshes running={health.background_refreshes}"
        )
    print(f"== metrics sink: {buffered.stats()}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="   log: %(message)s")
    metrics, tracer = InMemoryMetrics(), PrintingTracer()
    events = BufferedEventSink(LoggingEventSink(), max_pending=1000)
    print("== events, delivered by the buffered sink's worker thread to the logging sink")
    with VirtualTimeRunner() as runner:
        runner.run(tour(metrics, events, tracer))

    price = {"resource_namespace": "market", "resource_name": "price"}
    print("== a few metrics (labels are resource types, never symbols)")
    for name, labels in (
        ("snapshot_build_total", {"status": "success"}),
        ("cache_access_total", {"status": "fresh", **price}),
        ("cache_access_total", {"status": "miss", **price}),
        ("cache_access_total", {"status": "stale_while_revalidate", **price}),
        ("source_fetch_total", {"source": "rest", "status": "success"}),
        ("resource_refresh_total", {"status": "success", **price}),
        ("resource_publish_total", {"source": "stream", "status": "published", **price}),
        ("resource_invalidation_total", price),
    ):
        print(f"   {name}{labels} = {metrics.counter(name, **labels)}")
    latency = metrics.summary("source_fetch_latency_ms", source="rest")
    assert latency is not None
    print(
        f"   source_fetch_latency_ms: {latency.count} call attempts, "
        f"average {latency.average:.0f} ms"
    )
    assert latency.count == 5  # a failed attempt and its retry, one more call, two refreshes
    assert metrics.counter("resource_refresh_total", status="success", **price) == 2
    assert (
        metrics.counter("resource_publish_total", source="stream", status="published", **price) == 1
    )

    print("== spans")
    for span in tracer.spans:
        print(f"   {span.name} {span.attributes}")


if __name__ == "__main__":
    main()
