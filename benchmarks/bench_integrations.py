"""Cost of the Prometheus and OpenTelemetry integrations on the engine's builds.

Target: a warm build of 1,000 cached keys with both integrations on (``PrometheusMetricsSink``
on a private registry, ``OpenTelemetryTracer`` on an SDK provider) costs <= 1.5x the same build
with the null sinks and tracer.

The tracer exports through a ``SimpleSpanProcessor`` to an exporter that drops spans: every span
is ended and exported inline, an upper bound of what a ``BatchSpanProcessor`` costs the loop.
Rounds alternate between the two builders so machine noise hits both alike; figures are the best
of several rounds. The cold figures (one span and a few metric calls per source call) are for
information: they have no target.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from coalestra.core import FetchContext, FreshnessPolicy, ResourceKey
from coalestra.orchestration import SnapshotBuilder

try:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from prometheus_client import CollectorRegistry

    from coalestra.integrations.otel import OpenTelemetryTracer
    from coalestra.integrations.prometheus import PrometheusMetricsSink
except ImportError as missing:  # the dev extra installs both; say so instead of a traceback
    print(f"bench_integrations: skipped, {missing.name} is not installed (pip install -e .[dev])")
    sys.exit(1)

LONG = FreshnessPolicy(ttl_seconds=3600.0, max_stale_seconds=3600.0)
WARM_KEYS = 1_000
COLD_KEYS = 200
ROUNDS = 15
BUILDS_PER_ROUND = 10
TARGET = 1.5


class _DropSpans(SpanExporter):
    """Receives every ended span and keeps none (memory stays flat over the rounds)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _Memory:
    """An in-memory async single-key source."""

    name = "memory"
    priority = 10

    def supports(self, key: ResourceKey) -> bool:
        return key.namespace == "bench"

    async def fetch(self, key: ResourceKey, context: FetchContext) -> Any:
        return key.subject


def _keys(count: int, prefix: str) -> tuple[ResourceKey, ...]:
    names = ("price", "book", "trade", "funding")  # a few resource types, as in real requests
    return tuple(ResourceKey("bench", names[i % 4], f"{prefix}{i}") for i in range(count))


def _plain() -> SnapshotBuilder:
    return SnapshotBuilder([_Memory()], default_policy=LONG)


def _instrumented() -> SnapshotBuilder:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_DropSpans()))
    return SnapshotBuilder(
        [_Memory()],
        default_policy=LONG,
        metrics=PrometheusMetricsSink(CollectorRegistry()),
        tracer=OpenTelemetryTracer(tracer_provider=provider),
    )


async def _timed(run: Callable[[], Awaitable[object]], repeats: int) -> float:
    """Seconds per call, over ``repeats`` calls."""
    started = time.perf_counter()
    for _ in range(repeats):
        await run()
    return (time.perf_counter() - started) / repeats


async def _warm(plain: SnapshotBuilder, instrumented: SnapshotBuilder) -> tuple[float, float]:
    keys = _keys(WARM_KEYS, "warm")
    await plain.build(keys)  # fill both caches; every later build is all hits
    await instrumented.build(keys)
    best_plain = best_instrumented = float("inf")
    for _ in range(ROUNDS):
        seconds = await _timed(lambda: plain.build(keys), BUILDS_PER_ROUND)
        best_plain = min(best_plain, seconds)
        seconds = await _timed(lambda: instrumented.build(keys), BUILDS_PER_ROUND)
        best_instrumented = min(best_instrumented, seconds)
    return best_plain, best_instrumented


async def _cold(plain: SnapshotBuilder, instrumented: SnapshotBuilder) -> tuple[float, float]:
    best_plain = best_instrumented = float("inf")
    for round_number in range(ROUNDS):
        keys = _keys(COLD_KEYS, f"cold{round_number}-")  # new keys: every one is a source call
        best_plain = min(best_plain, await _once(plain, keys))
        best_instrumented = min(best_instrumented, await _once(instrumented, keys))
    return best_plain, best_instrumented


async def _once(builder: SnapshotBuilder, keys: tuple[ResourceKey, ...]) -> float:
    started = time.perf_counter()
    await builder.build(keys)
    return time.perf_counter() - started


def _report(label: str, keys: int, plain: float, instrumented: float, target: bool) -> None:
    ratio = instrumented / plain
    print(f"{label}_{keys}_keys_null_sinks: {plain * 1e6:.0f} us/build")
    print(f"{label}_{keys}_keys_prometheus_and_otel: {instrumented * 1e6:.0f} us/build")
    print(f"{label}_overhead: {(instrumented - plain) * 1e6 / keys:.3f} us/key")
    note = f"target <= {TARGET}x" if target else "no target: one span per source call"
    print(f"{label}_ratio: {ratio:.2f}x ({note})")


async def _main() -> None:
    plain, instrumented = _plain(), _instrumented()
    try:
        _report("warm_build", WARM_KEYS, *await _warm(plain, instrumented), target=True)
        _report("cold_build", COLD_KEYS, *await _cold(plain, instrumented), target=False)
    finally:
        await plain.aclose()
        await instrumented.aclose()


def _sink_calls() -> None:
    sink = PrometheusMetricsSink(CollectorRegistry())
    labels = {"source": "rest", "status": "success"}
    calls = 100_000
    started = time.perf_counter()
    for _ in range(calls):
        sink.increment("source_fetch_total", 1, **labels)
    print(f"prometheus_sink_increment: {(time.perf_counter() - started) / calls * 1e6:.2f} us/call")
    started = time.perf_counter()
    for _ in range(calls):
        sink.observe("source_fetch_latency_ms", 10.0, source="rest")
    print(f"prometheus_sink_observe: {(time.perf_counter() - started) / calls * 1e6:.2f} us/call")


def main() -> None:
    asyncio.run(_main())
    _sink_calls()


if __name__ == "__main__":
    main()
