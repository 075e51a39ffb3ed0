"""HealthCollector: gauges of a real builder's health, pushed from the loop, read by scrapes."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

pytest.importorskip(
    "prometheus_client", reason="prometheus-client is not installed (pip install coalestra[dev])"
)

from prometheus_client import CollectorRegistry
from tests.integrations.prometheus.conftest import price, scrape, single, value

from coalestra import (
    BuilderHealth,
    CallableSource,
    CircuitBreakerPolicy,
    CircuitScope,
    FreshnessPolicy,
    RetryPolicy,
    SnapshotBuilder,
    SourceResiliencePolicy,
)
from coalestra.integrations.prometheus import HealthCollector
from coalestra.testing import VirtualClock

NO_RETRY = RetryPolicy(max_attempts=1)


def circuit_samples(registry: CollectorRegistry, source: str) -> dict[str, float | None]:
    samples = scrape(registry)
    return {
        state: value(samples, "coalestra_circuits", source=source, scope="source", state=state)
        for state in ("closed", "open", "half_open")
    }


async def test_a_failing_source_shows_as_an_open_circuit(clock: VirtualClock) -> None:
    registry = CollectorRegistry()
    collector = HealthCollector(registry)
    stream = single(
        "stream",
        100,
        fail=ConnectionError("down"),
        resilience_policy=SourceResiliencePolicy(
            retry=NO_RETRY,
            circuit=CircuitBreakerPolicy(
                scope=CircuitScope.SOURCE, failure_threshold=2, recovery_timeout_seconds=30.0
            ),
        ),
    )
    builder = SnapshotBuilder([stream, single("rest", 10)], clock=clock, retry_policy=NO_RETRY)
    collector.update(await builder.health_snapshot())
    assert circuit_samples(registry, "stream") == {"closed": None, "open": None, "half_open": None}

    await builder.build([price("BTCUSDT")])
    await builder.build([price("ETHUSDT")])
    collector.update(await builder.health_snapshot())
    assert circuit_samples(registry, "stream") == {"closed": 0, "open": 1, "half_open": 0}

    await asyncio.sleep(30.0)  # the recovery timeout passes: the next call is a probe
    collector.update(await builder.health_snapshot())
    assert circuit_samples(registry, "stream") == {"closed": 0, "open": 0, "half_open": 1}
    await builder.aclose()


async def test_capacity_flights_and_workers_while_calls_are_running(clock: VirtualClock) -> None:
    registry = CollectorRegistry()
    collector = HealthCollector(registry)
    release = asyncio.Event()

    async def held(key: object, _context: object) -> str:
        await release.wait()
        return "held"

    rest = CallableSource(name="rest", priority=10, supports=lambda _key: True, fetcher=held)
    builder = SnapshotBuilder(
        [rest], clock=clock, source_concurrency={"rest": 1}, retry_policy=NO_RETRY
    )
    builds = [asyncio.create_task(builder.build([price(s)])) for s in ("BTCUSDT", "ETHUSDT")]
    await asyncio.sleep(0.01)

    collector.update(await builder.health_snapshot())
    samples = scrape(registry)
    assert value(samples, "coalestra_capacity_in_use", source="rest") == 1
    assert value(samples, "coalestra_capacity_waiting", source="rest") == 1
    assert value(samples, "coalestra_capacity_limit", source="rest") == 1
    assert value(samples, "coalestra_capacity_in_use", source="*") == 1  # the builder-wide one
    assert value(samples, "coalestra_capacity_limit", source="*") == 8
    assert value(samples, "coalestra_singleflight_in_flight") == 2
    assert value(samples, "coalestra_dispatch_workers_active") == 2

    release.set()
    await asyncio.gather(*builds)
    collector.update(await builder.health_snapshot())
    samples = scrape(registry)
    assert value(samples, "coalestra_capacity_in_use", source="rest") == 0
    assert value(samples, "coalestra_capacity_waiting", source="rest") == 0
    assert value(samples, "coalestra_singleflight_in_flight") == 0
    assert value(samples, "coalestra_cache_entries") == 2
    assert value(samples, "coalestra_cache_max_entries") == 10_000
    await builder.aclose()


async def test_timeout_counters_and_background_refreshes(clock: VirtualClock) -> None:
    registry = CollectorRegistry()
    collector = HealthCollector(registry)
    slow = single("slow", 10, delay=1.0, timeout_seconds=0.1)
    builder = SnapshotBuilder([slow], clock=clock, retry_policy=NO_RETRY)

    snapshot = await builder.build([price("BTCUSDT")], strict=False)
    assert snapshot.errors
    collector.update(await builder.health_snapshot())
    samples = scrape(registry)

    assert value(samples, "coalestra_source_timeouts_total") == 1
    assert value(samples, "coalestra_queue_timeouts_total") == 0
    assert value(samples, "coalestra_deadline_exceeded_total") == 0
    assert value(samples, "coalestra_background_refreshes") == 0
    assert value(samples, "coalestra_builder_closed") == 0
    await builder.aclose()


async def test_poll_pushes_periodically_and_ends_with_the_builder(clock: VirtualClock) -> None:
    registry = CollectorRegistry()
    collector = HealthCollector(registry)
    builder = SnapshotBuilder([single("rest", 10)], clock=clock)
    poller = asyncio.create_task(collector.poll(builder, interval_seconds=10.0))

    await asyncio.sleep(25.0)  # pushes at t = 0, 10 and 20
    assert value(scrape(registry), "coalestra_health_updates_total") == 3
    await builder.aclose()
    await asyncio.wait_for(poller, timeout=11.0)  # the next push sees the closed builder

    samples = scrape(registry)
    assert value(samples, "coalestra_health_updates_total") == 4
    assert value(samples, "coalestra_builder_closed") == 1


async def test_a_scrape_never_calls_the_builder(clock: VirtualClock) -> None:
    class Counting:
        calls = 0

        async def health_snapshot(self) -> BuilderHealth:
            Counting.calls += 1
            return BuilderHealth(
                closed=True,
                background_refreshes=0,
                singleflight_in_flight=0,
                source_support_cache_entries=0,
            )

    registry = CollectorRegistry()
    collector = HealthCollector(registry)
    await collector.poll(Counting())  # one push: the health says closed

    for _ in range(3):
        await asyncio.to_thread(scrape, registry)  # as an exporter thread would

    assert Counting.calls == 1
    assert value(scrape(registry), "coalestra_builder_closed") == 1


def test_before_the_first_push_only_the_update_counter_has_a_sample() -> None:
    registry = CollectorRegistry()
    collector = HealthCollector(registry)

    assert scrape(registry) == {("coalestra_health_updates_total", frozenset()): 0.0}
    assert collector.health is None


def test_sync_facade_fields_are_exposed() -> None:
    registry = CollectorRegistry()
    collector = HealthCollector(registry, namespace="app")
    health = BuilderHealth(
        closed=False,
        background_refreshes=1,
        singleflight_in_flight=0,
        source_support_cache_entries=0,
    )
    collector.update(dataclasses.replace(health, pending_submissions=3, max_pending_submissions=5))
    samples = scrape(registry)

    assert value(samples, "app_sync_pending_submissions") == 3
    assert value(samples, "app_sync_max_pending_submissions") == 5
    assert value(samples, "app_background_refreshes") == 1
    assert value(samples, "app_cache_entries") is None  # no memory-cache statistics given
    assert repr(collector) == "HealthCollector(namespace='app', updates=1)"


def test_a_second_collector_with_the_same_names_is_refused() -> None:
    registry = CollectorRegistry()
    HealthCollector(registry)

    with pytest.raises(ValueError, match="Duplicated"):
        HealthCollector(registry)
    HealthCollector(registry, namespace="second")  # another builder, another namespace


async def test_bad_arguments_are_refused(clock: VirtualClock) -> None:
    with pytest.raises(TypeError):
        HealthCollector(registry="default")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace"):
        HealthCollector(CollectorRegistry(), namespace="bad name")
    collector = HealthCollector(CollectorRegistry())
    with pytest.raises(TypeError, match="BuilderHealth"):
        collector.update({"closed": False})  # type: ignore[arg-type]
    builder = SnapshotBuilder(
        [single("rest", 10)],
        clock=clock,
        default_policy=FreshnessPolicy(ttl_seconds=1.0, max_stale_seconds=1.0),
    )
    for interval in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="interval_seconds"):
            await collector.poll(builder, interval_seconds=interval)
    assert collector.health is None  # nothing was pushed by the refused calls
    await builder.aclose()
