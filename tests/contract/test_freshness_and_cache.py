"""Contract facts B-CACHE-1 ... B-CACHE-13 (freshness policies and AsyncMemoryCache), checked
through the public API only."""

from __future__ import annotations

import asyncio
import copy
import math
import threading
from collections.abc import Mapping
from typing import Any

import pytest

from coalestra import (
    AsyncMemoryCache,
    CacheLookup,
    CacheWriteStatus,
    CallableDerivedSource,
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    PayloadIsolationError,
    RefreshMode,
    ResourceKey,
    Snapshot,
    SnapshotBuilder,
    SnapshotValue,
)
from coalestra.testing import VirtualClock

A = ResourceKey("market", "price", "A")
B = ResourceKey("market", "price", "B")
C = ResourceKey("market", "price", "C")
RAW = ResourceKey("market", "raw", "A")
DERIVED = ResourceKey("market", "double", "A")
T0 = 1_000.0
FOREVER = FreshnessPolicy(math.inf, math.inf)
P = FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=20.0)


def sv(
    key: ResourceKey,
    value: Any = 1.0,
    *,
    observed_at: float = T0,
    rank: int = 0,
    dependency_versions: Mapping[ResourceKey, str] | None = None,
    version: str | None = None,
    **fields: Any,
) -> SnapshotValue[Any]:
    options: dict[str, Any] = {
        "key": key,
        "value": value,
        "source": "rest",
        "observed_at": observed_at,
        "fetched_at": observed_at,
        "age_seconds": 0.0,
        "stale": False,
        "from_cache": False,
        "latency_ms": 12.5,
        "attempts": 2,
        "authority_rank": rank,
        "dependency_versions": dependency_versions or {},
    }
    if version is not None:
        options["version"] = version
    options.update(fields)
    return SnapshotValue(**options)


# --- B-CACHE-1: validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"ttl_seconds": -1.0, "max_stale_seconds": 5.0}, "ttl_seconds cannot be negative"),
        (
            {"ttl_seconds": 5.0, "max_stale_seconds": 4.0},
            "max_stale_seconds must be greater than or equal to ttl_seconds",
        ),
        (
            {"ttl_seconds": 5.0},
            "max_stale_seconds must be greater than or equal to ttl_seconds",
        ),
        (
            {
                "ttl_seconds": 5.0,
                "max_stale_seconds": 5.0,
                "refresh_mode": RefreshMode.REFRESH_AHEAD,
                "refresh_ahead_seconds": -1.0,
            },
            "refresh_ahead_seconds cannot be negative",
        ),
        (
            {"ttl_seconds": 5.0, "max_stale_seconds": 5.0, "refresh_ahead_seconds": 1.0},
            "refresh_ahead_seconds is only valid with RefreshMode.REFRESH_AHEAD",
        ),
        (
            {
                "ttl_seconds": 5.0,
                "max_stale_seconds": 9.0,
                "refresh_mode": RefreshMode.STALE_WHILE_REVALIDATE,
                "refresh_ahead_seconds": 1.0,
            },
            "refresh_ahead_seconds is only valid with RefreshMode.REFRESH_AHEAD",
        ),
        (
            {
                "ttl_seconds": 5.0,
                "max_stale_seconds": 9.0,
                "refresh_mode": RefreshMode.REFRESH_AHEAD,
                "refresh_ahead_seconds": 6.0,
            },
            "refresh_ahead_seconds cannot exceed ttl_seconds",
        ),
    ],
)
def test_b_cache_1_invalid_policies_raise_the_exact_message(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=r"\w") as caught:
        FreshnessPolicy(**arguments)
    assert str(caught.value) == message


def test_b_cache_1_positional_five_raises_and_infinite_windows_construct() -> None:
    with pytest.raises(ValueError, match="max_stale_seconds must be greater"):
        FreshnessPolicy(5.0)
    with pytest.raises(ValueError, match="max_stale_seconds must be greater"):
        FreshnessPolicy(5.0, 4.0)
    forever = FreshnessPolicy(float("inf"), float("inf"))
    assert forever.ttl_seconds == math.inf
    assert forever.max_stale_seconds == math.inf
    ahead = FreshnessPolicy(
        math.inf, math.inf, refresh_mode=RefreshMode.REFRESH_AHEAD, refresh_ahead_seconds=1e9
    )
    assert ahead.refresh_ahead_seconds == 1e9


