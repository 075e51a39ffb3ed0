"""Contract facts B-PUB-1 ... B-PUB-7 (the ResourcePublisher) and issue 12's defect 3, checked
through the public API only."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import Any

import pytest
from tests.doubles import ForwardingBatchAtomicCache

from coalestra import (
    AsyncMemoryCache,
    AuthorityPolicyResolver,
    CacheLookup,
    CacheWriteResult,
    CacheWriteStatus,
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    InMemoryMetrics,
    NullEventSink,
    PolicyResolver,
    PublishStatus,
    ResourceKey,
    ResourcePublisher,
    ResourceUpdate,
    SnapshotBuilder,
    SnapshotValue,
    SourceAuthorityPolicy,
    SourcePayload,
)
from coalestra.testing import VirtualClock

A = ResourceKey("market", "price", "A")
B = ResourceKey("market", "price", "B")
POLICY = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=60.0)


def publisher_for(cache: Any, clock: VirtualClock, **options: Any) -> ResourcePublisher:
    return ResourcePublisher(
        cache=cache,
        clock=clock,
        policy_resolver=PolicyResolver(POLICY),
        metrics=InMemoryMetrics(),
        events=NullEventSink(),
        **options,
    )


# --- B-PUB-1 -----------------------------------------------------------------------------------


async def test_b_pub_1_an_ignored_publication_returns_the_kept_revision() -> None:
    clock = VirtualClock()
    publisher = publisher_for(AsyncMemoryCache(), clock)
    now = clock.now()
    first = await publisher.publish(A, "new", source="s", observed_at=now)
    assert first.status is PublishStatus.PUBLISHED
    older = await publisher.publish(A, "old", source="s", observed_at=now - 1)
    assert older.status is PublishStatus.IGNORED_OLDER
    assert older.value.value == "new"
    assert older.previous is not None
    assert older.previous.value == "new"
    assert older.previous.version == first.value.version
    same = await publisher.publish(A, "dup", source="s", observed_at=now)
    assert same.status is PublishStatus.IGNORED_DUPLICATE
    assert same.value.value == "new"


async def test_b_pub_1_the_kept_revision_is_a_copy() -> None:
    clock = VirtualClock()
    cache = AsyncMemoryCache()
    publisher = publisher_for(cache, clock)
    now = clock.now()
    await publisher.publish(A, {"rows": [1]}, source="s", observed_at=now)
    ignored = await publisher.publish(A, {"rows": [0]}, source="s", observed_at=now - 1)
    ignored.value.value["rows"].append(2)
    held = await cache.get(A, now=now, policy=POLICY)
    assert held.value is not None
    assert held.value.value == {"rows": [1]}


# --- B-PUB-2 -----------------------------------------------------------------------------------


async def test_b_pub_2_publication_is_compared_with_a_fetched_value() -> None:
    clock = VirtualClock()
    observed = clock.now()

    async def fetch(_key: ResourceKey, _ctx: FetchContext) -> SourcePayload[str]:
        return SourcePayload("fetched", observed_at=observed)

    source = CallableSource(name="rest", priority=1, supports=lambda _k: True, fetcher=fetch)
    async with SnapshotBuilder([source], clock=clock, default_policy=POLICY) as builder:
        await builder.build([A])
        result = await builder.publisher.publish(A, "late", source="s", observed_at=observed - 5)
        assert result.status is PublishStatus.IGNORED_OLDER
        assert result.value.value == "fetched"
        assert (await builder.build([A])).value(A) == "fetched"


class BatchAtomicCache(ForwardingBatchAtomicCache):
    """An AsyncMemoryCache recording the batch calls made to it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    async def before(self, call: str, count: int) -> None:
        if call.startswith(("get", "set")):  # reads and writes, not invalidations
            self.calls.append((call, count))


