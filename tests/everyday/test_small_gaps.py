"""Issue 16 item 8: ``InMemoryMetrics.series()``, a ``HealthCollector`` registered where and
as often as the application needs, and the ``supports()`` answer cache."""

from __future__ import annotations

import asyncio

import pytest

from coalestra import (
    BuilderHealth,
    CallableSource,
    FreshnessPolicy,
    InMemoryMetrics,
    ResourceKey,
    SnapshotBuilder,
)
from coalestra.testing import VirtualClock

POLICY = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=60.0)


# -- InMemoryMetrics.series() ------------------------------------------------------------------


def test_series_lists_every_counter_and_observation_once() -> None:
    metrics = InMemoryMetrics()
    assert metrics.series() == []
    metrics.increment("fetch_total", source="rest", status="ok")
    metrics.increment("fetch_total", status="ok", source="rest")  # same series
    metrics.increment("fetch_total", source="ws", status="error")
    metrics.observe("latency_ms", 3.0, source="rest")
    metrics.increment("latency_ms", source="rest")  # a counter under the same identity
    assert metrics.series() == [
        ("fetch_total", {"source": "rest", "status": "ok"}),
        ("fetch_total", {"source": "ws", "status": "error"}),
        ("latency_ms", {"source": "rest"}),
    ]
    assert metrics.series("fetch_total") == metrics.series()[:2]
    assert metrics.series("unknown") == []
    for metric, labels in metrics.series("fetch_total"):
        assert metrics.counter(metric, **labels) >= 1


async def test_series_shows_what_a_build_recorded(clock: VirtualClock) -> None:
    metrics = InMemoryMetrics()
    source = CallableSource(
        name="rest", priority=1, supports=lambda _key: True, fetcher=lambda key, ctx: 1
    )
    async with SnapshotBuilder(
        [source], default_policy=POLICY, clock=clock, metrics=metrics
    ) as builder:
        await builder.build([ResourceKey("m", "p", "A")])
    names = {metric for metric, _labels in metrics.series()}
    assert "snapshot_build_total" in names
    assert all(isinstance(labels, dict) for _metric, labels in metrics.series())


def test_series_returns_copies() -> None:
    metrics = InMemoryMetrics()
    metrics.increment("a", x="1")
    metrics.series()[0][1]["x"] = "2"
    assert metrics.counter("a", x="1") == 1
    assert metrics.series() == [("a", {"x": "1"})]
    with pytest.raises(TypeError):
        metrics.series(3)  # type: ignore[arg-type]


# -- HealthCollector ------------------------------------------------------------------------


def health() -> BuilderHealth:
    return BuilderHealth(
        closed=False,
        background_refreshes=0,
        singleflight_in_flight=0,
        source_support_cache_entries=0,
    )


def sample(registry: object, name: str) -> float | None:
    return registry.get_sample_value(name)  # type: ignore[attr-defined, no-any-return]


def test_a_health_collector_can_be_registered_by_hand_on_a_custom_registry() -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from coalestra.integrations.prometheus import HealthCollector

    default_names = set(prometheus_client.REGISTRY._names_to_collectors)
    first, second = prometheus_client.CollectorRegistry(), prometheus_client.CollectorRegistry()
    for registry in (first, second):  # twice: nothing lands on the default registry
        collector = HealthCollector(register=False)
        registry.register(collector)
        collector.update(health())
        assert sample(registry, "coalestra_builder_closed") == 0.0
    assert set(prometheus_client.REGISTRY._names_to_collectors) == default_names
    assert collector.unregister() is False  # it was never on the default registry


def test_replace_swaps_a_collector_made_twice_on_one_registry() -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from coalestra.integrations.prometheus import HealthCollector

    registry = prometheus_client.CollectorRegistry()
    old = HealthCollector(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        HealthCollector(registry)  # the default still refuses a duplicate
    new = HealthCollector(registry, replace=True)
    new.update(health())
    assert sample(registry, "coalestra_health_updates_total") == 1.0
    newer = HealthCollector(registry, replace=True)
    assert sample(registry, "coalestra_health_updates_total") == 0.0
    assert newer.unregister() is True
    assert sample(registry, "coalestra_health_updates_total") is None
    assert old.unregister() is False
    HealthCollector(registry)  # the names are free again


def test_replace_spares_other_namespaces() -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from coalestra.integrations.prometheus import HealthCollector

    registry = prometheus_client.CollectorRegistry()
    HealthCollector(registry, namespace="a").update(health())
    HealthCollector(registry, namespace="b", replace=True)
    assert sample(registry, "a_health_updates_total") == 1.0
    with pytest.raises(TypeError, match="replace"):
        HealthCollector(registry, namespace="c", replace="yes")  # type: ignore[arg-type]


# -- the supports() answer cache ------------------------------------------------------------


async def test_supports_answers_are_cached_until_cleared(clock: VirtualClock) -> None:
    asked: list[ResourceKey] = []
    served = {"A"}

    def supports(key: ResourceKey) -> bool:
        asked.append(key)
        return key.subject in served

    key = ResourceKey("m", "p", "B")
    source = CallableSource(name="rest", priority=1, supports=supports, fetcher=lambda k, c: 1)
    async with SnapshotBuilder([source], default_policy=POLICY, clock=clock) as builder:
        assert key in (await builder.build([key], strict=False)).errors
        served.add("B")
        assert key in (await builder.build([key], strict=False)).errors  # cached "no"
        builder.clear_source_support_cache()
        assert (await builder.build([key])).value(key) == 1
    assert asked == [key, key]


async def test_cache_supports_false_asks_every_time(clock: VirtualClock) -> None:
    asked: list[ResourceKey] = []

    def supports(key: ResourceKey) -> bool:
        asked.append(key)
        return True

    key = ResourceKey("m", "p", "A")
    source = CallableSource(
        name="rest", priority=1, supports=supports, fetcher=lambda k, c: 1, cache_supports=False
    )
    assert source.cache_supports is False
    no_ttl = FreshnessPolicy(ttl_seconds=0.0, max_stale_seconds=0.0)
    async with SnapshotBuilder([source], default_policy=no_ttl, clock=clock) as builder:
        for _ in range(3):
            await builder.build([key])
            await asyncio.sleep(1.0)  # age the value past its TTL: each build fetches
    assert len(asked) == 3
