"""Contract facts B-OBS-3 ... B-OBS-5: exact metric names and label keys, event names and payload
keys, and the health fields."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import Any

import pytest
from tests.doubles import Events

from coalestra import (
    CallableBatchSource,
    CallableSource,
    CircuitBreakerPolicy,
    CircuitScope,
    FreshnessPolicy,
    InMemoryMetrics,
    RefreshMode,
    ResourceKey,
    RetryPolicy,
    SnapshotBuilder,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotRequest,
    SourcePayload,
    SourceResiliencePolicy,
)
from coalestra.testing import VirtualClock

BTC = ResourceKey("market", "price", "BTC", {"venue": "spot"})
ETH = ResourceKey("market", "price", "ETH")
BOOK = ResourceKey("market", "book", "BTC")
POLICY = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=60.0)
R = frozenset({"resource_namespace", "resource_name"})
PRICE = {"resource_namespace": "market", "resource_name": "price"}
ONE_SHOT = SourceResiliencePolicy(
    retry=RetryPolicy(max_attempts=1),
    circuit=CircuitBreakerPolicy(failure_threshold=1, recovery_timeout_seconds=30.0),
)
PER_KEY = SourceResiliencePolicy(
    retry=RetryPolicy(max_attempts=1),
    circuit=CircuitBreakerPolicy(
        scope=CircuitScope.RESOURCE, failure_threshold=1, recovery_timeout_seconds=30.0
    ),
)

COUNTER_LABELS: dict[str, frozenset[str]] = {
    "snapshot_build_total": frozenset({"status"}),
    "snapshot_session_resolve_total": frozenset({"status"}),
    "snapshot_session_revalidate_total": frozenset({"status"}),
    "snapshot_consistency_total": frozenset({"status", "rule"}),
    "cache_access_total": frozenset({"status"}) | R,
    "source_fetch_total": frozenset({"status", "source"}),
    "source_batch_call_total": frozenset({"status", "source"}),
    "source_capacity_timeout_total": frozenset({"source", "reason"}),
    "singleflight_join_total": R,
    "resource_refresh_total": frozenset({"status"}) | R,
    "resource_publish_total": frozenset({"status", "source"}) | R,
    "resource_invalidation_total": R,
}
OBSERVATION_LABELS = {
    "source_fetch_latency_ms": frozenset({"source"}),
    "source_capacity_wait_ms": frozenset({"source"}),
    "source_batch_size": frozenset({"source"}),
}
EVENT_KEYS: dict[str, frozenset[str]] = {
    name: frozenset(keys.split())
    for name, keys in {
        "snapshot_built": "snapshot_id resources resolved failed build_failed strict diagnostics",
        "snapshot_session_resolved": (
            "snapshot_id requested resolved failed total_resources strict retry_errors"
        ),
        "snapshot_session_revalidated": (
            "snapshot_id requested affected refreshed failed committed retained_previous strict "
            "force_refresh consistency_failed"
        ),
        "snapshot_consistency_failed": (
            "snapshot_id resources oldest_resource newest_resource observation_skew_ms "
            "max_observation_skew_ms"
        ),
        "cache_hit": "resource freshness",
        "cache_bypassed": "resource reason",
        "stale_fallback_used": "resource error_type",
        "resource_resolved": "resource source latency_ms attempts source_kind authority_rank",
        "source_failed": "resource source error_type error",
        "source_payload_rejected": "resource source error",
        "source_circuit_open": "source resource error",
        "resource_refresh_scheduled": "resource reason snapshot_id",
        "resource_refresh_completed": "resource source reason",
        "resource_refresh_failed": "resource reason error_type error",
        "resource_published": "resource source observed_at replaced forced authority_rank",
        "resource_publish_ignored": (
            "resource source status observed_at cached_observed_at candidate_authority_rank "
            "cached_authority_rank"
        ),
        "resource_invalidated": "resource reason",
    }.items()
}


class Recorder(InMemoryMetrics):
    """In-memory metrics that also remember every name and label set used."""

    def __init__(self) -> None:
        super().__init__()
        self.counters: set[tuple[str, frozenset[str]]] = set()
        self.observations: set[tuple[str, frozenset[str]]] = set()

    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        self.counters.add((metric, frozenset(labels)))
        super().increment(metric, value, **labels)

    def observe(self, metric: str, value: float, **labels: str) -> None:
        self.observations.add((metric, frozenset(labels)))
        super().observe(metric, value, **labels)


def single(fetcher: Any, name: str = "rest", priority: int = 10, **options: Any) -> CallableSource:
    return CallableSource(
        name=name, priority=priority, supports=lambda _key: True, fetcher=fetcher, **options
    )


async def _scenario(clock: VirtualClock, metrics: Recorder, events: Events) -> None:
    """Exercise every metric and event the contract names."""
    stale_at = clock.now() - 100.0  # past the stale window: never served

    async def stream(key: ResourceKey, _ctx: object) -> Any:
        if key == ETH:
            raise ValueError("stream down")
        if key == BOOK:
            return SourcePayload("old book", observed_at=stale_at)
        return SourcePayload(1.0, observed_at=clock.now() + 3600.0)  # rejected timestamp

    async def batch(keys: Collection[ResourceKey], _ctx: object) -> Mapping[ResourceKey, Any]:
        return {key: f"batch:{key.subject}" for key in keys}

    sources = [
        single(stream, "stream", 30, resilience_policy=PER_KEY),
        CallableBatchSource(
            name="batch", priority=20, supports=lambda key: key != BOOK, fetcher=batch
        ),
    ]
    swr = FreshnessPolicy(
        ttl_seconds=5.0,
        max_stale_seconds=60.0,
        refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE,
    )
    b = SnapshotBuilder(sources, default_policy=swr, clock=clock, metrics=metrics, events=events)
    async with b:
        first = await b.build([BTC, ETH, BOOK], strict=False)  # miss, failures, fallback batch
        assert BOOK in first.errors
        await b.build([BTC, ETH])  # fresh hits
        await asyncio.sleep(10.0)
        await b.build([BTC])  # stale while revalidate: a refresh
        await b.wait_for_refreshes()
        await b.publisher.publish(BOOK, "pushed", source="feed", observed_at=clock.now())
        await b.publisher.publish(BOOK, "older", source="feed", observed_at=clock.now() - 1.0)
        await b.publisher.invalidate(BOOK, reason="gap")
        async with b.session() as session:
            await session.resolve([BTC])
            await session.revalidate([BTC], force_refresh=True)
        request = SnapshotRequest(
            required=[BTC, ETH],
            consistency_policy=SnapshotConsistencyPolicy(max_observation_skew_seconds=0.0),
        )
        await b.publisher.publish(ETH, 2.0, source="feed", observed_at=clock.now() - 3.0)
        with pytest.raises(SnapshotConsistencyError):
            await b.build_request(request)


async def test_b_obs_3_metric_names_and_label_keys(clock: VirtualClock) -> None:
    metrics, events = Recorder(), Events()
    await _scenario(clock, metrics, events)
    for metric, labels in metrics.counters:
        assert metric in COUNTER_LABELS, metric
        assert labels == COUNTER_LABELS[metric], metric
    for metric, labels in metrics.observations:
        assert metric in OBSERVATION_LABELS, metric
        assert labels == OBSERVATION_LABELS[metric], metric
    used = {metric for metric, _ in metrics.counters}
    elsewhere = {"source_capacity_timeout_total", "singleflight_join_total"}
    missing = set(COUNTER_LABELS) - used - elsewhere
    assert not missing
    assert {metric for metric, _ in metrics.observations} >= {
        "source_fetch_latency_ms",
        "source_batch_size",
    }


async def test_b_obs_3_statuses(clock: VirtualClock) -> None:
    metrics, events = Recorder(), Events()
    await _scenario(clock, metrics, events)
    count = metrics.counter
    assert count("snapshot_build_total", status="success") == 3
    assert count("snapshot_build_total", status="error") == 1
    assert count("snapshot_session_resolve_total", status="success") == 4  # builds included
    assert count("snapshot_session_revalidate_total", status="success") == 1
    assert count("snapshot_consistency_total", status="error", rule="observation_skew") == 1
    assert count("cache_access_total", status="miss", **PRICE) == 2
    assert count("cache_access_total", status="fresh", **PRICE) >= 2
    assert count("cache_access_total", status="stale_while_revalidate", **PRICE) == 1
    assert count("cache_access_total", status="revalidation_bypass", **PRICE) == 1
    assert count("source_fetch_total", status="failure", source="stream") == 1
    assert count("source_fetch_total", status="invalid_timestamp", source="stream") == 1
    assert count("source_fetch_total", status="stale", source="stream") == 1
    assert count("source_fetch_total", status="success", source="batch") >= 2
    assert count("source_batch_call_total", status="success", source="batch") >= 1
    assert count("resource_refresh_total", status="scheduled", **PRICE) == 1
    assert count("resource_refresh_total", status="success", **PRICE) == 1
    book = {"resource_namespace": "market", "resource_name": "book"}
    assert count("resource_publish_total", status="published", source="feed", **book) == 1
    assert count("resource_publish_total", status="ignored_older", source="feed", **book) == 1
    assert count("resource_invalidation_total", **book) == 1
    summary = metrics.summary("source_batch_size", source="batch")
    assert summary is not None
    assert summary.count >= 1


async def test_b_obs_3_circuit_open_and_single_flight(clock: VirtualClock) -> None:
    metrics = Recorder()
    started = asyncio.Event()

    async def slow(key: ResourceKey, _ctx: object) -> int:
        started.set()
        await asyncio.sleep(1.0)
        return 1

    async def down(key: ResourceKey, _ctx: object) -> int:
        raise ConnectionError("down")

    policy = SourceResiliencePolicy(
        retry=RetryPolicy(max_attempts=1),
        circuit=CircuitBreakerPolicy(
            scope=CircuitScope.SUBJECT, failure_threshold=1, recovery_timeout_seconds=60.0
        ),
    )
    b = SnapshotBuilder(
        [single(down, "down", 20, resilience_policy=policy), single(slow, "slow", 10)],
        default_policy=POLICY,
        clock=clock,
        metrics=metrics,
    )
    async with b:
        first = asyncio.ensure_future(b.build([BTC]))
        await started.wait()
        await b.build([BTC])
        await first
        await asyncio.sleep(10.0)
        await b.build([BTC])
    assert metrics.counter("singleflight_join_total", **PRICE) == 1
    assert metrics.counter("source_fetch_total", status="failure", source="down") == 1
    assert metrics.counter("source_fetch_total", status="circuit_open", source="down") == 1


async def test_b_obs_3_capacity_timeouts(clock: VirtualClock) -> None:
    metrics = Recorder()

    async def slow(key: ResourceKey, _ctx: object) -> int:
        await asyncio.sleep(1.0)
        return 1

    source = single(slow, max_concurrency=1, queue_timeout_seconds=0.1)
    async with SnapshotBuilder([source], default_policy=POLICY, clock=clock, metrics=metrics) as b:
        await b.build([BTC, ETH], strict=False)
    timeouts = metrics.counter(
        "source_capacity_timeout_total", source="rest", reason="queue_timeout"
    )
    assert timeouts == 1
    assert ("source_capacity_timeout_total", COUNTER_LABELS["source_capacity_timeout_total"]) in (
        metrics.counters
    )


async def test_b_obs_4_event_names_and_payload_keys(clock: VirtualClock) -> None:
    metrics, events = Recorder(), Events()
    await _scenario(clock, metrics, events)
    seen = set()
    for name, payload in events.records:
        assert name in EVENT_KEYS, name
        assert set(payload) == EVENT_KEYS[name], name
        seen.add(name)
    expected = set(EVENT_KEYS) - {"stale_fallback_used", "resource_refresh_failed"}
    assert expected <= seen, expected - seen


async def test_b_obs_4_payload_values(clock: VirtualClock) -> None:
    metrics, events = Recorder(), Events()
    await _scenario(clock, metrics, events)
    (built, *_) = events.of("snapshot_built")
    assert built["resources"] == 3
    assert built["resolved"] == 2
    assert built["failed"] == 1
    assert built["build_failed"] is False
    assert built["strict"] is False
    assert built["diagnostics"].requested_resources == 3
    (failed,) = (e for e in events.of("source_failed") if e["resource"] == str(ETH))
    assert failed["source"] == "stream"
    assert failed["error_type"] == "ValueError"
    assert failed["error"] == "stream down"
    rejected = events.of("source_payload_rejected")[0]
    assert rejected["resource"] == str(BTC)
    assert rejected["source"] == "stream"
    hits = events.of("cache_hit")
    assert {"resource": str(BTC), "freshness": "fresh"} in hits
    assert events.of("cache_bypassed") == [{"resource": str(BTC), "reason": "session_revalidation"}]
    scheduled = events.of("resource_refresh_scheduled")[0]
    assert scheduled["reason"] == "stale_while_revalidate"
    assert events.of("resource_refresh_completed")[0]["source"] == "batch"
    published = events.of("resource_published")
    assert published[0]["forced"] is False
    ignored = events.of("resource_publish_ignored")[0]
    assert ignored["status"] == "ignored_older"
    assert events.of("resource_invalidated") == [{"resource": str(BOOK), "reason": "gap"}]
    resolved = events.of("resource_resolved")[0]
    assert resolved["source_kind"] == "batch"
    assert events.of("snapshot_consistency_failed")[0]["max_observation_skew_ms"] == 0.0


async def test_b_obs_4_stale_fallback_and_circuit_open(clock: VirtualClock) -> None:
    events = Events()
    calls = 0

    async def flaky(key: ResourceKey, _ctx: object) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ConnectionError("down")
        return 1

    b = SnapshotBuilder(
        [single(flaky, resilience_policy=ONE_SHOT)],
        default_policy=POLICY,
        clock=clock,
        events=events,
    )
    async with b:
        await b.build([BTC])
        await asyncio.sleep(10.0)
        snapshot = await b.build([BTC])
        assert snapshot[BTC].stale
        await b.build([BTC])
    assert events.of("stale_fallback_used")[0] == {
        "resource": str(BTC),
        "error_type": "ConnectionError",
    }
    (blocked, *_) = events.of("source_circuit_open")
    assert blocked["source"] == "rest"
    assert blocked["resource"] == str(BTC)
    assert blocked["error"] == "circuit is open for rest[source]"


async def test_b_obs_5_health_fields(clock: VirtualClock) -> None:
    calls = 0

    async def fetch(key: ResourceKey, _ctx: object) -> int:
        nonlocal calls
        calls += 1
        return 1

    b = SnapshotBuilder(
        [single(fetch, max_concurrency=2)], default_policy=POLICY, clock=clock, max_concurrency=4
    )
    async with b:
        await b.build([BTC])
        before = calls
        health = await b.health_snapshot()
        assert calls == before  # taking a health snapshot calls no source
    assert set(health.capacity) == {"__global__", "rest"}
    assert health.capacity["__global__"].limit == 4
    assert health.waiting_for_capacity == 0
    assert health.active_dispatch_workers == 0
    assert health.cache == await b.cache.stats()  # type: ignore[attr-defined]


async def test_b_obs_5_waiters_and_workers_while_busy(clock: VirtualClock) -> None:
    release = asyncio.Event()

    async def fetch(key: ResourceKey, _ctx: object) -> int:
        await release.wait()
        return 1

    b = SnapshotBuilder(
        [single(fetch)],
        default_policy=POLICY,
        clock=clock,
        max_concurrency=1,
        max_pending_tasks=3,
    )
    async with b:
        keys = [ResourceKey("market", "price", f"S{i}") for i in range(3)]
        task = asyncio.ensure_future(b.build(keys))
        await asyncio.sleep(0.01)
        health = await b.health_snapshot()
        assert health.waiting_for_capacity == 2
        assert health.active_dispatch_workers == 3
        release.set()
        await task


async def test_b_obs_4_refresh_ahead_that_fails(clock: VirtualClock) -> None:
    metrics, events = Recorder(), Events()
    calls = 0

    async def fetch(key: ResourceKey, _ctx: object) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ValueError("refresh broke")
        return 1

    ahead = FreshnessPolicy(
        ttl_seconds=5.0,
        max_stale_seconds=60.0,
        refresh_mode=RefreshMode.REFRESH_AHEAD,
        refresh_ahead_seconds=2.0,
    )
    b = SnapshotBuilder(
        [single(fetch)], default_policy=ahead, clock=clock, metrics=metrics, events=events
    )
    async with b:
        await b.build([BTC])
        await asyncio.sleep(4.0)  # fresh, but within the refresh-ahead window
        built = await b.build([BTC], snapshot_id="ahead")
        await b.wait_for_refreshes()
    assert built[BTC].value == 1
    assert events.of("resource_refresh_scheduled") == [
        {"resource": str(BTC), "reason": "refresh_ahead", "snapshot_id": "ahead"}
    ]
    (failed,) = events.of("resource_refresh_failed")
    assert set(failed) == {"resource", "reason", "error_type", "error"}
    assert (failed["resource"], failed["reason"]) == (str(BTC), "refresh_ahead")
    assert failed["error_type"] == "ResourceResolutionError"
    assert "refresh broke" in failed["error"]
    assert not events.of("resource_refresh_completed")  # the cached value was kept instead
    assert metrics.counter("resource_refresh_total", status="scheduled", **PRICE) == 1
    assert metrics.counter("resource_refresh_total", status="failure", **PRICE) == 1


async def test_b_obs_3_cancelled_refresh(clock: VirtualClock) -> None:
    metrics = Recorder()
    calls = 0

    async def fetch(key: ResourceKey, _ctx: object) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            await asyncio.sleep(100.0)  # the refresh hangs until the builder closes
        return 1

    swr = FreshnessPolicy(
        ttl_seconds=5.0, max_stale_seconds=60.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
    )
    b = SnapshotBuilder([single(fetch)], default_policy=swr, clock=clock, metrics=metrics)
    await b.build([BTC])
    await asyncio.sleep(10.0)
    await b.build([BTC])  # served stale; the refresh starts
    await asyncio.sleep(1.0)
    await b.aclose(cancel_refreshes=True)
    assert metrics.counter("resource_refresh_total", status="scheduled", **PRICE) == 1
    assert metrics.counter("resource_refresh_total", status="cancelled", **PRICE) == 1
    assert metrics.counter("resource_refresh_total", status="failure", **PRICE) == 0
