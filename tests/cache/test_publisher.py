"""ResourcePublisher: the product page's examples, monotonic rules, authority, reporting."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from tests.doubles import Events, ForwardingBatchAtomicCache

from coalestra.cache import (
    AsyncMemoryCache,
    PublishResult,
    PublishStatus,
    ResourcePublisher,
    ResourceUpdate,
)
from coalestra.core import (
    AuthorityPolicyResolver,
    CacheLookup,
    CacheWriteResult,
    FreshnessPolicy,
    ObservationPolicy,
    PayloadCopySubsystemClosedError,
    ResourceKey,
    SnapshotValue,
    SourceAuthorityPolicy,
    SourceProtocolError,
)
from coalestra.testing import VirtualClock

PRICE = ResourceKey("market", "price", "BTCUSDT")
PRICE_BTC = PRICE
PRICE_ETH = ResourceKey("market", "price", "ETHUSDT")
POSITION_BTC = ResourceKey("account", "position", "BTC")
CANDLES = ResourceKey("market", "candles", "BTCUSDT", {"interval": "1m", "venue": "spot"})
FOREVER = FreshnessPolicy(ttl_seconds=1e9, max_stale_seconds=1e9)


# -- fakes ------------------------------------------------------------------------------------


class Metrics:
    def __init__(self) -> None:
        self.increments: list[tuple[str, int, dict[str, str]]] = []

    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        self.increments.append((metric, value, labels))

    def observe(self, metric: str, value: float, **labels: str) -> None:
        raise AssertionError("the publisher observes nothing")


class BrokenSink:
    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        raise RuntimeError("metrics backend down")

    def observe(self, metric: str, value: float, **labels: str) -> None:
        raise RuntimeError("metrics backend down")

    def emit(self, event_type: str, **payload: Any) -> None:
        raise RuntimeError("event backend down")


class Policies:
    def resolve(self, key: ResourceKey) -> FreshnessPolicy:
        return FOREVER


class PlainCache:
    """A naive AsyncCache (get/set only) that stores references and yields inside each call."""

    def __init__(self) -> None:
        self.data: dict[ResourceKey, SnapshotValue[Any]] = {}
        self.invalidated: list[ResourceKey] = []

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> CacheLookup:
        await asyncio.sleep(0)
        found = self.data.get(key)
        return CacheLookup(found, found is not None, False, 0.0 if found else None)

    async def set(self, value: SnapshotValue[Any]) -> None:
        await asyncio.sleep(0)
        self.data[value.key] = value

    async def invalidate(self, key: ResourceKey) -> None:
        await asyncio.sleep(0)
        self.invalidated.append(key)
        self.data.pop(key, None)

    async def clear(self) -> None:
        self.data.clear()


class BatchCache(ForwardingBatchAtomicCache):
    """Delegates to an AsyncMemoryCache and counts the calls the publisher makes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def before(self, call: str, count: int) -> None:
        if call not in ("get", "get_many", "clear"):  # writes and invalidations
            self.calls.append(call)


class SlowAtomicCache:
    """An atomic (not batch) cache whose writes take a second of virtual time each."""

    def __init__(self) -> None:
        self.inner = AsyncMemoryCache()
        self.active = 0
        self.peak = 0

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> CacheLookup:
        return await self.inner.get(key, now=now, policy=policy)

    async def set(self, value: SnapshotValue[Any]) -> None:
        await self.inner.set(value)

    async def set_if_newer(
        self, value: SnapshotValue[Any], *, force: bool = False, replace_equal: bool = False
    ) -> CacheWriteResult:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(1.0)
            return await self.inner.set_if_newer(value, force=force, replace_equal=replace_equal)
        finally:
            self.active -= 1

    async def invalidate(self, key: ResourceKey) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(1.0)
            await self.inner.invalidate(key)
        finally:
            self.active -= 1

    async def clear(self) -> None:
        await self.inner.clear()


@dataclass
class Harness:
    publisher: ResourcePublisher
    cache: Any
    metrics: Metrics
    events: Events
    clock: VirtualClock

    async def cached(self, key: ResourceKey) -> SnapshotValue[Any] | None:
        lookup = await self.cache.get(key, now=self.clock.now(), policy=FOREVER)
        result: SnapshotValue[Any] | None = lookup.value
        return result

    def statuses(self) -> list[str]:
        return [labels["status"] for _m, _v, labels in self.metrics.increments]


