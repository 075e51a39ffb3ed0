"""AsyncMemoryCache writes, compare-and-write rules, isolation on write, removal, housekeeping."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from tests.doubles import fresh_value

from coalestra.cache import AsyncMemoryCache
from coalestra.core import (
    CASE_INSENSITIVE_KEY_NORMALIZER,
    CacheWriteStatus,
    FreshnessPolicy,
    PayloadIsolationError,
    ResourceKey,
    SnapshotValue,
)

A = ResourceKey("market", "price", "BTC")
B = ResourceKey("market", "price", "ETH")
C = ResourceKey("market", "depth", "BTC")
D = ResourceKey("account", "balance", "main")
POLICY = FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=15.0)
T0 = 1_000.0


def value(
    key: ResourceKey, payload: Any = 1.0, observed_at: float = T0, **fields: Any
) -> SnapshotValue[Any]:
    return fresh_value(key, payload, observed_at, **fields)


class Uncopyable:
    """A payload whose deep copy fails."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Uncopyable:
        raise RuntimeError("no copies")


async def cached(cache: AsyncMemoryCache, key: ResourceKey, now: float = T0) -> Any:
    lookup = await cache.get(key, now=now, policy=FreshnessPolicy(1e9, 1e9))
    return None if lookup.value is None else lookup.value.value


async def lru_order(cache: AsyncMemoryCache) -> list[ResourceKey]:
    seen: list[ResourceKey] = []

    def record(key: ResourceKey) -> bool:
        seen.append(key)
        return False

    assert await cache.invalidate_matching(record) == ()
    return seen


# -- unconditional writes ---------------------------------------------------------------------


async def test_set_stores_a_private_copy() -> None:
    cache = AsyncMemoryCache()
    payload = {"price": [1, 2]}
    meta = {"trace": ["x"]}
    await cache.set(value(A, payload, metadata=meta))
    payload["price"].append(3)
    meta["trace"].append("y")
    assert await cached(cache, A) == {"price": [1, 2]}
    lookup = await cache.get(A, now=T0, policy=POLICY)
    assert lookup.value is not None
    assert lookup.value.metadata == {"trace": ["x"]}
    assert (await cache.stats()).sets == 1


async def test_set_is_monotonic_like_set_if_newer() -> None:
    cache = AsyncMemoryCache()
    await cache.set(value(A, "new", observed_at=T0, rank=5))
    await cache.set(value(A, "old", observed_at=T0 - 100, rank=0))
    assert await cached(cache, A) == "new"
    await cache.set(value(A, "newer", observed_at=T0 + 1, rank=5))
    assert await cached(cache, A) == "newer"


async def test_set_many_stores_in_order_and_evicts_lru() -> None:
    cache = AsyncMemoryCache(max_entries=2)
    await cache.set_many([value(A, 1), value(B, 2), value(C, 3), value(B, 4)])
    # B's two values reduce to the later one (equal rank and timestamp) at B's first position.
    assert await lru_order(cache) == [B, C]
    assert await cached(cache, B) == 4
    counters = await cache.stats()
    assert (counters.size, counters.sets, counters.evictions) == (2, 3, 1)


async def test_unbounded_cache_never_evicts() -> None:
    cache = AsyncMemoryCache(max_entries=None)
    keys = [ResourceKey("k", "v", str(i)) for i in range(500)]
    await cache.set_many([value(key) for key in keys])
    counters = await cache.stats()
    assert (counters.size, counters.evictions, counters.max_entries) == (500, 0, None)


async def test_uncopyable_payload_raises_naming_the_key_and_stores_nothing() -> None:
    cache = AsyncMemoryCache()
    await cache.set(value(A, "kept"))
    with pytest.raises(PayloadIsolationError, match="market:price:BTC") as caught:
        await cache.set(value(A, Uncopyable(), observed_at=T0 + 1))
    assert caught.value.value_type == "Uncopyable"
    assert await cached(cache, A) == "kept"
    assert (await cache.stats()).sets == 1


async def test_uncopyable_metadata_raises_and_stores_nothing() -> None:
    cache = AsyncMemoryCache()
    with pytest.raises(PayloadIsolationError, match="market:price:ETH"):
        await cache.set(value(B, 1, metadata={"bad": Uncopyable()}))
    assert await cache.size() == 0


async def test_batch_with_one_uncopyable_payload_writes_nothing() -> None:
    cache = AsyncMemoryCache()
    await cache.set(value(A, "kept"))
    batch = [value(A, "replaced", T0 + 1), value(B, Uncopyable(), T0 + 1)]
    with pytest.raises(PayloadIsolationError, match="market:price:ETH"):
        await cache.set_many(batch)
    with pytest.raises(PayloadIsolationError, match="market:price:ETH"):
        await cache.set_many_if_newer(batch)
    assert await cached(cache, A) == "kept"
    assert await cache.size() == 1