# --- B-CACHE-2: total age, inclusive bounds ----------------------------------------------------


@pytest.mark.parametrize(
    ("now", "value_seen", "fresh"),
    [(105.0, True, True), (105.001, True, False), (120.0, True, False), (120.5, False, False)],
)
async def test_b_cache_2_max_stale_is_the_total_age(
    now: float, value_seen: bool, fresh: bool
) -> None:
    cache = AsyncMemoryCache()
    await cache.set(sv(A, observed_at=100.0))
    lookup = await cache.get(A, now=now, policy=FreshnessPolicy(5.0, 20.0))
    assert (lookup.value is not None) is value_seen
    assert lookup.fresh is fresh


async def test_b_cache_2_zero_policy_is_fresh_at_age_zero() -> None:
    cache = AsyncMemoryCache()
    await cache.set(sv(A, observed_at=100.0))
    lookup = await cache.get(A, now=100.0, policy=FreshnessPolicy(0.0, 0.0))
    assert lookup.fresh
    assert lookup.value is not None


async def test_b_cache_2_infinite_policy_never_expires() -> None:
    cache = AsyncMemoryCache()
    await cache.set(sv(A, observed_at=0.0))
    lookup = await cache.get(A, now=1e12, policy=FOREVER)
    assert lookup.fresh


async def test_b_cache_2_builder_serves_stale_up_to_max_stale_not_ttl_plus_max_stale() -> None:
    clock = VirtualClock()
    calls = {"n": 0, "down": False}

    async def fetch(_key: ResourceKey, _ctx: FetchContext) -> int:
        if calls["down"]:
            raise ConnectionError("down")
        calls["n"] += 1
        return calls["n"]

    source = CallableSource(name="rest", priority=1, supports=lambda _k: True, fetcher=fetch)
    policy = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=20.0)
    async with SnapshotBuilder([source], clock=clock, default_policy=policy) as builder:
        await builder.build([A])
        calls["down"] = True
        await asyncio.sleep(19.0)  # past the TTL, within max_stale (retries take a moment)
        served = await builder.build([A])
        assert served[A].stale
        assert served.value(A) == 1
        await asyncio.sleep(2.0)  # age 21+: past max_stale (usable if it were added to the TTL)
        failed = await builder.build([A], strict=False)
        assert A in failed.errors


# --- B-CACHE-3: refresh ahead ------------------------------------------------------------------


def test_b_cache_3_refresh_ahead_window_has_no_upper_bound() -> None:
    policy = FreshnessPolicy(
        1.0, 1.0, refresh_mode=RefreshMode.REFRESH_AHEAD, refresh_ahead_seconds=0.5
    )
    assert policy.should_refresh_ahead(0.5)
    assert policy.should_refresh_ahead(5.0)
    assert not policy.should_refresh_ahead(0.49)
    zero = FreshnessPolicy(0.0, 0.0, refresh_mode=RefreshMode.REFRESH_AHEAD)
    assert zero.should_refresh_ahead(0.0)


def test_b_cache_3_only_refresh_ahead_mode_with_a_finite_ttl() -> None:
    assert not FreshnessPolicy(1.0, 1.0).should_refresh_ahead(5.0)
    swr = FreshnessPolicy(1.0, 9.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE)
    assert not swr.should_refresh_ahead(5.0)
    infinite = FreshnessPolicy(
        math.inf, math.inf, refresh_mode=RefreshMode.REFRESH_AHEAD, refresh_ahead_seconds=1.0
    )
    assert not infinite.should_refresh_ahead(1e12)


# --- B-CACHE-4: lookups ------------------------------------------------------------------------