def harness(clock: VirtualClock, cache: Any = None, **options: Any) -> Harness:
    cache = AsyncMemoryCache() if cache is None else cache
    metrics, events = Metrics(), Events()
    publisher = ResourcePublisher(
        cache=cache,
        clock=clock,
        policy_resolver=Policies(),
        metrics=metrics,
        events=events,
        **options,
    )
    return Harness(publisher, cache, metrics, events, clock)


# -- the product page's examples --------------------------------------------------------------


async def test_publish_with_metadata(clock: VirtualClock) -> None:
    h = harness(clock)
    event_timestamp = clock.now() - 0.5
    result = await h.publisher.publish(
        PRICE,
        {"price": "65001.25"},
        source="market-stream",
        observed_at=event_timestamp,
        metadata={"sequence": 41},
    )
    assert isinstance(result, PublishResult)
    assert result.status is PublishStatus.PUBLISHED
    assert result.published
    assert result.previous is None
    offered = result.value
    assert offered.key == PRICE
    assert offered.value == {"price": "65001.25"}
    assert (offered.source, offered.observed_at, offered.fetched_at) == (
        "market-stream",
        event_timestamp,
        clock.now(),
    )
    age = clock.now() - event_timestamp  # as a build would serve it now (B-PUB-4)
    assert (offered.age_seconds, offered.stale, offered.from_cache) == (age, False, False)
    assert (offered.latency_ms, offered.attempts, offered.authority_rank) == (0.0, 0, 0)
    assert offered.metadata == {"sequence": 41, "published": True}
    stored = await h.cached(PRICE)
    assert stored is not None
    assert stored.value == {"price": "65001.25"}
    assert stored.version == offered.version
    assert stored.metadata == {"sequence": 41, "published": True}


async def test_publish_without_observed_at_uses_the_clock(clock: VirtualClock) -> None:
    h = harness(clock)
    await asyncio.sleep(42.0)
    result = await h.publisher.publish(PRICE, 1.0, source="stream")
    assert result.value.observed_at == clock.now() == result.value.fetched_at


async def test_publish_many_with_resource_updates(clock: VirtualClock) -> None:
    h = harness(clock, BatchCache())
    btc_time, eth_time = clock.now() - 2.0, clock.now() - 1.0
    results = await h.publisher.publish_many(
        [
            ResourceUpdate(PRICE_BTC, {"p": 1}, source="stream", observed_at=btc_time),
            ResourceUpdate(PRICE_ETH, {"p": 2}, source="stream", observed_at=eth_time),
        ]
    )
    assert list(results) == [PRICE_BTC, PRICE_ETH]
    assert all(result.published for result in results.values())
    assert results[PRICE_ETH].value.observed_at == eth_time
    assert h.cache.calls == ["set_many_if_newer"]  # one atomic batch write
    btc = await h.cached(PRICE_BTC)
    assert btc is not None
    assert btc.value == {"p": 1}
    assert h.statuses() == ["published", "published"]


async def test_invalidate_with_reason(clock: VirtualClock) -> None:
    h = harness(clock)
    await h.publisher.publish(POSITION_BTC, {"qty": 1}, source="user-stream")
    await h.publisher.invalidate(POSITION_BTC, reason="stream-gap")
    assert await h.cached(POSITION_BTC) is None
    assert h.metrics.increments[-1] == (
        "resource_invalidation_total",
        1,
        {"resource_namespace": "account", "resource_name": "position"},
    )
    assert h.events.records[-1] == (
        "resource_invalidated",
        {"resource": "account:position:BTC", "reason": "stream-gap"},
    )