async def test_b_pub_2_a_batch_atomic_cache_gets_one_write_with_every_candidate() -> None:
    clock = VirtualClock()
    cache = BatchAtomicCache()
    publisher = publisher_for(cache, clock)
    now = clock.now()
    await cache.inner.set(
        SnapshotValue(A, "held", "s", now, now, 0.0, False, False, 0.0)  # A's update will lose
    )
    results = await publisher.publish_many(
        [ResourceUpdate(A, "loser", "s", now - 1), ResourceUpdate(B, "winner", "s", now)]
    )
    writes = [call for call in cache.calls if call[0].startswith("set")]
    reads = [call for call in cache.calls if call[0].startswith("get")]
    assert writes == [("set_many_if_newer", 2)]
    assert len(reads) <= 1
    assert all(name == "get_many" for name, _ in reads)
    assert results[A].status is PublishStatus.IGNORED_OLDER
    assert results[B].status is PublishStatus.PUBLISHED
    cache.calls.clear()
    single = await publisher.publish(B, "again", source="s", observed_at=now + 1)
    assert single.published
    assert [call for call in cache.calls if call[0].startswith("set")] == [("set_many_if_newer", 1)]


async def test_b_pub_2_publish_and_publish_update_go_through_publish_many() -> None:
    clock = VirtualClock()
    publisher = publisher_for(AsyncMemoryCache(), clock)
    seen: list[list[ResourceKey]] = []
    original = publisher.publish_many

    async def spy(updates: Any, **options: Any) -> Any:
        seen.append([update.key for update in updates])
        return await original(updates, **options)

    publisher.publish_many = spy  # type: ignore[method-assign]
    await publisher.publish(A, 1, source="s")
    await publisher.publish_update(ResourceUpdate(B, 2, "s"))
    assert seen == [[A], [B]]


# --- B-PUB-3 -----------------------------------------------------------------------------------


class SingleKeyCache:
    """get/set/invalidate/clear only; records the peak of concurrent calls per method."""

    def __init__(self) -> None:
        self.entries: dict[ResourceKey, SnapshotValue[Any]] = {}
        self.active: dict[str, int] = {"get": 0, "set": 0, "invalidate": 0}
        self.peak: dict[str, int] = {"get": 0, "set": 0, "invalidate": 0}

    async def _enter(self, name: str) -> None:
        self.active[name] += 1
        self.peak[name] = max(self.peak[name], self.active[name])
        await asyncio.sleep(0.01)
        self.active[name] -= 1

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> CacheLookup:
        await self._enter("get")
        value = self.entries.get(key)
        return CacheLookup(value, value is not None, value is not None, 0.0)

    async def set(self, value: SnapshotValue[Any]) -> None:
        await self._enter("set")
        self.entries[value.key] = value

    async def invalidate(self, key: ResourceKey) -> None:
        await self._enter("invalidate")
        self.entries.pop(key, None)

    async def clear(self) -> None:
        self.entries.clear()


async def test_b_pub_3_single_key_cache_calls_are_bounded_by_max_pending_tasks() -> None:
    clock = VirtualClock()
    cache = SingleKeyCache()
    keys = [ResourceKey("market", "price", f"S{i}") for i in range(45)]
    async with SnapshotBuilder(
        [CallableSource(name="rest", priority=1, supports=lambda _k: True, fetcher=lambda k, c: 1)],
        clock=clock,
        cache=cache,
        default_policy=POLICY,
        max_pending_tasks=5,
    ) as builder:
        assert builder.publisher.max_pending_tasks == 5
        results = await builder.publisher.publish_many(
            [ResourceUpdate(key, 1, "s") for key in keys]
        )
        await builder.publisher.invalidate_many(keys)
    assert all(result.published for result in results.values())
    assert cache.peak == {"get": 5, "set": 5, "invalidate": 5}


class AtomicSingleKeyCache(SingleKeyCache):
    def __init__(self) -> None:
        super().__init__()
        self.sets = 0
        self.conditional = 0

    async def set(self, value: SnapshotValue[Any]) -> None:
        self.sets += 1
        await super().set(value)

    async def set_if_newer(
        self, value: SnapshotValue[Any], *, force: bool = False, replace_equal: bool = False
    ) -> CacheWriteResult:
        self.conditional += 1
        held = self.entries.get(value.key)
        if held is not None and not force and held.observed_at >= value.observed_at:
            return CacheWriteResult(CacheWriteStatus.IGNORED_OLDER, held, held)
        self.entries[value.key] = value
        return CacheWriteResult(CacheWriteStatus.STORED, value, held)