async def test_b_cache_4_no_entry_is_a_plain_miss() -> None:
    cache = AsyncMemoryCache()
    assert await cache.get(A, now=T0, policy=P) == CacheLookup(None, False, False, None)
    assert (await cache.stats()).misses == 1


async def test_b_cache_4_a_hit_keeps_every_stored_field() -> None:
    cache = AsyncMemoryCache()
    written = sv(A, {"p": [1, 2]}, observed_at=T0)
    await cache.set(written)
    lookup = await cache.get(A, now=T0 + 15.0, policy=P)
    assert (lookup.fresh, lookup.usable_stale, lookup.age_seconds) == (False, True, 15.0)
    assert lookup.value == written
    assert lookup.value is not written
    assert lookup.value.value is not written.value
    value = lookup.value
    assert (value.age_seconds, value.stale, value.from_cache) == (0.0, False, False)
    assert (value.fetched_at, value.latency_ms, value.attempts) == (T0, 12.5, 2)
    stats = await cache.stats()
    assert (stats.hits, stats.stale_hits, stats.fresh_hits) == (1, 1, 0)


async def test_b_cache_4_fresh_hit_is_usable_stale_too_and_counts_fresh() -> None:
    cache = AsyncMemoryCache()
    await cache.set(sv(A, observed_at=T0))
    lookup = await cache.get(A, now=T0 + 10.0, policy=P)
    assert (lookup.fresh, lookup.usable_stale, lookup.age_seconds) == (True, True, 10.0)
    stats = await cache.stats()
    assert (stats.hits, stats.fresh_hits, stats.stale_hits) == (1, 1, 0)


async def test_b_cache_4_an_expired_entry_is_removed_with_its_age() -> None:
    cache = AsyncMemoryCache()
    await cache.set(sv(A, observed_at=T0))
    lookup = await cache.get(A, now=T0 + 25.0, policy=P)
    assert lookup == CacheLookup(None, False, False, 25.0)
    assert await cache.size() == 0
    stats = await cache.stats()
    assert (stats.misses, stats.expirations, stats.hits) == (1, 1, 0)


async def test_b_cache_4_a_derived_entry_with_stale_dependencies_is_removed() -> None:
    cache = AsyncMemoryCache()
    raw = sv(RAW, 1, observed_at=T0, version="v1")
    await cache.set(raw)
    await cache.set(sv(DERIVED, 2, observed_at=T0, dependency_versions={RAW: "v1"}))
    await cache.set(sv(RAW, 5, observed_at=T0 + 1.0, version="v2"))
    lookup = await cache.get(DERIVED, now=T0 + 3.0, policy=P)
    assert lookup == CacheLookup(None, False, False, 3.0)
    stats = await cache.stats()
    assert (stats.misses, stats.invalidations) == (1, 1)
    assert await cache.size() == 1


async def test_b_cache_4_hits_update_the_lru_order() -> None:
    cache = AsyncMemoryCache(max_entries=2)
    await cache.set(sv(A))
    await cache.set(sv(B))
    await cache.get(A, now=T0, policy=P)
    await cache.set(sv(C))
    assert (await cache.get(A, now=T0, policy=P)).value is not None
    assert (await cache.get(B, now=T0, policy=P)).value is None


async def test_b_cache_4_get_is_get_many_with_one_key() -> None:
    cache = AsyncMemoryCache()
    await cache.set(sv(A, observed_at=T0))
    one = await cache.get(A, now=T0 + 12.0, policy=P)
    many = await cache.get_many([A], now=T0 + 12.0, policies={A: P})
    assert many[A] == one


# --- B-CACHE-5: missing policies ---------------------------------------------------------------


async def test_b_cache_5_get_many_without_a_policy_raises_key_error() -> None:
    cache = AsyncMemoryCache()
    await cache.set(sv(A))
    with pytest.raises(KeyError) as caught:
        await cache.get_many([A, B], now=T0, policies={A: P})
    assert caught.value.args == (f"missing freshness policies for: {B}",)
    with pytest.raises(KeyError) as both:
        await cache.get_many([A, B], now=T0, policies={})
    assert both.value.args == (f"missing freshness policies for: {A}, {B}",)


