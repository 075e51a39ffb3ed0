"""Contract facts of diagnostics and value metadata: B-DIAG-1..5.

Every test goes through the public API on virtual time (see ``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from coalestra.adapters import CallableSource
from coalestra.cache import AsyncMemoryCache
from coalestra.core import (
    FetchContext,
    FreshnessPolicy,
    RefreshMode,
    ResourceKey,
    SourcePayload,
)
from coalestra.orchestration import SnapshotBuilder
from coalestra.resilience import RetryPolicy
from coalestra.testing import VirtualClock

A = ResourceKey("market", "price", "A")
B = ResourceKey("market", "price", "B")
X = ResourceKey("market", "price", "X")
ONCE = RetryPolicy(max_attempts=1)
SWR = FreshnessPolicy(
    ttl_seconds=1.0, max_stale_seconds=10.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
)


class Feed:
    """A single-key source the test controls; records each call's context."""

    def __init__(self, clock: VirtualClock, delay: float = 0.0) -> None:
        self.clock = clock
        self.delay = delay
        self.contexts: list[FetchContext] = []
        self.down = False
        self.age = 0.0
        self.counter = 0
        self.stamps: dict[ResourceKey, float] = {}
        self.slow: dict[ResourceKey, float] = {}

    async def fetch(self, key: ResourceKey, context: FetchContext) -> Any:
        self.contexts.append(context)
        delay = self.slow.get(key, self.delay)
        if delay:
            await asyncio.sleep(delay)
        if self.down:
            raise ConnectionError("feed down")
        self.counter += 1
        observed = self.stamps.get(key, self.clock.now() - self.age)
        return SourcePayload(f"{key.subject}-{self.counter}", observed_at=observed)

    def source(self) -> CallableSource:
        return CallableSource(name="feed", priority=1, supports=lambda _k: True, fetcher=self.fetch)


# -- B-DIAG-1 --------------------------------------------------------------------------------


async def test_b_diag_1_a_cache_served_value_is_restamped_with_zero_latency(
    clock: VirtualClock,
) -> None:
    feed = Feed(clock, delay=0.25)
    policy = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)
    builder = SnapshotBuilder([feed.source()], clock=clock, default_policy=policy)
    first = (await builder.build([A]))[A]
    assert first.latency_ms > 0.0
    assert first.from_cache is False
    await asyncio.sleep(10.0)

    hit = (await builder.build([A]))[A]

    assert hit.from_cache is True
    assert hit.latency_ms == 0.0
    assert hit.fetched_at == clock.now()
    assert hit.age_seconds == clock.now() - first.observed_at
    assert hit.stale is False
    assert (hit.attempts, hit.version, hit.authority_rank) == (
        first.attempts,
        first.version,
        first.authority_rank,
    )
    await builder.aclose()


async def test_b_diag_1_swr_and_fallback_values_are_restamped_too(clock: VirtualClock) -> None:
    feed = Feed(clock, delay=0.25)
    builder = SnapshotBuilder([feed.source()], clock=clock, default_policy=SWR)
    await builder.build([A])
    await asyncio.sleep(2.0)

    swr = (await builder.build([A]))[A]

    assert (swr.from_cache, swr.latency_ms, swr.stale, swr.fetched_at) == (
        True,
        0.0,
        True,
        clock.now(),
    )
    await builder.wait_for_refreshes()
    await builder.aclose()

    feed = Feed(clock, delay=0.25)
    blocking = FreshnessPolicy(ttl_seconds=1.0, max_stale_seconds=10.0)
    builder = SnapshotBuilder(
        [feed.source()], clock=clock, default_policy=blocking, retry_policy=ONCE
    )
    await builder.build([B])
    await asyncio.sleep(2.0)
    feed.down = True

    fallback = (await builder.build([B]))[B]

    assert (fallback.from_cache, fallback.latency_ms, fallback.stale) == (True, 0.0, True)
    assert fallback.fetched_at == clock.now()
    await builder.aclose()


# -- B-DIAG-2 --------------------------------------------------------------------------------


async def test_b_diag_2_swr_marks_refresh_mode_and_refresh_scheduled(clock: VirtualClock) -> None:
    builder = SnapshotBuilder([Feed(clock).source()], clock=clock, default_policy=SWR)
    await builder.build([A])
    await asyncio.sleep(2.0)

    snapshot = await builder.build([A])

    value = snapshot[A]
    assert value.stale is True
    assert value.metadata["refresh_mode"] == "stale_while_revalidate"
    assert value.metadata["refresh_scheduled"] is True
    assert snapshot.diagnostics.refresh_scheduled == 1
    await builder.wait_for_refreshes()
    await builder.aclose()