async def test_publish_update_publishes_one_update(clock: VirtualClock) -> None:
    h = harness(clock)
    update = ResourceUpdate(PRICE, 7.5, source="stream", metadata={"seq": 1})
    result = await h.publisher.publish_update(update)
    assert result.published
    assert result.value.metadata == {"seq": 1, "published": True}
    older = ResourceUpdate(PRICE, 7.0, source="stream", observed_at=clock.now() - 1)
    assert (await h.publisher.publish_update(older)).status is PublishStatus.IGNORED_OLDER
    forced = await h.publisher.publish_update(older, force=True)
    assert forced.published
    assert (await h.publisher.publish_update(older)).status is PublishStatus.IGNORED_DUPLICATE
    assert (await h.publisher.publish_update(older, replace_equal=True)).published


# -- monotonic publication --------------------------------------------------------------------


@pytest.mark.parametrize("cache_kind", ["memory", "plain", "batch"])
async def test_monotonic_rules(clock: VirtualClock, cache_kind: str) -> None:
    cache = {"memory": AsyncMemoryCache, "plain": PlainCache, "batch": BatchCache}[cache_kind]()
    h = harness(clock, cache)
    pub = h.publisher
    t = clock.now() - 10.0
    first = await pub.publish(PRICE, "v1", source="stream", observed_at=t)
    assert first.status is PublishStatus.PUBLISHED
    older = await pub.publish(PRICE, "v0", source="stream", observed_at=t - 1)
    assert older.status is PublishStatus.IGNORED_OLDER
    assert not older.published
    assert older.previous is not None
    assert older.previous.value == "v1"
    duplicate = await pub.publish(PRICE, "v1-again", source="stream", observed_at=t)
    assert duplicate.status is PublishStatus.IGNORED_DUPLICATE
    equal = await pub.publish(PRICE, "v1-fixed", source="stream", observed_at=t, replace_equal=True)
    assert equal.status is PublishStatus.PUBLISHED
    forced = await pub.publish(PRICE, "repaired", source="admin", observed_at=t - 5, force=True)
    assert forced.status is PublishStatus.PUBLISHED
    assert forced.previous is not None
    assert forced.previous.value == "v1-fixed"
    newer = await pub.publish(PRICE, "v2", source="stream", observed_at=t + 1)
    assert newer.published
    stored = await h.cached(PRICE)
    assert stored is not None
    assert stored.value == "v2"
    assert h.statuses() == [
        "published",
        "ignored_older",
        "ignored_duplicate",
        "published",
        "published",
        "published",
    ]


async def test_authority_ranks_decide_before_timestamps(clock: VirtualClock) -> None:
    authority = AuthorityPolicyResolver(
        SourceAuthorityPolicy(source_ranks={"reconciled-local": 300, "binance-rest": 100})
    )
    h = harness(clock, authority_resolver=authority)
    pub = h.publisher
    now = clock.now()
    rest = await pub.publish(PRICE, "rest", source="binance-rest", observed_at=now - 5)
    assert rest.value.authority_rank == 100
    local = await pub.publish(PRICE, "local", source="reconciled-local", observed_at=now - 10)
    assert local.status is PublishStatus.PUBLISHED  # higher rank wins although older
    newer_rest = await pub.publish(PRICE, "rest2", source="binance-rest", observed_at=now)
    assert newer_rest.status is PublishStatus.IGNORED_LOWER_AUTHORITY
    unknown = await pub.publish(PRICE, "x", source="someone", observed_at=now)
    assert unknown.status is PublishStatus.IGNORED_LOWER_AUTHORITY
    assert unknown.value.authority_rank == 300  # the kept revision (B-PUB-1)
    forced = await pub.publish(PRICE, "admin", source="binance-rest", observed_at=now, force=True)
    assert forced.published
    stored = await h.cached(PRICE)
    assert stored is not None
    assert (stored.value, stored.authority_rank) == ("admin", 100)


# -- observation time -------------------------------------------------------------------------


async def test_future_observation_beyond_tolerance_is_rejected(clock: VirtualClock) -> None:
    h = harness(clock)
    with pytest.raises(SourceProtocolError, match="future"):
        await h.publisher.publish(PRICE, 1, source="stream", observed_at=clock.now() + 5)
    assert await h.cached(PRICE) is None
    assert h.metrics.increments == []
    assert h.events.records == []