# -- conditional writes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "offered", "flags", "status"),
    [
        ((T0, 0), (T0 + 1, 0), {}, CacheWriteStatus.STORED),
        ((T0, 0), (T0 - 1, 0), {}, CacheWriteStatus.IGNORED_OLDER),
        ((T0, 0), (T0, 0), {}, CacheWriteStatus.IGNORED_DUPLICATE),
        ((T0, 0), (T0, 0), {"replace_equal": True}, CacheWriteStatus.STORED),
        ((T0, 5), (T0 + 10, 1), {}, CacheWriteStatus.IGNORED_LOWER_AUTHORITY),
        ((T0, 1), (T0 - 10, 5), {}, CacheWriteStatus.STORED),
        ((T0, 5), (T0 - 10, 1), {"force": True}, CacheWriteStatus.STORED),
        ((T0, 0), (T0 - 1, 0), {"force": True}, CacheWriteStatus.STORED),
        ((T0, 5), (T0, 1), {"replace_equal": True}, CacheWriteStatus.IGNORED_LOWER_AUTHORITY),
    ],
)
async def test_set_if_newer_rules(
    existing: tuple[float, int],
    offered: tuple[float, int],
    flags: dict[str, bool],
    status: CacheWriteStatus,
) -> None:
    cache = AsyncMemoryCache()
    before = value(A, "before", existing[0], rank=existing[1])
    await cache.set(before)
    attempt = value(A, "offered", offered[0], rank=offered[1])
    result = await cache.set_if_newer(attempt, **flags)
    assert result.status is status
    assert result.stored is (status is CacheWriteStatus.STORED)
    if result.stored:
        assert result.value is attempt  # an immutable payload: its copy may be itself
        assert result.previous == before
    else:  # B-CACHE-7: an ignored write returns the revision the cache keeps, twice
        assert result.value == before
        assert result.previous == before
    assert await cached(cache, A) == ("offered" if result.stored else "before")


async def test_set_if_newer_into_empty_cache_stores() -> None:
    cache = AsyncMemoryCache()
    result = await cache.set_if_newer(value(A, [1]))
    assert result.status is CacheWriteStatus.STORED
    assert result.previous is None
    assert await cached(cache, A) == [1]
    counters = await cache.stats()
    assert counters.sets == 1


async def test_ignored_write_counts_no_set_and_keeps_lru_position() -> None:
    cache = AsyncMemoryCache()
    await cache.set_many([value(A, observed_at=T0 + 5), value(B)])
    result = await cache.set_if_newer(value(A, observed_at=T0))
    assert result.status is CacheWriteStatus.IGNORED_OLDER
    assert await lru_order(cache) == [A, B]
    assert (await cache.stats()).sets == 2


async def test_previous_is_an_isolated_copy() -> None:
    cache = AsyncMemoryCache()
    await cache.set(value(A, {"n": [1]}))
    result = await cache.set_if_newer(value(A, {"n": [2]}, T0 + 1))
    assert result.previous is not None
    result.previous.value["n"].append(99)
    ignored = await cache.set_if_newer(value(A, {"n": [0]}, T0 - 1))
    assert ignored.previous is not None
    ignored.previous.value["n"].append(99)
    assert await cached(cache, A) == {"n": [2]}


async def test_set_many_if_newer_applies_in_order_atomically() -> None:
    cache = AsyncMemoryCache()
    await cache.set(value(A, "cached", T0))
    results = await cache.set_many_if_newer(
        [
            value(A, "older", T0 - 1),
            value(B, "first", T0),
            value(B, "second", T0 + 1),
            value(C, "dup-a", T0),
        ]
    )
    assert results[A].status is CacheWriteStatus.IGNORED_OLDER
    assert results[B].status is CacheWriteStatus.STORED
    assert results[B].value.value == "second"  # reduced to the newest value first
    assert results[B].previous is None
    assert results[C].status is CacheWriteStatus.STORED
    assert [await cached(cache, key) for key in (A, B, C)] == ["cached", "second", "dup-a"]


async def test_set_many_if_newer_force_and_replace_equal() -> None:
    cache = AsyncMemoryCache()
    await cache.set_many([value(A, "a", T0, rank=9), value(B, "b", T0)])
    forced = await cache.set_many_if_newer([value(A, "forced", T0 - 5)], force=True)
    assert forced[A].stored
    equal = await cache.set_many_if_newer([value(B, "equal", T0)], replace_equal=True)
    assert equal[B].stored
    assert [await cached(cache, A), await cached(cache, B)] == ["forced", "equal"]