# --- B-CACHE-6: monotonic writes ---------------------------------------------------------------


async def test_b_cache_6_set_is_monotonic() -> None:
    cache = AsyncMemoryCache()
    await cache.set(sv(A, "new", observed_at=200.0))
    await cache.set(sv(A, "old", observed_at=100.0))
    found = await cache.get(A, now=200.0, policy=FOREVER)
    assert found.value is not None
    assert found.value.value == "new"
    await cache.set_many([sv(B, "new", observed_at=200.0)])
    await cache.set_many([sv(B, "old", observed_at=100.0)])
    found = await cache.get(B, now=200.0, policy=FOREVER)
    assert found.value is not None
    assert found.value.value == "new"
    assert (await cache.stats()).sets == 2  # only STORED writes count


@pytest.mark.parametrize(
    ("held", "offered", "options", "status"),
    [
        (None, {"observed_at": 1.0}, {}, CacheWriteStatus.STORED),
        ({"rank": 5}, {"rank": 1, "observed_at": 9.0}, {"force": True}, CacheWriteStatus.STORED),
        (
            {"rank": 5},
            {"rank": 1, "observed_at": 9.0},
            {},
            CacheWriteStatus.IGNORED_LOWER_AUTHORITY,
        ),
        ({"rank": 5}, {"rank": 6, "observed_at": 1.0}, {}, CacheWriteStatus.STORED),
        ({"observed_at": 5.0}, {"observed_at": 4.0}, {}, CacheWriteStatus.IGNORED_OLDER),
        ({"observed_at": 5.0}, {"observed_at": 5.0}, {}, CacheWriteStatus.IGNORED_DUPLICATE),
        (
            {"observed_at": 5.0},
            {"observed_at": 5.0},
            {"replace_equal": True},
            CacheWriteStatus.STORED,
        ),
        ({"observed_at": 5.0}, {"observed_at": 6.0}, {}, CacheWriteStatus.STORED),
    ],
)
async def test_b_cache_6_write_rules_in_order(
    held: dict[str, Any] | None,
    offered: dict[str, Any],
    options: dict[str, bool],
    status: CacheWriteStatus,
) -> None:
    cache = AsyncMemoryCache()
    if held is not None:
        await cache.set(sv(A, "held", **{"observed_at": 5.0, **held}))
    result = await cache.set_if_newer(sv(A, "offered", **offered), **options)
    assert result.status is status


# --- B-CACHE-7: write results ------------------------------------------------------------------


async def test_b_cache_7_an_ignored_write_returns_the_kept_entry() -> None:
    cache = AsyncMemoryCache()
    first = await cache.set_if_newer(sv(A, "t10", observed_at=10.0))
    assert first.status is CacheWriteStatus.STORED
    assert first.value.value == "t10"
    assert first.previous is None
    ignored = await cache.set_if_newer(sv(A, "t5", observed_at=5.0))
    assert ignored.status is CacheWriteStatus.IGNORED_OLDER
    assert ignored.value.value == "t10"
    assert ignored.previous is not None
    assert ignored.previous.value == "t10"


async def test_b_cache_7_a_stored_result_is_a_copy_and_names_the_replaced_entry() -> None:
    cache = AsyncMemoryCache()
    await cache.set(sv(A, {"v": 1}, observed_at=1.0))
    offered = sv(A, {"v": 2}, observed_at=2.0)
    result = await cache.set_if_newer(offered)
    assert result.status is CacheWriteStatus.STORED
    assert result.value == offered
    assert result.value.value is not offered.value
    assert result.previous is not None
    assert result.previous.value == {"v": 1}


@pytest.mark.parametrize("order", ["new-first", "old-first"])
async def test_b_cache_7_same_key_values_in_one_batch_reduce_to_the_winner(order: str) -> None:
    cache = AsyncMemoryCache()
    new, old = sv(A, "new", observed_at=200.0), sv(A, "old", observed_at=100.0)
    batch = [new, old] if order == "new-first" else [old, new]
    results = await cache.set_many_if_newer(batch)
    assert results[A].value.value == "new"
    await cache.set_many([old, new][:: 1 if order == "new-first" else -1])
    found = await cache.get(A, now=300.0, policy=FOREVER)
    assert found.value is not None
    assert found.value.value == "new"
    assert (await cache.stats()).sets == 1