async def test_b_diag_2_refresh_scheduled_is_absent_when_no_refresh_ahead_ran(
    clock: VirtualClock,
) -> None:
    policy = FreshnessPolicy(
        ttl_seconds=10.0,
        max_stale_seconds=20.0,
        refresh_mode=RefreshMode.REFRESH_AHEAD,
        refresh_ahead_seconds=3.0,
    )
    builder = SnapshotBuilder([Feed(clock).source()], clock=clock, default_policy=policy)
    await builder.build([A])
    await asyncio.sleep(2.0)

    early = (await builder.build([A]))[A]

    assert "refresh_scheduled" not in early.metadata
    for key in ("refresh_mode", "coalesced_request", "fallback_error_type", "superseded_source"):
        assert key not in early.metadata
    await builder.aclose()


# -- B-DIAG-3 --------------------------------------------------------------------------------


async def test_b_diag_3_refresh_ahead_schedules_on_a_fresh_hit_in_its_window(
    clock: VirtualClock,
) -> None:
    feed = Feed(clock)
    policy = FreshnessPolicy(
        ttl_seconds=10.0,
        max_stale_seconds=20.0,
        refresh_mode=RefreshMode.REFRESH_AHEAD,
        refresh_ahead_seconds=3.0,
    )
    builder = SnapshotBuilder([feed.source()], clock=clock, default_policy=policy)
    first = (await builder.build([A]))[A]
    await asyncio.sleep(7.0)

    snapshot = await builder.build([A])
    await builder.wait_for_refreshes()

    value = snapshot[A]
    assert value.metadata["refresh_scheduled"] is True
    assert value.stale is False
    assert value.version == first.version
    assert snapshot.diagnostics.refresh_scheduled == 1
    assert feed.counter == 2
    await builder.aclose()


async def test_b_diag_3_one_refresh_per_key_and_a_second_schedule_is_not_counted(
    clock: VirtualClock,
) -> None:
    feed = Feed(clock, delay=1.0)
    builder = SnapshotBuilder([feed.source()], clock=clock, default_policy=SWR)
    await builder.build([A])
    await asyncio.sleep(2.0)

    first = await builder.build([A])
    second = await builder.build([A])  # the first refresh is still running
    await builder.wait_for_refreshes()

    assert first[A].metadata["refresh_scheduled"] is True
    assert second[A].metadata["refresh_scheduled"] is True
    assert first.diagnostics.refresh_scheduled == 1
    assert second.diagnostics.refresh_scheduled == 0
    assert feed.counter == 2
    await builder.aclose()


# -- B-DIAG-4 --------------------------------------------------------------------------------


async def test_b_diag_4_a_background_refresh_has_its_own_context(clock: VirtualClock) -> None:
    feed = Feed(clock)
    builder = SnapshotBuilder([feed.source()], clock=clock, default_policy=SWR)
    await builder.build([A])
    await asyncio.sleep(2.0)

    await builder.build([A], metadata={"tenant": "t1"}, snapshot_id="parent")
    await builder.wait_for_refreshes()

    ctx = feed.contexts[-1]
    assert dict(ctx.metadata) == {
        "tenant": "t1",
        "background_refresh": True,
        "refresh_reason": "stale_while_revalidate",
        "parent_snapshot_id": "parent",
    }
    assert re.fullmatch(r"parent:refresh:[0-9a-f]{8}", ctx.snapshot_id)
    assert ctx.deadline_at is None
    assert ctx.deadline_monotonic is None
    await builder.aclose()


async def test_b_diag_4_refresh_outcomes_are_counted_and_only_fresh_results_written(
    clock: VirtualClock,
) -> None:
    feed = Feed(clock, delay=0.5)
    cache = AsyncMemoryCache()
    builder = SnapshotBuilder(
        [feed.source()], clock=clock, cache=cache, default_policy=SWR, retry_policy=ONCE
    )
    original = (await builder.build([A]))[A]
    await asyncio.sleep(2.0)
    slow = ResourceKey("market", "price", "slow")
    feed.slow[slow] = 5.0  # keeps the build open until its refresh has ended

    ok = await builder.build([A, slow])
    assert ok.diagnostics.refresh_completed == 1  # counted in the scheduling build
    refreshed = await cache.get(A, now=clock.now(), policy=SWR)
    assert refreshed.value is not None
    assert refreshed.value.version != original.version

    await asyncio.sleep(2.0)
    feed.down = True
    feed.slow[slow] = 0.0
    slow2 = ResourceKey("market", "price", "slow2")
    feed.slow[slow2] = 5.0
    failed = await builder.build([A, slow2], strict=False)
    assert failed.diagnostics.refresh_failed == 1

    feed.down = False
    await builder.build([B])
    await asyncio.sleep(2.0)
    feed.age = 1.5  # a stale result (newer than the cached one) fails the refresh, unwritten
    held_b = (await cache.get(B, now=clock.now(), policy=SWR)).value
    slow3 = ResourceKey("market", "price", "slow3")
    feed.slow[slow3] = 5.0
    stale = await builder.build([B, slow3])
    assert stale.diagnostics.refresh_failed == 1
    after_b = (await cache.get(B, now=clock.now(), policy=SWR)).value
    assert held_b is not None
    assert after_b is not None
    assert after_b.version == held_b.version
    await builder.aclose()