async def test_small_future_skew_is_accepted_and_recorded(clock: VirtualClock) -> None:
    h = harness(clock)
    now = clock.now()
    result = await h.publisher.publish(
        PRICE, 1, source="stream", observed_at=now + 0.25, metadata={"seq": 3}
    )
    assert result.published
    assert result.value.observed_at == now + 0.25  # kept as given, never clamped
    assert result.value.metadata == {"seq": 3, "clock_skew_seconds": 0.25, "published": True}
    stored = await h.cached(PRICE)
    assert stored is not None
    assert stored.metadata["clock_skew_seconds"] == 0.25


async def test_custom_observation_policy_can_keep_instead_of_reject(clock: VirtualClock) -> None:
    policy = ObservationPolicy(future_tolerance_seconds=0.1, reject_future_observations=False)
    h = harness(clock, observation_policy=policy)
    now = clock.now()
    result = await h.publisher.publish(PRICE, 1, source="stream", observed_at=now + 60)
    assert result.value.observed_at == now + 60
    assert result.value.metadata["clock_skew_seconds"] == 60.0


# -- batches ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cache_kind", ["memory", "plain", "batch"])
async def test_publish_many_same_key_newest_wins_in_any_order(
    clock: VirtualClock, cache_kind: str
) -> None:
    cache = {"memory": AsyncMemoryCache, "plain": PlainCache, "batch": BatchCache}[cache_kind]()
    h = harness(clock, cache)
    now = clock.now()
    results = await h.publisher.publish_many(
        [
            ResourceUpdate(PRICE, "middle", source="s", observed_at=now - 2),
            ResourceUpdate(PRICE, "newest", source="s", observed_at=now - 1),
            ResourceUpdate(PRICE, "oldest", source="s", observed_at=now - 3),
            ResourceUpdate(PRICE_ETH, "eth", source="s", observed_at=now - 3),
        ]
    )
    assert list(results) == [PRICE, PRICE_ETH]
    assert results[PRICE].value.value == "newest"
    assert results[PRICE].published
    stored = await h.cached(PRICE)
    assert stored is not None
    assert stored.value == "newest"
    assert h.statuses() == ["published", "published"]  # only the winner is reported


async def test_publish_many_equal_timestamps_go_to_the_later_update(
    clock: VirtualClock,
) -> None:
    h = harness(clock)
    now = clock.now()
    batch = [
        ResourceUpdate(PRICE, "first", source="s", observed_at=now),
        ResourceUpdate(PRICE, "second", source="s", observed_at=now),
    ]
    assert (await h.publisher.publish_many(batch))[PRICE].value.value == "second"  # B-PUB-5
    other = ResourceKey("market", "price", "X")
    batch = [ResourceUpdate(other, v.value, source="s", observed_at=now) for v in batch]
    assert (await h.publisher.publish_many(batch, replace_equal=True))[other].value.value == (
        "second"
    )


async def test_publish_many_in_batch_authority_wins(clock: VirtualClock) -> None:
    authority = AuthorityPolicyResolver(SourceAuthorityPolicy(source_ranks={"local": 2}))
    h = harness(clock, authority_resolver=authority)
    now = clock.now()
    results = await h.publisher.publish_many(
        [
            ResourceUpdate(PRICE, "local", source="local", observed_at=now - 9),
            ResourceUpdate(PRICE, "rest", source="rest", observed_at=now),
        ]
    )
    assert results[PRICE].value.value == "local"


async def test_publish_many_force_overrides_the_cache(clock: VirtualClock) -> None:
    h = harness(clock)
    now = clock.now()
    await h.publisher.publish(PRICE, "cached", source="s", observed_at=now)
    updates = [ResourceUpdate(PRICE, "fix", source="s", observed_at=now - 10)]
    assert (await h.publisher.publish_many(updates))[PRICE].status is PublishStatus.IGNORED_OLDER
    assert (await h.publisher.publish_many(updates, force=True))[PRICE].published
    stored = await h.cached(PRICE)
    assert stored is not None
    assert stored.value == "fix"