async def test_b_cache_7_batch_reduction_prefers_rank_then_newest_then_later() -> None:
    cache = AsyncMemoryCache()
    results = await cache.set_many_if_newer(
        [
            sv(A, "high", observed_at=1.0, rank=2),
            sv(A, "low-new", observed_at=9.0, rank=1),
            sv(B, "first", observed_at=5.0),
            sv(B, "second", observed_at=5.0),
        ]
    )
    assert results[A].value.value == "high"
    assert results[B].value.value == "second"


# --- B-CACHE-8: counters -----------------------------------------------------------------------


async def test_b_cache_8_invalidations_evictions_and_expirations() -> None:
    cache = AsyncMemoryCache(max_entries=3)
    await cache.set_many([sv(A), sv(B), sv(C)])
    await cache.clear()
    assert (await cache.stats()).invalidations == 3
    await cache.set_many([sv(A), sv(B), sv(C)])
    assert await cache.invalidate_namespace("market", subject="A") == (A,)
    assert await cache.invalidate_matching(lambda key: key == B) == (B,)
    assert (await cache.stats()).invalidations == 5
    await cache.set_many([sv(A, observed_at=T0), sv(B, observed_at=T0 - 25.0)])
    assert (await cache.stats()).evictions == 0
    await cache.set(sv(DERIVED))
    assert (await cache.stats()).evictions == 1

    class Resolver:
        def resolve(self, key: ResourceKey) -> FreshnessPolicy:
            return P

    pruned = await cache.prune(now=T0, policy_resolver=Resolver())
    assert pruned == (B,)
    assert (await cache.stats()).expirations == 1


# --- B-CACHE-9: attributes ---------------------------------------------------------------------


def test_b_cache_9_public_attributes() -> None:
    cache = AsyncMemoryCache()
    assert cache.max_entries == 10000
    assert cache.run_payload_copies_in_thread is True
    assert cache.max_copy_concurrency == 4
    assert AsyncMemoryCache.validates_dependency_versions is True
    assert AsyncMemoryCache.validates_source_authority is True
    custom = AsyncMemoryCache(payload_copier=copy.deepcopy, max_entries=None)
    assert custom.run_payload_copies_in_thread is False
    assert custom.max_entries is None
    explicit = AsyncMemoryCache(
        payload_copier=copy.deepcopy, run_payload_copies_in_thread=True, max_copy_concurrency=2
    )
    assert explicit.run_payload_copies_in_thread is True
    assert explicit.max_copy_concurrency == 2