async def test_conditional_writes_reject_bad_arguments() -> None:
    cache = AsyncMemoryCache()
    with pytest.raises(TypeError, match="value"):
        await cache.set_if_newer({"value": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="force"):
        await cache.set_if_newer(value(A), force=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="replace_equal"):
        await cache.set_if_newer(value(A), replace_equal="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="values"):
        await cache.set_many_if_newer(value(A))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="values item"):
        await cache.set_many_if_newer([value(A), 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="value"):
        await cache.set(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="values item"):
        await cache.set_many([value(A), "x"])  # type: ignore[list-item]
    assert await cache.size() == 0


# -- removal ----------------------------------------------------------------------------------


async def test_invalidate_and_invalidate_many() -> None:
    cache = AsyncMemoryCache()
    await cache.set_many([value(A), value(B), value(C)])
    await cache.invalidate(A)
    await cache.invalidate(A)  # absent: nothing happens, nothing counted
    await cache.invalidate_many([B, C, D])
    assert await cache.size() == 0
    assert (await cache.stats()).invalidations == 3
    with pytest.raises(TypeError, match="key"):
        await cache.invalidate("A")  # type: ignore[arg-type]
    await cache.set(value(A))
    with pytest.raises(TypeError, match="keys item"):
        await cache.invalidate_many([A, "B"])  # type: ignore[list-item]
    assert await cache.size() == 1  # the bad batch dropped nothing


async def test_invalidate_matching_returns_removed_keys() -> None:
    cache = AsyncMemoryCache()
    await cache.set_many([value(A), value(B), value(C), value(D)])
    removed = await cache.invalidate_matching(lambda key: key.subject == "BTC")
    assert removed == (A, C)
    assert await lru_order(cache) == [B, D]
    assert (await cache.stats()).invalidations == 2
    with pytest.raises(TypeError, match="predicate"):
        await cache.invalidate_matching("BTC")  # type: ignore[arg-type]


async def test_invalidate_matching_raising_predicate_removes_nothing() -> None:
    cache = AsyncMemoryCache()
    await cache.set_many([value(A), value(B)])

    def predicate(key: ResourceKey) -> bool:
        if key == B:
            raise LookupError("boom")
        return True

    with pytest.raises(LookupError):
        await cache.invalidate_matching(predicate)
    assert await cache.size() == 2


async def test_invalidate_namespace_with_name_and_subject() -> None:
    cache = AsyncMemoryCache()
    empty_subject = ResourceKey("market", "status")
    await cache.set_many([value(A), value(B), value(C), value(D), value(empty_subject)])
    assert await cache.invalidate_namespace("market", name="price", subject="BTC") == (A,)
    assert await cache.invalidate_namespace("market", subject="") == (empty_subject,)
    assert await cache.invalidate_namespace("market", name="price") == (B,)
    assert await cache.invalidate_namespace(" market ") == (C,)
    assert await cache.invalidate_namespace("nothing") == ()
    assert await lru_order(cache) == [D]


async def test_invalidate_namespace_normalizes_like_the_keys() -> None:
    cache = AsyncMemoryCache()
    key = ResourceKey("Tenant-A", "Doc", "/Path", normalizer=CASE_INSENSITIVE_KEY_NORMALIZER)
    preserved = ResourceKey("Tenant-A", "Doc", "/Path")
    await cache.set_many([value(key), value(preserved)])
    assert await cache.invalidate_namespace("TENANT-A", name="DOC") == (key,)
    assert await lru_order(cache) == [preserved]


async def test_invalidate_namespace_rejects_bad_arguments() -> None:
    cache = AsyncMemoryCache()
    with pytest.raises(ValueError, match="namespace"):
        await cache.invalidate_namespace("  ")
    with pytest.raises(TypeError, match="namespace"):
        await cache.invalidate_namespace(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        await cache.invalidate_namespace("market", name="")
    with pytest.raises(TypeError, match="subject"):
        await cache.invalidate_namespace("market", subject=3)  # type: ignore[arg-type]


# -- housekeeping -----------------------------------------------------------------------------


class Policies:
    def __init__(self, default: FreshnessPolicy, **by_name: FreshnessPolicy) -> None:
        self.default = default
        self.by_name = by_name

    def resolve(self, key: ResourceKey) -> FreshnessPolicy:
        return self.by_name.get(key.name, self.default)


async def test_prune_removes_only_expired_entries() -> None:
    cache = AsyncMemoryCache()
    await cache.set_many([value(A, observed_at=T0 - 15), value(B, observed_at=T0 - 15.5)])
    await cache.set(value(C, observed_at=T0 - 15.5))
    resolver = Policies(POLICY, depth=FreshnessPolicy(100.0, 100.0))
    assert await cache.prune(now=T0, policy_resolver=resolver) == (B,)
    assert await lru_order(cache) == [A, C]
    assert (await cache.stats()).expirations == 1


async def test_prune_rejects_bad_arguments() -> None:
    cache = AsyncMemoryCache()
    await cache.set(value(A, observed_at=0.0))

    class Broken:
        def resolve(self, key: ResourceKey) -> object:
            return "ttl"

    with pytest.raises(TypeError, match="FreshnessPolicy"):
        await cache.prune(now=T0, policy_resolver=Broken())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="policy_resolver"):
        await cache.prune(now=T0, policy_resolver=POLICY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="now"):
        await cache.prune(now=math.inf, policy_resolver=Policies(POLICY))
    assert await cache.size() == 1


async def test_clear_drops_entries_and_keeps_counters() -> None:
    cache = AsyncMemoryCache(max_entries=3)
    await cache.set_many([value(A), value(B)])
    await cache.get(A, now=T0, policy=POLICY)
    await cache.clear()
    assert await cache.size() == 0
    counters = await cache.stats()
    assert (counters.size, counters.sets, counters.hits, counters.max_entries) == (0, 2, 1, 3)
    assert (await cache.get(A, now=T0, policy=POLICY)).value is None


async def test_stats_is_a_frozen_snapshot() -> None:
    cache = AsyncMemoryCache()
    before = await cache.stats()
    await cache.set(value(A))
    assert before.sets == 0
    assert before.size == 0
    with pytest.raises(AttributeError):
        before.sets = 3  # type: ignore[misc]
    assert copy.deepcopy(before) == before


# -- construction -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"max_entries": 0}, ValueError, "max_entries"),
        ({"max_entries": -5}, ValueError, "max_entries"),
        ({"max_entries": 2.5}, TypeError, "max_entries"),
        ({"max_entries": True}, TypeError, "max_entries"),
        ({"payload_copier": "deepcopy"}, TypeError, "payload_copier"),
        ({"run_payload_copies_in_thread": 1}, TypeError, "run_payload_copies_in_thread"),
        ({"max_copy_concurrency": 0}, ValueError, "max_copy_concurrency"),
        ({"max_copy_concurrency": None}, TypeError, "max_copy_concurrency"),
    ],
)
def test_constructor_rejects_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        AsyncMemoryCache(**kwargs)