async def test_publish_many_without_batch_support_bounds_pending_writes(
    clock: VirtualClock,
) -> None:
    cache = SlowAtomicCache()
    h = harness(clock, cache, max_pending_tasks=3)
    keys = [ResourceKey("market", "price", f"S{i}") for i in range(10)]
    start = clock.monotonic()
    results = await h.publisher.publish_many(
        [ResourceUpdate(k, i, "s") for i, k in enumerate(keys)]
    )
    assert cache.peak == 3
    assert clock.monotonic() - start == 4.0  # ceil(10 / 3) waves of one virtual second
    assert [results[k].value.value for k in keys] == list(range(10))
    assert all(result.published for result in results.values())
    await h.publisher.invalidate_many(keys, reason="reset")
    assert cache.peak == 3
    assert await cache.inner.size() == 0


async def test_publish_many_of_nothing(clock: VirtualClock) -> None:
    h = harness(clock, BatchCache())
    assert await h.publisher.publish_many([]) == {}
    assert h.cache.calls == []
    assert h.metrics.increments == []


async def test_invalidate_many_uses_one_batch_call_and_reports_each(clock: VirtualClock) -> None:
    h = harness(clock, BatchCache())
    await h.publisher.publish_many([ResourceUpdate(k, 1, "s") for k in (PRICE, PRICE_ETH)])
    await h.publisher.invalidate_many([PRICE, PRICE_ETH], reason="reconnect")
    assert h.cache.calls == ["set_many_if_newer", "invalidate_many"]
    assert await h.cache.inner.size() == 0
    invalidations = [e for e in h.events.records if e[0] == "resource_invalidated"]
    assert [payload["resource"] for _t, payload in invalidations] == [str(PRICE), str(PRICE_ETH)]


async def test_invalidate_on_a_plain_cache(clock: VirtualClock) -> None:
    cache = PlainCache()
    h = harness(clock, cache, lock_stripes=1)
    await h.publisher.publish(PRICE, 1, source="s")
    await h.publisher.invalidate_many([PRICE, PRICE_ETH])
    await h.publisher.invalidate(PRICE)
    assert cache.invalidated == [PRICE, PRICE_ETH, PRICE]
    assert cache.data == {}


# -- emulated compare-and-write ---------------------------------------------------------------


@pytest.mark.parametrize("stripes", [1, 2, 64])
async def test_plain_cache_compare_and_write_is_serialized_per_key(
    clock: VirtualClock, stripes: int
) -> None:
    cache = PlainCache()
    h = harness(clock, cache, lock_stripes=stripes)
    now = clock.now()
    # Without the stripe lock both would read "nothing cached" and the older would land last.
    newer, older = await asyncio.gather(
        h.publisher.publish(PRICE, "newer", source="s", observed_at=now),
        h.publisher.publish(PRICE, "older", source="s", observed_at=now - 1),
    )
    assert newer.published
    assert older.status is PublishStatus.IGNORED_OLDER
    assert cache.data[PRICE].value == "newer"


# -- reporting --------------------------------------------------------------------------------


async def test_metrics_labels_are_low_cardinality_and_events_carry_identity(
    clock: VirtualClock,
) -> None:
    h = harness(clock)
    observed = clock.now() - 1
    await h.publisher.publish(CANDLES, [1, 2], source="kline-stream", observed_at=observed)
    await h.publisher.publish(CANDLES, [0], source="kline-stream", observed_at=observed - 1)
    assert h.metrics.increments == [
        (
            "resource_publish_total",
            1,
            {
                "status": status,
                "source": "kline-stream",
                "resource_namespace": "market",
                "resource_name": "candles",
            },
        )
        for status in ("published", "ignored_older")
    ]
    resource = "market:candles:BTCUSDT?interval=1m&venue=spot"
    assert h.events.records == [
        (
            "resource_published",
            {
                "resource": resource,
                "source": "kline-stream",
                "observed_at": observed,
                "replaced": False,
                "forced": False,
                "authority_rank": 0,
            },
        ),
        (
            "resource_publish_ignored",
            {
                "resource": resource,
                "source": "kline-stream",
                "status": "ignored_older",
                "observed_at": observed - 1,
                "cached_observed_at": observed,
                "candidate_authority_rank": 0,
                "cached_authority_rank": 0,
            },
        ),
    ]