def test_b_cache_9_constructor_errors() -> None:
    with pytest.raises(ValueError, match="max_entries") as caught:
        AsyncMemoryCache(max_entries=0)
    assert str(caught.value) == "max_entries must be at least 1 or None"
    with pytest.raises(TypeError, match="run_payload_copies_in_thread"):
        AsyncMemoryCache(run_payload_copies_in_thread=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_copy_concurrency"):
        AsyncMemoryCache(max_copy_concurrency=True)
    with pytest.raises(TypeError, match="max_copy_concurrency"):
        AsyncMemoryCache(max_copy_concurrency=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_copy_concurrency"):
        AsyncMemoryCache(max_copy_concurrency=0)


# --- B-CACHE-11: custom copiers ----------------------------------------------------------------


async def test_b_cache_11_a_custom_copier_sees_immutable_payloads_but_never_metadata() -> None:
    seen: list[Any] = []

    def copier(value: Any) -> Any:
        seen.append(value)
        return copy.deepcopy(value)

    cache = AsyncMemoryCache(payload_copier=copier)
    await cache.set_if_newer(sv(A, "text", metadata={"m": [1]}))
    assert "text" in seen
    assert all(not isinstance(item, Mapping) for item in seen)
    before = len(seen)
    lookup = await cache.get(A, now=T0, policy=P)
    assert len(seen) > before
    assert lookup.value is not None
    assert lookup.value.metadata == {"m": [1]}


async def test_b_cache_11_a_model_copy_copier_works_for_builds() -> None:
    class Model:
        def __init__(self, price: float) -> None:
            self.price = price

        def model_copy(self, *, deep: bool) -> Model:
            return Model(self.price)

    async def fetch(_key: ResourceKey, _ctx: FetchContext) -> Model:
        return Model(1.5)

    source = CallableSource(name="rest", priority=1, supports=lambda _k: True, fetcher=fetch)
    builder = SnapshotBuilder(
        [source],
        clock=VirtualClock(),
        default_policy=P,
        payload_copier=lambda v: v.model_copy(deep=True),
    )
    async with builder:
        first = await builder.build([A])
        second = await builder.build([A])
    assert first.value(A).price == 1.5
    assert second[A].from_cache
    assert second.value(A).price == 1.5


# --- B-CACHE-12: copies outside the decision ---------------------------------------------------


class Uncopyable:
    def __deepcopy__(self, memo: dict[int, Any]) -> Uncopyable:
        raise RuntimeError("cannot copy me")


async def test_b_cache_12_a_losing_uncopyable_candidate_is_ignored_not_an_error() -> None:
    cache = AsyncMemoryCache()
    await cache.set(sv(A, "kept", observed_at=10.0))
    result = await cache.set_if_newer(sv(A, [Uncopyable()], observed_at=5.0))
    assert result.status is CacheWriteStatus.IGNORED_OLDER
    assert result.value.value == "kept"
    batch = await cache.set_many_if_newer([sv(A, [Uncopyable()], observed_at=5.0)])
    assert batch[A].status is CacheWriteStatus.IGNORED_OLDER


async def test_b_cache_12_a_winning_uncopyable_candidate_raises() -> None:
    cache = AsyncMemoryCache()
    with pytest.raises(PayloadIsolationError):
        await cache.set_if_newer(sv(A, [Uncopyable()], observed_at=5.0))
    assert await cache.size() == 0


async def test_b_cache_12_a_write_that_wins_during_the_copy_is_reported() -> None:
    release = threading.Event()

    class Slow:
        def __deepcopy__(self, memo: dict[int, Any]) -> Slow:
            release.wait(5.0)
            return Slow()

    cache = AsyncMemoryCache(run_payload_copies_in_thread=True)
    slow_write = asyncio.ensure_future(cache.set_if_newer(sv(A, [Slow()], observed_at=5.0)))
    await asyncio.sleep(0)
    newer = await cache.set_if_newer(sv(A, "newer", observed_at=9.0))
    release.set()
    result = await slow_write
    assert newer.status is CacheWriteStatus.STORED
    assert result.status is CacheWriteStatus.IGNORED_OLDER
    assert result.value.value == "newer"


# --- B-CACHE-13: dependency checks -------------------------------------------------------------


async def test_b_cache_13_dependencies_are_checked_transitively() -> None:
    cache = AsyncMemoryCache()
    top = ResourceKey("market", "top", "A")
    await cache.set(sv(RAW, 1, version="r1"))
    await cache.set(sv(DERIVED, 2, version="d1", dependency_versions={RAW: "r1"}))
    await cache.set(sv(top, 3, dependency_versions={DERIVED: "d1"}))
    assert (await cache.get(top, now=T0, policy=P)).value is not None
    await cache.invalidate(RAW)
    assert (await cache.get(top, now=T0, policy=P)).value is None


class PlainCache:
    """A cache with only get/set/invalidate/clear (no dependency validation)."""

    def __init__(self) -> None:
        self.entries: dict[ResourceKey, SnapshotValue[Any]] = {}
        self.invalidated: list[ResourceKey] = []

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> CacheLookup:
        value = self.entries.get(key)
        if value is None:
            return CacheLookup(None, False, False, None)
        age = max(0.0, now - value.observed_at)
        if age > policy.max_stale_seconds:
            return CacheLookup(None, False, False, age)
        return CacheLookup(value, age <= policy.ttl_seconds, True, age)

    async def set(self, value: SnapshotValue[Any]) -> None:
        self.entries[value.key] = value

    async def invalidate(self, key: ResourceKey) -> None:
        self.invalidated.append(key)
        self.entries.pop(key, None)

    async def clear(self) -> None:
        self.entries.clear()


async def test_b_cache_13_the_builder_checks_dependencies_for_a_plain_cache() -> None:
    calls = {"derive": 0}

    async def fetch(_key: ResourceKey, _ctx: FetchContext) -> int:
        return 1

    def derive(_key: ResourceKey, deps: Snapshot, _ctx: FetchContext) -> int:
        calls["derive"] += 1
        return 2 * int(deps.value(RAW))

    raw = CallableSource(name="rest", priority=1, supports=lambda k: k == RAW, fetcher=fetch)
    double = CallableDerivedSource(
        name="double",
        priority=1,
        supports=lambda k: k == DERIVED,
        dependencies=lambda _k: [RAW],
        deriver=derive,
    )
    cache = PlainCache()
    builder = SnapshotBuilder(
        [raw, double], clock=VirtualClock(), default_policy=FreshnessPolicy(60.0, 60.0), cache=cache
    )
    async with builder:
        await builder.build([DERIVED])
        assert calls["derive"] == 1
        await builder.build([DERIVED])
        assert calls["derive"] == 1
        await builder.publisher.publish(RAW, 21, source="stream", force=True)
        again = await builder.build([DERIVED])
    assert calls["derive"] == 2
    assert again.value(DERIVED) == 42
    assert DERIVED in cache.invalidated


# --- B-CACHE-10: copies in worker threads -------------------------------------------------------


class Probe:
    """A payload part whose deep copy records the thread it ran on."""

    def __init__(self, threads: list[int]) -> None:
        self.threads = threads

    def __deepcopy__(self, memo: dict[int, Any]) -> Probe:
        self.threads.append(threading.get_ident())
        return Probe(self.threads)


async def test_b_cache_10_explicit_threads_run_every_copy_off_the_loop_two_at_a_time() -> None:
    lock = threading.Lock()
    state = {"active": 0, "peak": 0}
    threads: list[int] = []

    def slow_copier(payload: Any) -> Any:
        with lock:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
            threads.append(threading.get_ident())
        try:
            threading.Event().wait(0.005)
            return copy.deepcopy(payload)
        finally:
            with lock:
                state["active"] -= 1

    cache = AsyncMemoryCache(
        payload_copier=slow_copier, run_payload_copies_in_thread=True, max_copy_concurrency=2
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    beat = asyncio.ensure_future(ticker())
    await asyncio.gather(*(cache.set(sv(ResourceKey("m", "n", str(i)), "small")) for i in range(4)))
    beat.cancel()
    assert threading.get_ident() not in threads  # even immutable, small payloads
    assert len(threads) == 8  # each write: the stored copy and the result's copy
    assert state["peak"] == 2
    assert ticks > 0  # the loop kept running while copies were made


async def test_b_cache_10_default_offloads_a_large_nested_payload_only() -> None:
    cache = AsyncMemoryCache()
    assert cache.run_payload_copies_in_thread is True
    large: list[int] = []
    await cache.set(sv(A, {"rows": [[i, str(i)] for i in range(60_000)], "probe": Probe(large)}))
    assert large
    assert threading.get_ident() not in large
    small: list[int] = []
    await cache.set(sv(B, {"rows": [1, 2], "probe": Probe(small)}))
    assert small
    assert set(small) == {threading.get_ident()}


async def test_b_cache_10_a_custom_copier_runs_inline_unless_asked() -> None:
    threads: list[int] = []

    def copier(payload: Any) -> Any:
        threads.append(threading.get_ident())
        return copy.deepcopy(payload)

    cache = AsyncMemoryCache(payload_copier=copier)
    await cache.set(sv(A, list(range(10_000))))
    assert set(threads) == {threading.get_ident()}
