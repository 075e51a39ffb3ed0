"""AsyncMemoryCache reads: freshness classification, expiry, LRU touch, dependencies, stats."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from tests.doubles import fresh_value

from coalestra.cache import AsyncMemoryCache, CacheStats
from coalestra.core import (
    AtomicAsyncCache,
    AuthorityAwareCache,
    BatchAtomicAsyncCache,
    CacheLookup,
    FreshnessPolicy,
    PayloadIsolationError,
    ResourceKey,
    SnapshotValue,
)

A = ResourceKey("market", "price", "BTC")
B = ResourceKey("market", "price", "ETH")
C = ResourceKey("market", "price", "SOL")
DERIVED = ResourceKey("market", "spread", "BTC-ETH")
DEEP = ResourceKey("market", "signal", "BTC-ETH")
POLICY = FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=15.0)
T0 = 1_000.0


def value(
    key: ResourceKey, payload: Any = 1.0, observed_at: float = T0, **fields: Any
) -> SnapshotValue[Any]:
    return fresh_value(key, payload, observed_at, latency_ms=2.0, **fields)


async def stats(cache: AsyncMemoryCache) -> CacheStats:
    return await cache.stats()


def test_declares_authority_and_implements_the_cache_protocols() -> None:
    cache = AsyncMemoryCache()
    assert cache.validates_source_authority is True
    assert isinstance(cache, AtomicAsyncCache)
    assert isinstance(cache, BatchAtomicAsyncCache)
    assert isinstance(cache, AuthorityAwareCache)


async def test_fresh_hit_carries_read_time_provenance() -> None:
    cache = AsyncMemoryCache()
    stored = value(A, 42.5, metadata={"seq": 7})
    await cache.set(stored)
    lookup = await cache.get(A, now=T0 + 3.0, policy=POLICY)
    assert lookup.fresh is True
    assert lookup.usable_stale is True  # True on fresh hits too
    assert lookup.hit is True
    assert lookup.age_seconds == 3.0
    assert type(lookup) is CacheLookup
    assert type(lookup.value) is SnapshotValue
    assert lookup.value == stored  # every stored field as is: only builds restamp (B-CACHE-4)
    assert (lookup.value.age_seconds, lookup.value.from_cache) == (0.0, False)
    assert lookup.value.version == stored.version
    with pytest.raises(dataclasses.FrozenInstanceError):
        lookup.value.stale = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        lookup.fresh = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("age", "fresh"),
    [(0.0, True), (9.999, True), (10.0, True), (10.001, False), (15.0, False)],
)
async def test_ttl_and_max_stale_boundaries(age: float, fresh: bool) -> None:
    cache = AsyncMemoryCache()
    await cache.set(value(A))
    lookup = await cache.get(A, now=T0 + age, policy=POLICY)
    assert (lookup.fresh, lookup.usable_stale) == (fresh, True)
    assert lookup.value is not None
    assert lookup.fresh == POLICY.is_fresh(age)
    assert lookup.usable_stale == POLICY.is_usable(age)


async def test_expired_entry_is_removed_and_counted() -> None:
    cache = AsyncMemoryCache()
    await cache.set(value(A))
    lookup = await cache.get(A, now=T0 + 15.5, policy=POLICY)
    assert lookup.value is None
    assert (lookup.fresh, lookup.usable_stale, lookup.age_seconds) == (False, False, 15.5)
    assert await cache.size() == 0
    counters = await stats(cache)
    assert (counters.expirations, counters.misses, counters.hits) == (1, 1, 0)
    # Gone for good: a later read under a more generous policy does not resurrect it.
    assert (await cache.get(A, now=T0, policy=FreshnessPolicy(100.0, 100.0))).value is None


async def test_get_many_classifies_each_key_and_counts() -> None:
    cache = AsyncMemoryCache()
    await cache.set_many([value(A, observed_at=T0), value(B, observed_at=T0 - 12.0)])
    await cache.set(value(C, observed_at=T0 - 30.0))  # older than max_stale (15 s): expired
    missing = ResourceKey("market", "price", "DOGE")
    keys = [A, B, C, missing]
    result = await cache.get_many(keys, now=T0 + 1.0, policies=dict.fromkeys(keys, POLICY))
    assert list(result) == keys
    assert result[A].fresh
    assert result[A].usable_stale
    assert not result[B].fresh
    assert result[B].usable_stale
    assert result[B].value is not None
    assert result[B].age_seconds == 13.0
    assert result[C].value is None
    assert result[missing].value is None
    counters = await stats(cache)
    assert counters == CacheStats(
        size=2,
        max_entries=10000,
        hits=2,
        misses=2,
        fresh_hits=1,
        stale_hits=1,
        sets=3,
        invalidations=0,
        evictions=0,
        expirations=1,
    )


async def test_get_many_uses_each_keys_own_policy() -> None:
    cache = AsyncMemoryCache()
    await cache.set_many([value(A), value(B)])
    policies = {A: FreshnessPolicy(1.0, 11.0), B: FreshnessPolicy(60.0, 60.0)}
    result = await cache.get_many([A, B], now=T0 + 5.0, policies=policies)
    assert result[A].usable_stale
    assert not result[A].fresh
    assert result[B].fresh


async def test_future_observation_reads_as_fresh_with_age_zero() -> None:
    # age = max(0, now - observed_at): a future stamp is kept as given, never a negative age.
    cache = AsyncMemoryCache()
    await cache.set(value(A, observed_at=T0 + 2.0))
    lookup = await cache.get(A, now=T0, policy=POLICY)
    assert lookup.fresh
    assert lookup.age_seconds == 0.0
    assert lookup.value is not None
    assert lookup.value.age_seconds == 0.0
    assert lookup.value.observed_at == T0 + 2.0


async def test_hit_refreshes_lru_position() -> None:
    cache = AsyncMemoryCache(max_entries=2)
    await cache.set(value(A))
    await cache.set(value(B))
    assert (await cache.get(A, now=T0, policy=POLICY)).fresh  # A is now most recent
    await cache.set(value(C))
    assert (await cache.get(B, now=T0, policy=POLICY)).value is None
    assert (await cache.get(A, now=T0, policy=POLICY)).fresh
    assert (await stats(cache)).evictions == 1


async def test_mutable_payload_read_is_a_private_copy() -> None:
    cache = AsyncMemoryCache()
    await cache.set(value(A, {"price": [1, 2]}, metadata={"tags": ["a"]}))
    first = await cache.get(A, now=T0, policy=POLICY)
    assert first.value is not None
    first.value.value["price"].append(3)
    first.value.metadata["tags"].append("b")
    second = await cache.get_many([A], now=T0 + 1.0, policies={A: POLICY})
    again = second[A].value
    assert again is not None
    assert again.value == {"price": [1, 2]}
    assert again.metadata == {"tags": ["a"]}
    assert again.value is not first.value.value
    assert second[A].age_seconds == 1.0
    assert not again.from_cache  # as stored


async def test_immutable_payload_is_shared_by_the_builtin_copier() -> None:
    cache = AsyncMemoryCache()
    payload = ("BTC", 65000.5, frozenset({1, 2}))
    await cache.set(value(A, payload))
    lookup = await cache.get(A, now=T0, policy=POLICY)
    assert lookup.value is not None
    assert lookup.value.value is payload


async def test_a_custom_copier_sees_immutable_payloads_too() -> None:
    calls: list[object] = []

    def copier(payload: object) -> object:
        calls.append(payload)
        return payload

    cache = AsyncMemoryCache(payload_copier=copier)
    payload = ("BTC", 65000.5, frozenset({1, 2}))
    await cache.set(value(A, payload))
    await cache.get(A, now=T0, policy=POLICY)
    assert calls == [payload] * 3  # stored copy, write result, read


async def test_custom_copier_is_used_for_mutable_payloads_both_ways() -> None:
    calls: list[str] = []

    def copier(payload: dict[str, int]) -> dict[str, int]:
        calls.append("copy")
        return dict(payload)

    cache = AsyncMemoryCache(payload_copier=copier)
    await cache.set(value(A, {"x": 1}))
    assert calls == ["copy", "copy"]  # the stored copy and the write result's copy
    await cache.get(A, now=T0, policy=POLICY)
    assert calls == ["copy"] * 3


# -- derived values ---------------------------------------------------------------------------


async def test_derived_value_served_while_dependencies_are_current() -> None:
    cache = AsyncMemoryCache()
    a, b = value(A), value(B)
    await cache.set_many([a, b])
    await cache.set(value(DERIVED, deps={A: a.version, B: b.version}))
    lookup = await cache.get(DERIVED, now=T0 + 1.0, policy=POLICY)
    assert lookup.fresh
    assert (await stats(cache)).invalidations == 0


async def test_newer_dependency_invalidates_derived_value_lazily() -> None:
    cache = AsyncMemoryCache()
    a, b = value(A), value(B)
    await cache.set_many([a, b])
    await cache.set(value(DERIVED, deps={A: a.version, B: b.version}))
    await cache.set(value(A, 2.0, observed_at=T0 + 1.0))  # a new revision of A
    assert await cache.size() == 3  # nothing happens until the derived value is read
    lookup = await cache.get(DERIVED, now=T0 + 1.0, policy=POLICY)
    assert lookup.value is None
    assert await cache.size() == 2
    counters = await stats(cache)
    assert (counters.invalidations, counters.misses) == (1, 1)


async def test_missing_dependency_invalidates_derived_value() -> None:
    cache = AsyncMemoryCache()
    a = value(A)
    await cache.set(a)
    await cache.set(value(DERIVED, deps={A: a.version}))
    await cache.invalidate(A)
    result = await cache.get_many([DERIVED], now=T0, policies={DERIVED: POLICY})
    assert result[DERIVED].value is None
    assert await cache.size() == 0


async def test_invalid_dependency_invalidates_transitively() -> None:
    cache = AsyncMemoryCache()
    a, b = value(A), value(B)
    await cache.set_many([a, b])
    mid = value(DERIVED, deps={A: a.version, B: b.version})
    await cache.set(mid)
    await cache.set(value(DEEP, deps={DERIVED: mid.version, A: a.version}))
    assert (await cache.get(DEEP, now=T0, policy=POLICY)).fresh
    await cache.set(value(B, 5.0, observed_at=T0 + 1))  # invalidates DERIVED, hence DEEP
    result = await cache.get_many(
        [DEEP, DERIVED, A], now=T0 + 1, policies=dict.fromkeys([DEEP, DERIVED, A], POLICY)
    )
    assert result[DEEP].value is None
    assert result[DERIVED].value is None
    assert result[A].fresh
    assert (await stats(cache)).invalidations == 2


async def test_dependency_cycle_is_not_served() -> None:
    cache = AsyncMemoryCache()
    # Two derived values recording each other's versions: never consistent, so never served.
    first = value(DERIVED, deps={DEEP: "v-deep"})
    second = dataclasses.replace(value(DEEP, deps={DERIVED: first.version}), version="v-deep")
    await cache.set_many([first, second])
    result = await cache.get_many([DERIVED, DEEP], now=T0, policies={DERIVED: POLICY, DEEP: POLICY})
    assert result[DERIVED].value is None
    assert result[DEEP].value is None


# -- bad input --------------------------------------------------------------------------------


async def test_get_rejects_bad_arguments() -> None:
    cache = AsyncMemoryCache()
    with pytest.raises(TypeError, match="key"):
        await cache.get("market:price", now=T0, policy=POLICY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="now"):
        await cache.get(A, now=math.nan, policy=POLICY)
    with pytest.raises(ValueError, match="now"):
        await cache.get(A, now=math.inf, policy=POLICY)
    with pytest.raises(TypeError, match="now"):
        await cache.get(A, now="soon", policy=POLICY)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="policy"):
        await cache.get(A, now=T0, policy=10.0)  # type: ignore[arg-type]


async def test_get_many_rejects_bad_arguments() -> None:
    cache = AsyncMemoryCache()
    await cache.set(value(A))
    with pytest.raises(TypeError, match="keys"):
        await cache.get_many("AB", now=T0, policies={})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys"):
        await cache.get_many(iter([A]), now=T0, policies={A: POLICY})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys item"):
        await cache.get_many([A, "B"], now=T0, policies={A: POLICY})  # type: ignore[list-item]
    with pytest.raises(TypeError, match="keys item"):
        await cache.get_many([["unhashable"]], now=T0, policies={})  # type: ignore[list-item]
    with pytest.raises(TypeError, match="policies"):
        await cache.get_many([A], now=T0, policies=[POLICY])  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="missing freshness policies for"):
        await cache.get_many([A], now=T0, policies={})
    with pytest.raises(KeyError, match="missing freshness policies for"):
        await cache.get_many([B], now=T0, policies={})  # required even for a missing key
    with pytest.raises(TypeError, match=r"policies\["):
        await cache.get_many([A], now=T0, policies={A: 5})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="now"):
        await cache.get_many([A], now=math.nan, policies={A: POLICY})
    counters = await stats(cache)
    assert (counters.hits, counters.misses) == (0, 0)  # failed calls count nothing
    assert await cache.size() == 1


async def test_failed_read_copy_names_the_key() -> None:
    calls: list[object] = []

    def copier(payload: object) -> object:
        calls.append(payload)
        if len(calls) > 2:  # the write's two copies work, the read's fails
            raise RuntimeError("copier broke")
        return list(payload)  # type: ignore[call-overload]

    cache = AsyncMemoryCache(payload_copier=copier)
    await cache.set(value(A, [1, 2]))
    with pytest.raises(PayloadIsolationError, match="cache read of market:price:BTC"):
        await cache.get(A, now=T0, policy=POLICY)
    assert await cache.size() == 1