async def test_failing_sinks_never_fail_publication(clock: VirtualClock) -> None:
    broken = BrokenSink()
    cache = AsyncMemoryCache()
    publisher = ResourcePublisher(
        cache=cache, clock=clock, policy_resolver=Policies(), metrics=broken, events=broken
    )
    result = await publisher.publish(PRICE, 1, source="s")
    assert result.published
    many = await publisher.publish_many([ResourceUpdate(PRICE_ETH, 2, "s")])
    assert many[PRICE_ETH].published
    await publisher.invalidate(PRICE, reason="gap")
    await publisher.invalidate_many([PRICE_ETH])
    assert await cache.size() == 0


async def test_health_tracker_is_accepted(clock: VirtualClock) -> None:
    h = harness(clock, health_tracker=object())
    assert (await h.publisher.publish(PRICE, 1, source="s")).published


class FailingAtomicCache(SlowAtomicCache):
    """Fails the write of one key, after a virtual second like the others."""

    async def set_if_newer(
        self, value: SnapshotValue[Any], *, force: bool = False, replace_equal: bool = False
    ) -> CacheWriteResult:
        if value.key == PRICE_ETH:
            await asyncio.sleep(0.5)
            raise ConnectionError("cache node down")
        return await super().set_if_newer(value, force=force, replace_equal=replace_equal)


async def test_publish_many_write_failure_propagates_unwrapped(clock: VirtualClock) -> None:
    cache = FailingAtomicCache()
    h = harness(clock, cache, max_pending_tasks=2)
    keys = [PRICE, PRICE_ETH, *(ResourceKey("market", "price", f"S{i}") for i in range(4))]
    with pytest.raises(ConnectionError, match="cache node down"):
        await h.publisher.publish_many([ResourceUpdate(key, 1, "s") for key in keys])
    assert cache.active == 0  # the other worker was cancelled, not left running
    assert h.metrics.increments == []  # a failed batch reports no outcome


# -- the direct single-publication path ---------------------------------------------------------


