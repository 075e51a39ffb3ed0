"""PrometheusMetricsSink on a real SnapshotBuilder: what a scrape shows after known builds."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "prometheus_client", reason="prometheus-client is not installed (pip install coalestra[dev])"
)

from prometheus_client import CollectorRegistry
from tests.integrations.prometheus.conftest import (
    batch,
    names,
    price,
    scrape,
    single,
    subjects_and_qualifiers,
    value,
)

from coalestra import (
    BufferedMetricsSink,
    CircuitBreakerPolicy,
    CircuitScope,
    FreshnessPolicy,
    ResourceKey,
    RetryPolicy,
    SnapshotBuilder,
    SnapshotBuildError,
    SourceResiliencePolicy,
)
from coalestra.integrations.prometheus import PrometheusMetricsSink
from coalestra.observability._names import ALLOWED_LABELS
from coalestra.testing import VirtualClock

PRICE = {"resource_namespace": "market", "resource_name": "price"}
LONG = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)
NO_RETRY = RetryPolicy(max_attempts=1)


def builder_with(
    sources: list[object], clock: VirtualClock, registry: CollectorRegistry, **options: object
) -> SnapshotBuilder:
    options.setdefault("retry_policy", NO_RETRY)
    options.setdefault("default_policy", LONG)
    return SnapshotBuilder(
        sources,  # type: ignore[arg-type]
        clock=clock,
        metrics=PrometheusMetricsSink(registry),
        **options,  # type: ignore[arg-type]
    )


async def test_a_known_sequence_of_builds_scrapes_to_exact_figures(clock: VirtualClock) -> None:
    registry = CollectorRegistry()
    builder = builder_with([single("rest", 10, delay=0.05)], clock, registry)
    wanted = [price("BTCUSDT"), price("ETHUSDT"), price("SOLUSDT")]

    await builder.build(wanted)  # cold: three misses, three source calls of 50 ms each
    await builder.build(wanted)  # warm: three hits
    await builder.build(wanted[:1])  # warm: one hit
    samples = scrape(registry)

    assert value(samples, "coalestra_snapshot_build_total", status="success") == 3
    assert value(samples, "coalestra_cache_access_total", status="miss", **PRICE) == 3
    assert value(samples, "coalestra_cache_access_total", status="fresh", **PRICE) == 4
    fetched = {"source": "rest", "status": "success"}
    assert value(samples, "coalestra_source_fetch_total", **fetched) == 3
    assert value(samples, "coalestra_source_fetch_latency_ms_count", source="rest") == 3
    assert value(samples, "coalestra_source_fetch_latency_ms_sum", source="rest") == (
        pytest.approx(150.0)
    )
    # Latencies are in milliseconds, and so are the default buckets.
    assert value(samples, "coalestra_source_fetch_latency_ms_bucket", le="25.0", source="rest") == 0
    assert value(samples, "coalestra_source_fetch_latency_ms_bucket", le="50.0", source="rest") == 3
    assert value(samples, "coalestra_metrics_sink_failures_total") == 0
    await builder.aclose()


async def test_failed_calls_are_counted(clock: VirtualClock) -> None:
    registry = CollectorRegistry()
    stream = single(
        "stream",
        100,
        fail=ConnectionError("down"),
        resilience_policy=SourceResiliencePolicy(
            retry=RetryPolicy(max_attempts=2, base_delay_seconds=0.01, jitter_ratio=0.0),
            circuit=CircuitBreakerPolicy(scope=CircuitScope.SOURCE, failure_threshold=2),
        ),
    )
    builder = builder_with([stream, batch("rest", 10)], clock, registry)

    snapshot = await builder.build([price("BTCUSDT")])  # stream: attempt 1 fails, retry fails
    assert snapshot.value(price("BTCUSDT")) == "BTCUSDT"  # served by the REST fallback
    await builder.build([price("ETHUSDT")])  # two failures opened the circuit: not called
    samples = scrape(registry)

    assert value(samples, "coalestra_source_fetch_total", source="stream", status="failure") == 1
    blocked = {"source": "stream", "status": "circuit_open"}
    assert value(samples, "coalestra_source_fetch_total", **blocked) == 1
    assert value(samples, "coalestra_source_fetch_latency_ms_count", source="stream") == 2
    assert value(samples, "coalestra_source_batch_call_total", source="rest", status="success") == 2
    assert value(samples, "coalestra_source_batch_size_count", source="rest") == 2
    assert value(samples, "coalestra_snapshot_build_total", status="success") == 2
    await builder.aclose()


async def test_failed_builds_are_labelled_error(clock: VirtualClock) -> None:
    registry = CollectorRegistry()
    builder = builder_with([single("rest", 10)], clock, registry)
    unsupported = ResourceKey("market", "book", "BTCUSDT")

    await builder.build([price("BTCUSDT"), unsupported], strict=False)
    with pytest.raises(SnapshotBuildError):
        await builder.build([price("ETHUSDT"), unsupported])
    samples = scrape(registry)

    assert value(samples, "coalestra_snapshot_build_total", status="success") == 1
    assert value(samples, "coalestra_snapshot_build_total", status="error") == 1
    await builder.aclose()


async def _workload(subjects: int, clock: VirtualClock) -> tuple[dict[object, float], set[str]]:
    """Builds, failures, publications and invalidations over ``subjects`` symbols and accounts."""
    registry = CollectorRegistry()
    account_source = single(
        "accounts", 10, supports=lambda key: key.namespace == "account", delay=0.01
    )
    failing = single("stream", 100, fail=ConnectionError("down"))
    builder = builder_with([failing, batch("rest", 10), account_source], clock, registry)
    keys = [price(f"SYM{i}", venue=("spot", "perp")[i % 2]) for i in range(subjects)]
    keys += [ResourceKey("account", "balance", f"acct-{i:05d}") for i in range(subjects)]
    await builder.build(keys)
    await builder.build(keys)
    await builder.publisher.publish(keys[0], "x", source="stream-push")
    await builder.publisher.invalidate(keys[1], reason="gap")
    await builder.build(keys[:2])
    await builder.aclose()
    return scrape(registry), subjects_and_qualifiers(keys)


async def test_labels_never_name_subjects_or_qualifiers(clock: VirtualClock) -> None:
    samples, identities = await _workload(300, clock)

    label_names = {name for _, labels in samples for name, _ in labels}
    assert label_names <= ALLOWED_LABELS | {"le"}
    label_values = {label for _, labels in samples for _, label in labels}
    assert not label_values & identities
    # 300 cold misses, then the invalidated key once more; per type, never per subject.
    assert value(samples, "coalestra_cache_access_total", status="miss", **PRICE) == 301
    account = {"resource_namespace": "account", "resource_name": "balance"}
    assert value(samples, "coalestra_cache_access_total", status="miss", **account) == 300
    assert (
        value(
            samples,
            "coalestra_resource_publish_total",
            source="stream-push",
            status="published",
            **PRICE,
        )
        == 1
    )


async def test_series_count_does_not_grow_with_subjects(clock: VirtualClock) -> None:
    few, _ = await _workload(30, clock)
    many, _ = await _workload(600, clock)

    assert set(many) == set(few)  # the same series (names and label sets), only values differ


async def test_the_namespace_replaces_the_coalestra_prefix(clock: VirtualClock) -> None:
    registry = CollectorRegistry()
    builder = SnapshotBuilder(
        [single("rest", 10)], clock=clock, metrics=PrometheusMetricsSink(registry, "shop")
    )
    await builder.build([price("BTCUSDT")])
    samples = scrape(registry)

    assert value(samples, "shop_snapshot_build_total", status="success") == 1
    assert value(samples, "shop_cache_access_total", status="miss", **PRICE) == 1
    assert not {name for name in names(samples) if name.startswith("coalestra_")}
    await builder.aclose()


async def test_an_empty_namespace_exposes_bare_names(clock: VirtualClock) -> None:
    registry = CollectorRegistry()
    builder = SnapshotBuilder(
        [single("rest", 10)], clock=clock, metrics=PrometheusMetricsSink(registry, "")
    )
    await builder.build([price("BTCUSDT")])

    assert value(scrape(registry), "snapshot_build_total", status="success") == 1
    await builder.aclose()


async def test_a_misused_metric_never_fails_a_build(clock: VirtualClock) -> None:
    registry = CollectorRegistry()
    sink = PrometheusMetricsSink(registry)
    sink.increment("snapshot_build_total", 1, kind="manual")  # claims the name, other labels
    builder = SnapshotBuilder([single("rest", 10)], clock=clock, metrics=sink)

    snapshot = await builder.build([price("BTCUSDT")])

    assert snapshot.value(price("BTCUSDT")) == "BTCUSDT"
    assert sink.failures == 1  # the build's snapshot_build_total increment, refused
    samples = scrape(registry)
    assert value(samples, "coalestra_metrics_sink_failures_total") == 1
    assert value(samples, "coalestra_cache_access_total", status="miss", **PRICE) == 1
    await builder.aclose()


async def test_the_sink_works_behind_a_buffered_sink(clock: VirtualClock) -> None:
    registry = CollectorRegistry()
    buffered = BufferedMetricsSink(PrometheusMetricsSink(registry), max_pending=1_000)
    builder = SnapshotBuilder([single("rest", 10)], clock=clock, metrics=buffered)
    try:
        await builder.build([price("BTCUSDT"), price("ETHUSDT")])
    finally:
        await builder.aclose()
        assert buffered.close()  # delivers what is queued on the worker thread, then ends it

    samples = scrape(registry)
    assert value(samples, "coalestra_snapshot_build_total", status="success") == 1
    assert value(samples, "coalestra_cache_access_total", status="miss", **PRICE) == 2