def test_constructor_accepts_its_documented_options() -> None:
    cache = AsyncMemoryCache(
        max_entries=1,
        payload_copier=copy.deepcopy,
        run_payload_copies_in_thread=True,
        max_copy_concurrency=1,
    )
    assert "max_entries=1" in repr(cache)


async def test_a_rederivation_with_the_same_timestamp_replaces_the_old_derivation() -> None:
    """A derived value carries its oldest input's observed_at; after another input changed,
    the re-derivation has the same timestamp but other dependency versions: it must win."""
    from coalestra.cache import AsyncMemoryCache
    from coalestra.core import CacheWriteStatus, ResourceKey, SnapshotValue

    derived, dep = ResourceKey("d", "total"), ResourceKey("d", "part")

    def value(payload: int, versions: dict[ResourceKey, str]) -> SnapshotValue[int]:
        return SnapshotValue(
            derived,
            payload,
            "deriver",
            10.0,
            10.0,
            0.0,
            False,
            False,
            0.0,
            dependency_versions=versions,
        )

    cache = AsyncMemoryCache()
    assert (await cache.set_if_newer(value(1, {dep: "v1"}))).stored
    again = await cache.set_if_newer(value(1, {dep: "v1"}))
    assert again.status is CacheWriteStatus.IGNORED_DUPLICATE
    newer = await cache.set_if_newer(value(2, {dep: "v2"}))
    assert newer.status is CacheWriteStatus.STORED


class _Uncopyable:
    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        raise ValueError("no copies")


@pytest.mark.parametrize("batch", [True, False])
async def test_a_write_that_fails_to_copy_keeps_no_copy_it_made(batch: bool) -> None:
    # The copies a write makes inline are noted until it stores them (the store then need not
    # judge their size again); a write that fails half-way must drop those notes too, or the
    # cache holds an earlier candidate's private copy until its next successful write. No
    # public result shows it, so the check reads the cache's copier state.
    cache = AsyncMemoryCache()
    good = fresh_value(ResourceKey("m", "p", "a"), {"x": [1]}, 100.0)
    bad = fresh_value(ResourceKey("m", "p", "b"), {"y": _Uncopyable()}, 100.0)
    write = cache.set_many_if_newer([good, bad]) if batch else cache.set_if_newer(bad)
    with pytest.raises(PayloadIsolationError):
        await write
    assert cache._copies._inline == {}  # type: ignore[attr-defined]
    assert await cache.size() == 0