async def test_publish_many_patched_on_the_class_still_sees_every_publication(
    clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # publish() takes a direct path only while publish_update and publish_many are the class's
    # own; a method patched on the class (not only on the instance) must be called.
    original = ResourcePublisher.publish_many
    seen: list[list[ResourceKey]] = []

    async def spy(self: ResourcePublisher, updates: Any, **options: Any) -> Any:
        seen.append([update.key for update in updates])
        return await original(self, updates, **options)

    monkeypatch.setattr(ResourcePublisher, "publish_many", spy)
    h = harness(clock)
    assert (await h.publisher.publish(PRICE, 1.0, source="s")).published
    assert (await h.publisher.publish_update(ResourceUpdate(PRICE_ETH, 2.0, "s"))).published
    assert seen == [[PRICE], [PRICE_ETH]]


async def test_a_large_payload_published_alone_is_isolated_both_ways(clock: VirtualClock) -> None:
    # Large payloads are copied in worker threads, off the direct path: same outcome.
    h = harness(clock)
    rows = [[index, index + 1] for index in range(1000)]
    result = await h.publisher.publish(CANDLES, rows, source="s", metadata={"seq": [1]})
    assert result.published
    rows[0].append("input mutated")
    result.value.value[1].append("result mutated")
    result.value.metadata["seq"].append(2)
    cached = await h.cache.get(CANDLES, now=clock.now(), policy=FOREVER)
    assert cached.value is not None
    assert cached.value.value == [[index, index + 1] for index in range(1000)]
    assert cached.value.metadata == {"seq": [1], "published": True}
    again = await h.publisher.publish(CANDLES, rows, source="s", observed_at=clock.now() - 1)
    assert again.status is PublishStatus.IGNORED_OLDER
    assert again.value.value == cached.value.value
    assert again.value.value is not cached.value.value


async def test_a_small_dict_published_is_three_independent_objects(clock: VirtualClock) -> None:
    # The cache keeps the publisher's own revision with a copy of the payload; the result holds
    # another copy: input, cache and result share nothing mutable.
    h = harness(clock)
    tick = {"bid": 1.0, "ask": 1.1, "levels": [1, 2]}
    result = await h.publisher.publish(PRICE, tick, source="s", metadata={"seq": [7]})
    tick["levels"].append(3)
    result.value.value["levels"].append(4)
    result.value.metadata["seq"].append(8)
    cached = await h.cache.get(PRICE, now=clock.now(), policy=FOREVER)
    assert cached.value is not None
    assert cached.value.value == {"bid": 1.0, "ask": 1.1, "levels": [1, 2]}
    assert cached.value.metadata == {"seq": [7], "published": True}
    assert cached.value.version == result.value.version


async def test_publishing_into_a_closed_memory_cache_raises_and_writes_nothing(
    clock: VirtualClock,
) -> None:
    h = harness(clock)
    await h.cache.aclose()
    with pytest.raises(PayloadCopySubsystemClosedError):
        await h.publisher.publish(PRICE, {"bid": 1.0}, source="s")
    with pytest.raises(PayloadCopySubsystemClosedError):
        await h.publisher.publish_many([ResourceUpdate(PRICE, 1.0, "s")])
    assert await h.cache.size() == 0


@pytest.mark.parametrize("batch", [False, True])
async def test_a_flat_dict_published_is_three_independent_objects(
    clock: VirtualClock, batch: bool
) -> None:
    # A flat dict (atoms only) is copied by its own copy(), judged once for both copies: input,
    # cache and result still share nothing, and every warm read gets a private copy.
    h = harness(clock)
    tick = {"bid": 1.0, "ask": 1.1, "ts": 7}
    if batch:
        result = (await h.publisher.publish_many([ResourceUpdate(PRICE, tick, "s")]))[PRICE]
    else:
        result = await h.publisher.publish(PRICE, tick, source="s")
    assert result.published
    tick["bid"] = 2.0
    result.value.value["ask"] = 3.0
    first = await h.cache.get(PRICE, now=clock.now(), policy=FOREVER)
    second = await h.cache.get(PRICE, now=clock.now(), policy=FOREVER)
    assert first.value is not None
    assert second.value is not None
    first.value.value["ts"] = 8
    assert second.value.value == {"bid": 1.0, "ask": 1.1, "ts": 7}
    assert second.value.metadata == {"published": True}


async def test_a_flat_dict_published_with_mutable_metadata_keeps_both_private(
    clock: VirtualClock,
) -> None:
    h = harness(clock)
    result = await h.publisher.publish(PRICE, {"bid": 1.0}, source="s", metadata={"seq": [1]})
    result.value.value["bid"] = 5.0
    result.value.metadata["seq"].append(2)
    cached = await h.cache.get(PRICE, now=clock.now(), policy=FOREVER)
    assert cached.value is not None
    assert cached.value.value == {"bid": 1.0}
    assert cached.value.metadata == {"seq": [1], "published": True}


async def test_a_custom_copier_is_called_for_both_copies_of_a_flat_publication(
    clock: VirtualClock,
) -> None:
    # B-CACHE-11: a custom copier runs at every boundary, a flat payload included.
    copied: list[object] = []

    def copier(value: Any) -> Any:
        copied.append(value)
        return dict(value)

    h = harness(clock, cache=AsyncMemoryCache(payload_copier=copier))
    tick = {"bid": 1.0}
    result = await h.publisher.publish(PRICE, tick, source="s")
    assert result.published
    assert copied == [tick, tick]
    assert result.value.value == tick
    assert result.value.value is not tick


@pytest.mark.parametrize("payload", [1.0, {"bid": 1.0}, {"levels": [1]}])
async def test_a_publish_result_equals_the_checked_constructors(
    clock: VirtualClock, payload: Any
) -> None:
    # The publisher makes its results unchecked (a retyped twin): each is a real PublishResult,
    # equal to what the checked constructor makes of the same parts, and frozen.
    h = harness(clock)
    first = await h.publisher.publish(PRICE, payload, source="s")
    again = (await h.publisher.publish_many([ResourceUpdate(PRICE, payload, "s")]))[PRICE]
    for result in (first, again):
        assert type(result) is PublishResult
        assert result == PublishResult(result.status, result.value, result.previous)
        with pytest.raises(AttributeError):
            result.status = PublishStatus.PUBLISHED  # type: ignore[misc]
    assert first.status is PublishStatus.PUBLISHED
    assert first.previous is None
    assert again.status is PublishStatus.IGNORED_DUPLICATE
    assert again.previous is not None