async def test_b_pub_3_an_atomic_single_key_cache_is_never_given_set() -> None:
    clock = VirtualClock()
    cache = AtomicSingleKeyCache()
    publisher = publisher_for(cache, clock)
    await publisher.publish_many([ResourceUpdate(A, 1, "s"), ResourceUpdate(B, 2, "s")])
    ignored = await publisher.publish(A, 0, source="s", observed_at=clock.now() - 1)
    assert cache.sets == 0
    assert cache.conditional == 3
    assert ignored.status is PublishStatus.IGNORED_OLDER
    assert ignored.value.value == 1


# --- B-PUB-4 and defect 3 ----------------------------------------------------------------------


async def test_b_pub_4_a_published_revision_describes_itself() -> None:
    clock = VirtualClock()
    publisher = publisher_for(AsyncMemoryCache(), clock)
    now = clock.now()
    result = await publisher.publish(A, 1, source="s", metadata={"seq": 1})
    value = result.value
    assert value.metadata == {"seq": 1, "published": True}
    assert (value.observed_at, value.fetched_at, value.age_seconds) == (now, now, 0.0)
    assert (value.stale, value.from_cache, value.latency_ms, value.attempts) == (
        False,
        False,
        0.0,
        0,
    )


async def test_b_pub_4_defect_3_an_old_publication_is_reported_old_and_stale() -> None:
    clock = VirtualClock()
    publisher = publisher_for(AsyncMemoryCache(), clock)
    result = await publisher.publish(A, 1, source="s", observed_at=clock.now() - 7.0)
    assert result.value.age_seconds == 7.0
    assert result.value.stale is True  # 7 s old, TTL 5 s: a build would serve it as stale
    fresh = await publisher.publish(B, 1, source="s", observed_at=clock.now() - 5.0)
    assert (fresh.value.age_seconds, fresh.value.stale) == (5.0, False)


async def test_b_pub_4_future_publication_keeps_its_stamp_and_records_the_skew() -> None:
    clock = VirtualClock()
    publisher = publisher_for(AsyncMemoryCache(), clock)
    now = clock.now()
    result = await publisher.publish(A, 1, source="s", observed_at=now + 0.5)
    assert result.value.observed_at == now + 0.5
    assert result.value.age_seconds == 0.0
    assert result.value.metadata == {"published": True, "clock_skew_seconds": 0.5}


async def test_b_pub_4_the_authority_rank_is_the_sources() -> None:
    clock = VirtualClock()
    authority = AuthorityPolicyResolver(SourceAuthorityPolicy({"stream": 7}))
    publisher = publisher_for(AsyncMemoryCache(), clock, authority_resolver=authority)
    assert (await publisher.publish(A, 1, source="stream")).value.authority_rank == 7


# --- B-PUB-5 -----------------------------------------------------------------------------------


async def test_b_pub_5_same_key_updates_reduce_to_rank_then_time_then_later() -> None:
    clock = VirtualClock()
    authority = AuthorityPolicyResolver(SourceAuthorityPolicy({"high": 2}))
    publisher = publisher_for(AsyncMemoryCache(), clock, authority_resolver=authority)
    now = clock.now()
    results = await publisher.publish_many(
        [
            ResourceUpdate(B, "b-first", "s", now),
            ResourceUpdate(A, "high-old", "high", now - 5),
            ResourceUpdate(A, "low-new", "low", now),
            ResourceUpdate(B, "b-second", "s", now),
        ]
    )
    assert list(results) == [B, A]
    assert results[A].value.value == "high-old"
    assert results[B].value.value == "b-second"  # a tie goes to the later update


# --- B-PUB-6 -----------------------------------------------------------------------------------


