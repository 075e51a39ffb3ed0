"""OpenTelemetryTracer on a real SnapshotBuilder: span names, links, attributes and errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

pytest.importorskip(
    "opentelemetry.sdk", reason="opentelemetry-sdk is not installed (pip install coalestra[dev])"
)

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import coalestra
from coalestra import (
    CallableBatchSource,
    CallableDerivedSource,
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    RefreshMode,
    ResourceKey,
    RetryPolicy,
    Snapshot,
    SnapshotBuilder,
    SnapshotBuildError,
    SourceResiliencePolicy,
)
from coalestra.integrations.otel import BUILD_SPAN_NAME, SOURCE_SPAN_NAME, OpenTelemetryTracer
from coalestra.sync import SyncSnapshotBuilder
from coalestra.testing import VirtualClock

NO_RETRY = RetryPolicy(max_attempts=1)
LONG = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)


def price(subject: str) -> ResourceKey:
    return ResourceKey("market", "price", subject)


def is_price(key: ResourceKey) -> bool:
    return key.namespace == "market" and key.name == "price"


def single(
    name: str,
    priority: int = 10,
    *,
    delay: float = 0.0,
    fail: Exception | None = None,
    wait: asyncio.Event | None = None,
    **options: Any,
) -> CallableSource:
    async def fetch(key: ResourceKey, _context: FetchContext) -> str:
        if wait is not None:
            await wait.wait()
        if delay:
            await asyncio.sleep(delay)
        if fail is not None:
            raise fail
        return key.subject or ""

    return CallableSource(name=name, priority=priority, supports=is_price, fetcher=fetch, **options)


def traced(
    sources: Sequence[Any], clock: VirtualClock, provider: TracerProvider, **options: Any
) -> SnapshotBuilder:
    options.setdefault("retry_policy", NO_RETRY)
    options.setdefault("default_policy", LONG)
    return SnapshotBuilder(
        sources, clock=clock, tracer=OpenTelemetryTracer(tracer_provider=provider), **options
    )


def finished(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, ...]:
    return tuple(exporter.get_finished_spans())


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def build_of(spans: Sequence[ReadableSpan], snapshot_id: str) -> ReadableSpan:
    (build,) = [
        span
        for span in named(spans, BUILD_SPAN_NAME)
        if span.attributes and span.attributes["coalestra.snapshot_id"] == snapshot_id
    ]
    return build


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [
        span
        for span in spans
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_build_span_with_one_child_per_source_call(
    clock: VirtualClock, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    builder = traced([single("rest", delay=0.05)], clock, provider)
    await builder.build([price("BTC"), price("ETH")], deadline_seconds=5.0, snapshot_id="cold")
    await builder.build([price("BTC"), price("ETH")], snapshot_id="warm")
    spans = finished(exporter)

    cold = build_of(spans, "cold")
    assert cold.parent is None  # no span was current where build() was awaited
    assert attributes(cold) == {
        "coalestra.snapshot_id": "cold",
        "coalestra.keys": 2,
        "coalestra.deadline_seconds": 5.0,
        "coalestra.cache_hits": 0,
        "coalestra.cache_misses": 2,
        "coalestra.stale_values": 0,
        "coalestra.failed": 0,
        "coalestra.outcome": "complete",
    }
    calls = children(spans, cold)
    assert [span.name for span in calls] == [SOURCE_SPAN_NAME] * 2
    for call in calls:
        assert attributes(call) == {
            "coalestra.source": "rest",
            "coalestra.keys": 1,
            "coalestra.attempt": 1,
            "coalestra.outcome": "success",
        }
        assert call.context is not None
        assert cold.context is not None
        assert call.context.trace_id == cold.context.trace_id
        assert call.status.status_code is StatusCode.UNSET
    warm = build_of(spans, "warm")
    assert attributes(warm)["coalestra.cache_hits"] == 2
    assert "coalestra.deadline_seconds" not in attributes(warm)
    assert children(spans, warm) == []
    assert {span.instrumentation_scope.name for span in spans} == {"coalestra"}
    assert {span.instrumentation_scope.version for span in spans} == {coalestra.__version__}
    await builder.aclose()


async def test_the_callers_current_span_is_the_build_parent(
    clock: VirtualClock, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    builder = traced([single("rest")], clock, provider)
    with provider.get_tracer("app").start_as_current_span("request") as request:
        await builder.build([price("BTC")], snapshot_id="inside")
    spans = finished(exporter)

    build = build_of(spans, "inside")
    assert build.parent is not None
    assert build.parent.span_id == request.get_span_context().span_id
    (call,) = children(spans, build)
    assert call.context is not None
    assert call.context.trace_id == request.get_span_context().trace_id
    await builder.aclose()


async def test_a_batch_call_is_one_span_with_its_key_count(
    clock: VirtualClock, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async def fetch(keys: tuple[ResourceKey, ...], _context: FetchContext) -> dict[Any, str]:
        return {key: key.subject or "" for key in keys}

    rest = CallableBatchSource(name="rest", priority=10, supports=is_price, fetcher=fetch)
    builder = traced([rest], clock, provider)
    await builder.build([price(s) for s in ("A", "B", "C")], snapshot_id="batch")
    spans = finished(exporter)

    (call,) = children(spans, build_of(spans, "batch"))
    assert attributes(call)["coalestra.keys"] == 3
    await builder.aclose()


async def test_a_failing_source_and_its_retry_are_error_spans(
    clock: VirtualClock, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    retry = RetryPolicy(max_attempts=2, base_delay_seconds=0.01, jitter_ratio=0.0)
    stream = single(
        "stream",
        100,
        fail=ConnectionError("down"),
        resilience_policy=SourceResiliencePolicy(retry=retry),
    )
    builder = traced([stream, single("rest")], clock, provider)
    snapshot = await builder.build([price("BTC")], snapshot_id="fallback")
    assert snapshot.value(price("BTC")) == "BTC"
    spans = finished(exporter)

    build = build_of(spans, "fallback")
    calls = children(spans, build)
    failed = [call for call in calls if attributes(call)["coalestra.source"] == "stream"]
    assert [attributes(call)["coalestra.attempt"] for call in failed] == [1, 2]
    for call in failed:
        assert attributes(call)["coalestra.outcome"] == "error"
        assert attributes(call)["error.type"] == "ConnectionError"
        assert call.status.status_code is StatusCode.ERROR
        assert call.status.description == "ConnectionError: down"
        (event,) = call.events
        assert event.name == "exception"
        assert dict(event.attributes or {})["exception.type"] == "ConnectionError"
    (served,) = [call for call in calls if attributes(call)["coalestra.source"] == "rest"]
    assert attributes(served)["coalestra.outcome"] == "success"
    # The build itself succeeded: the fallback served the key.
    assert build.status.status_code is StatusCode.UNSET
    assert attributes(build)["coalestra.outcome"] == "complete"
    await builder.aclose()


async def test_a_source_timeout_is_outcome_timeout(
    clock: VirtualClock, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    builder = traced([single("slow", delay=1.0, timeout_seconds=0.1)], clock, provider)
    snapshot = await builder.build([price("BTC")], strict=False, snapshot_id="late")
    assert snapshot.errors
    spans = finished(exporter)

    build = build_of(spans, "late")
    (call,) = children(spans, build)
    assert attributes(call)["coalestra.outcome"] == "timeout"
    assert attributes(call)["error.type"] == "SourceTimeoutError"
    assert call.status.status_code is StatusCode.ERROR
    assert attributes(build)["coalestra.outcome"] == "partial"
    assert build.status.status_code is StatusCode.UNSET  # strict=False: nothing was raised
    await builder.aclose()


async def test_a_failed_build_is_an_error_span(
    clock: VirtualClock, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    builder = traced([single("stream", fail=ConnectionError("down"))], clock, provider)
    with pytest.raises(SnapshotBuildError):
        await builder.build([price("BTC")], snapshot_id="failed")
    spans = finished(exporter)

    build = build_of(spans, "failed")
    assert attributes(build)["coalestra.outcome"] == "failed"
    assert attributes(build)["coalestra.failed"] == 1
    assert attributes(build)["error.type"] == "SnapshotBuildError"
    assert build.status.status_code is StatusCode.ERROR
    assert [event.name for event in build.events] == ["exception"]
    (call,) = children(spans, build)
    assert call.status.status_code is StatusCode.ERROR
    await builder.aclose()


async def test_a_shared_flight_belongs_to_the_build_that_started_it(
    clock: VirtualClock, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    source = single("rest", delay=0.05)
    builder = traced([source], clock, provider)
    owner = asyncio.create_task(builder.build([price("BTC")], snapshot_id="owner"))
    await asyncio.sleep(0.01)  # the owner's flight is running
    joiner = asyncio.create_task(builder.build([price("BTC")], snapshot_id="joiner"))
    await asyncio.gather(owner, joiner)
    spans = finished(exporter)

    (call,) = named(spans, SOURCE_SPAN_NAME)  # fetched once for both builds
    assert children(spans, build_of(spans, "owner")) == [call]
    assert children(spans, build_of(spans, "joiner")) == []
    await builder.aclose()


async def test_a_background_refresh_is_a_child_of_the_build_that_scheduled_it(
    clock: VirtualClock, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    policy = FreshnessPolicy(
        ttl_seconds=1.0, max_stale_seconds=61.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
    )
    builder = traced([single("rest", delay=0.05)], clock, provider, default_policy=policy)
    await builder.build([price("BTC")], snapshot_id="cold")
    await asyncio.sleep(2.0)  # past the TTL, within the stale window
    stale = await builder.build([price("BTC")], snapshot_id="stale")
    assert stale[price("BTC")].stale
    await builder.wait_for_refreshes()
    spans = finished(exporter)

    stale_build = build_of(spans, "stale")
    assert attributes(stale_build)["coalestra.stale_values"] == 1
    (refresh,) = children(spans, stale_build)  # made in the engine's background task
    assert attributes(refresh)["coalestra.outcome"] == "success"
    assert len(named(spans, SOURCE_SPAN_NAME)) == 2
    await builder.aclose()


async def test_a_cancelled_build_is_not_an_error(
    clock: VirtualClock, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    builder = traced([single("rest", wait=asyncio.Event())], clock, provider)
    build = asyncio.create_task(builder.build([price("BTC")], snapshot_id="cancelled"))
    await asyncio.sleep(0.01)
    build.cancel()
    with pytest.raises(asyncio.CancelledError):
        await build
    await builder.aclose()
    spans = finished(exporter)

    span = build_of(spans, "cancelled")
    assert attributes(span)["coalestra.outcome"] == "cancelled"
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()
    (call,) = children(spans, span)  # nobody waits for the flight any more: it is cancelled
    assert attributes(call)["coalestra.outcome"] == "cancelled"
    assert call.status.status_code is StatusCode.UNSET


async def test_derived_keys_and_their_dependencies_are_children_of_the_build(
    clock: VirtualClock, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    total = ResourceKey("account", "total", "main")

    def add(_key: ResourceKey, deps: Snapshot, _context: FetchContext) -> str:
        return "+".join(str(deps.value(key)) for key in (price("A"), price("B")))

    derived = CallableDerivedSource(
        name="sum",
        priority=10,
        supports=lambda key: key == total,
        dependencies=lambda _key: (price("A"), price("B")),
        deriver=add,
    )
    builder = traced([single("rest"), derived], clock, provider)
    snapshot = await builder.build([total], snapshot_id="derived")
    assert snapshot.value(total) == "A+B"
    spans = finished(exporter)

    build = build_of(spans, "derived")
    # Dependencies are resolved as their own flights before the derivation: all are siblings.
    calls = children(spans, build)
    assert sorted(attributes(call)["coalestra.source"] for call in calls) == ["rest", "rest", "sum"]
    assert len(named(spans, SOURCE_SPAN_NAME)) == 3
    await builder.aclose()


def test_the_tracer_name_is_the_instrumentation_scope(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = OpenTelemetryTracer(provider, tracer_name="shop.snapshots")
    with tracer.build_span("s", 1, None) as span:
        span.set_attribute("coalestra.outcome", "complete")
    (recorded,) = finished(exporter)

    assert recorded.instrumentation_scope.name == "shop.snapshots"
    assert attributes(recorded)["coalestra.outcome"] == "complete"


async def test_without_a_provider_the_global_one_is_used(clock: VirtualClock) -> None:
    # No global SDK provider is set in the test process: spans are no-ops, builds still work.
    builder = SnapshotBuilder([single("rest")], clock=clock, tracer=OpenTelemetryTracer())
    snapshot = await builder.build([price("BTC")])

    assert snapshot.value(price("BTC")) == "BTC"
    await builder.aclose()


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: OpenTelemetryTracer(tracer_provider="sdk"), TypeError),  # type: ignore[arg-type]
        (lambda: OpenTelemetryTracer(tracer_name=""), ValueError),
        (lambda: OpenTelemetryTracer(tracer_name=3), TypeError),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_are_refused(make: Callable[[], object], error: type[Exception]) -> None:
    with pytest.raises(error):
        make()


def test_the_sync_facade_keeps_the_callers_trace(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    # The facade runs builds on its own loop thread; the caller's context travels with them.
    builder = SyncSnapshotBuilder(traced_on_system_clock(provider))
    try:
        with provider.get_tracer("app").start_as_current_span("request") as request:
            builder.build([price("BTC")], snapshot_id="sync")
    finally:
        builder.close()
    spans = finished(exporter)

    build = build_of(spans, "sync")
    assert build.parent is not None
    assert build.parent.span_id == request.get_span_context().span_id
    assert [attributes(call)["coalestra.source"] for call in children(spans, build)] == ["rest"]


def traced_on_system_clock(provider: TracerProvider) -> SnapshotBuilder:
    return SnapshotBuilder(
        [single("rest")], retry_policy=NO_RETRY, tracer=OpenTelemetryTracer(provider)
    )