async def test_b_diag_4_wait_for_refreshes_covers_refreshes_scheduled_while_waiting(
    clock: VirtualClock,
) -> None:
    feed = Feed(clock, delay=1.0)
    builder = SnapshotBuilder([feed.source()], clock=clock, default_policy=SWR)
    await builder.build([A, B])
    await asyncio.sleep(2.0)
    await builder.build([A])

    async def later() -> None:
        await asyncio.sleep(0.5)
        await builder.build([B])

    task = asyncio.ensure_future(later())
    await asyncio.sleep(0)
    await builder.wait_for_refreshes()
    await task
    await builder.wait_for_refreshes()

    assert (await builder.health_snapshot()).background_refreshes == 0
    assert feed.counter == 4
    await builder.aclose()


# -- B-DIAG-5 --------------------------------------------------------------------------------


async def test_b_diag_5_build_counters(clock: VirtualClock) -> None:
    feed = Feed(clock)
    policy = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=5.0)
    builder = SnapshotBuilder(
        [feed.source()], clock=clock, default_policy=policy, retry_policy=ONCE
    )
    await builder.build([A])
    feed.down = True

    snapshot = await builder.build([A, B, A], strict=False)

    d = snapshot.diagnostics
    assert d.requested_resources == 2  # distinct keys
    assert (d.resolved_resources, d.failed_resources) == (1, 1)
    assert (d.cache_hits, d.cache_misses) == (1, 1)
    assert (d.cache_batch_reads, d.cache_batch_writes) == (1, 0)  # nothing fresh to write
    assert d.source_calls == 1
    assert d.source_calls_by_source == {"feed": 1}
    assert d.retries == 0
    await builder.aclose()


class PlainCache:
    """Not batch-capable: get/set/invalidate/clear only."""

    def __init__(self) -> None:
        self.inner = AsyncMemoryCache()

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> Any:
        return await self.inner.get(key, now=now, policy=policy)

    async def set(self, value: Any) -> None:
        await self.inner.set(value)

    async def invalidate(self, key: ResourceKey) -> None:
        await self.inner.invalidate(key)

    async def clear(self) -> None:
        await self.inner.clear()


async def test_b_diag_5_batch_counters_only_count_batch_calls(clock: VirtualClock) -> None:
    batch = SnapshotBuilder([Feed(clock).source()], clock=clock)
    plain = SnapshotBuilder([Feed(clock).source()], clock=clock, cache=PlainCache())

    with_batch = (await batch.build([A, B])).diagnostics
    without = (await plain.build([A, B])).diagnostics

    assert (with_batch.cache_batch_reads, with_batch.cache_batch_writes) == (1, 1)
    assert (without.cache_batch_reads, without.cache_batch_writes) == (0, 0)
    await batch.aclose()
    await plain.aclose()


async def test_b_diag_5_stale_values_and_observation_skew(clock: VirtualClock) -> None:
    feed = Feed(clock)
    now = clock.now()
    feed.stamps = {A: now - 3.0, B: now - 1.0}
    policy = FreshnessPolicy(ttl_seconds=2.0, max_stale_seconds=10.0)
    builder = SnapshotBuilder([feed.source()], clock=clock, default_policy=policy)

    snapshot = await builder.build([A, B])

    assert snapshot[A].stale is True  # stale from the source, the last resort
    assert snapshot.diagnostics.stale_values == 1
    assert snapshot.diagnostics.observation_skew_ms == 2000.0
    await builder.aclose()


class SlowReads(AsyncMemoryCache):
    """get_many takes a second: long enough to close the builder meanwhile."""

    async def get_many(self, keys: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(1.0)
        return await super().get_many(keys, **kwargs)


async def test_b_diag_3_nothing_is_scheduled_after_aclose(clock: VirtualClock) -> None:
    feed = Feed(clock)
    builder = SnapshotBuilder([feed.source()], clock=clock, cache=SlowReads(), default_policy=SWR)
    await builder.build([A])
    await asyncio.sleep(1.5)  # A is past its TTL, usable under SWR
    build = asyncio.ensure_future(builder.build([A]))
    await asyncio.sleep(0.5)  # the build is reading the cache

    await builder.aclose()
    snapshot = await build

    assert snapshot[A].stale is True
    assert snapshot[A].metadata["refresh_scheduled"] is False
    assert snapshot.diagnostics.refresh_scheduled == 0
    assert feed.counter == 1


async def test_b_diag_5_a_revalidation_bypass_counts_as_a_miss(clock: VirtualClock) -> None:
    policy = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)
    builder = SnapshotBuilder([Feed(clock).source()], clock=clock, default_policy=policy)
    session = builder.session()
    stage = await session.resolve([A])

    snapshot = await session.revalidate([A], force_refresh=True)

    # Session diagnostics accumulate: the revalidation adds one miss (the bypass) and one call.
    before, after = stage.diagnostics, snapshot.diagnostics
    assert (before.cache_misses, after.cache_misses) == (1, 2)
    assert after.cache_hits == 0
    assert (before.source_calls, after.source_calls) == (1, 2)
    await builder.aclose()