def test_b_pub_6_constructor_errors() -> None:
    clock = VirtualClock()
    with pytest.raises(ValueError, match="lock_stripes") as stripes:
        publisher_for(AsyncMemoryCache(), clock, lock_stripes=0)
    assert str(stripes.value) == "lock_stripes must be at least 1"
    with pytest.raises(ValueError, match="max_pending_tasks") as pending:
        publisher_for(AsyncMemoryCache(), clock, max_pending_tasks=0)
    assert str(pending.value) == "max_pending_tasks must be at least 1"
    authority = AuthorityPolicyResolver(SourceAuthorityPolicy({"stream": 7}))
    with pytest.raises(ValueError, match="validates_source_authority") as plain:
        publisher_for(SingleKeyCache(), clock, authority_resolver=authority)
    assert str(plain.value) == (
        "authority policies require a cache that declares validates_source_authority = True"
    )


def test_b_pub_6_public_attributes() -> None:
    clock = VirtualClock()
    cache = AsyncMemoryCache()
    metrics, events = InMemoryMetrics(), NullEventSink()
    resolver = PolicyResolver(POLICY)
    authority = AuthorityPolicyResolver()
    publisher = ResourcePublisher(
        cache=cache,
        clock=clock,
        policy_resolver=resolver,
        metrics=metrics,
        events=events,
        authority_resolver=authority,
        max_pending_tasks=3,
    )
    assert publisher.cache is cache
    assert publisher.clock is clock
    assert publisher.policy_resolver is resolver
    assert publisher.metrics is metrics
    assert publisher.events is events
    assert publisher.observation_policy is not None
    assert publisher.authority_resolver is authority
    assert publisher.max_pending_tasks == 3


async def test_b_pub_6_a_replaced_publish_update_affects_publish_and_the_sync_facade() -> None:
    clock = VirtualClock()
    async with SnapshotBuilder(
        [CallableSource(name="rest", priority=1, supports=lambda _k: True, fetcher=lambda k, c: 1)],
        clock=clock,
        default_policy=POLICY,
    ) as builder:
        publisher = builder.publisher
        seen: list[ResourceKey] = []
        original = publisher.publish_update

        async def spy(update: ResourceUpdate[Any], **options: Any) -> Any:
            seen.append(update.key)
            return await original(update, **options)

        publisher.publish_update = spy  # type: ignore[method-assign]
        await publisher.publish(A, 1, source="s")
        assert seen == [A]


# --- B-PUB-7 -----------------------------------------------------------------------------------


class ForgetfulCache(BatchAtomicCache):
    async def set_many_if_newer(
        self,
        values: Collection[SnapshotValue[Any]],
        *,
        force: bool = False,
        replace_equal: bool = False,
    ) -> Mapping[ResourceKey, CacheWriteResult]:
        results = await super().set_many_if_newer(values, force=force, replace_equal=replace_equal)
        return {key: result for key, result in results.items() if key != B}


async def test_b_pub_7_an_atomic_cache_omitting_a_result_raises() -> None:
    clock = VirtualClock()
    publisher = publisher_for(ForgetfulCache(), clock)
    with pytest.raises(RuntimeError) as caught:
        await publisher.publish_many([ResourceUpdate(A, 1, "s"), ResourceUpdate(B, 2, "s")])
    assert str(caught.value) == f"atomic cache omitted write results for: {B}"


def test_b_pub_6_the_sync_facade_drives_the_same_publisher_instance() -> None:
    from coalestra.sync import SyncSnapshotBuilder

    source = CallableSource(
        name="rest", priority=1, supports=lambda _k: True, fetcher=lambda k, c: 1
    )
    builder = SnapshotBuilder([source], default_policy=POLICY)
    seen: list[ResourceKey] = []
    original = builder.publisher.publish_update

    async def spy(update: ResourceUpdate[Any], **options: Any) -> Any:
        seen.append(update.key)
        return await original(update, **options)

    builder.publisher.publish_update = spy  # type: ignore[method-assign]
    facade = SyncSnapshotBuilder(builder, shutdown_timeout_seconds=1.0)
    try:
        assert facade.publisher.publish(A, 1, source="s").published
        assert facade.publisher.submit_publish(B, 2, source="s").result(timeout=10).published
    finally:
        facade.close()
    assert seen == [A, B]
