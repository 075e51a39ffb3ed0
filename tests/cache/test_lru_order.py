"""The memory cache's LRU order through every path that uses an entry: a build's warm hits (its
own read loop; a repeated build only looks its keys up, see ``cache._lru``'s ``tail``),
``get``, writes, invalidations and evictions -- against an OrderedDict model, across many
evictions (the table's generations turn over, see ``cache._lru``)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalestra.adapters import CallableSource
from coalestra.cache import AsyncMemoryCache
from coalestra.core import FetchContext, FreshnessPolicy, ResourceKey, SnapshotValue
from coalestra.orchestration import SnapshotBuilder
from coalestra.testing import VirtualClock, VirtualTimeRunner

KEYS = [ResourceKey("lru", "value", str(index)) for index in range(6)]
LONG = FreshnessPolicy(ttl_seconds=1e6, max_stale_seconds=1e6)
MAX_ENTRIES = 3


async def lru_order(cache: AsyncMemoryCache) -> list[ResourceKey]:
    seen: list[ResourceKey] = []

    def record(key: ResourceKey) -> bool:
        seen.append(key)
        return False

    await cache.invalidate_matching(record)
    return seen


def use(model: OrderedDict[ResourceKey, None], key: ResourceKey) -> None:
    """What a read or write of ``key`` does to the model (a write may evict the oldest)."""
    model[key] = None
    model.move_to_end(key)
    while len(model) > MAX_ENTRIES:
        model.popitem(last=False)


async def run(operations: list[tuple[str, int]], mutable: bool) -> None:
    async def fetch(key: ResourceKey, _ctx: FetchContext) -> Any:
        return {"subject": key.subject} if mutable else key.subject

    source = CallableSource(name="memory", priority=1, supports=lambda _k: True, fetcher=fetch)
    cache = AsyncMemoryCache(max_entries=MAX_ENTRIES)
    model: OrderedDict[ResourceKey, None] = OrderedDict()
    builder = SnapshotBuilder([source], cache=cache, clock=VirtualClock(), default_policy=LONG)
    async with builder:
        for operation, index in operations:
            wanted = KEYS[index : index + 2]  # two keys: hits and misses mixed in one build
            if operation == "build3":  # three keys, in reverse (a repeated build is looked up)
                operation, wanted = "build", KEYS[index : index + 3][::-1]
            if operation == "invalidate":
                await cache.invalidate(wanted[0])
                model.pop(wanted[0], None)
            elif operation == "build":
                snapshot = await builder.build(wanted)
                assert [value.value for value in snapshot.resources.values()] == [
                    {"subject": key.subject} if mutable else key.subject for key in wanted
                ]
                # Hits are used when the build reads them; misses when their values are written.
                for key in [key for key in wanted if key in model] + [
                    key for key in wanted if key not in model
                ]:
                    use(model, key)
            elif wanted[0] in model:  # a get of a cached key: a hit
                assert (await cache.get(wanted[0], now=0.0, policy=LONG)).value is not None
                use(model, wanted[0])
            else:
                assert (await cache.get(wanted[0], now=0.0, policy=LONG)).value is None
            assert await lru_order(cache) == list(model)


@settings(max_examples=80, deadline=None)
@given(
    operations=st.lists(
        st.tuples(
            st.sampled_from(["build", "build3", "get", "invalidate"]),
            st.integers(0, len(KEYS) - 2),
        ),
        max_size=25,
    ),
    mutable=st.booleans(),
)
def test_warm_hits_gets_and_evictions_keep_exact_lru_order(
    operations: list[tuple[str, int]], mutable: bool
) -> None:
    runner = VirtualTimeRunner()
    try:
        runner.run(run(operations, mutable))
    finally:
        runner.close()


async def test_a_warm_hit_of_a_build_saves_its_key_from_the_next_eviction() -> None:
    cache = AsyncMemoryCache(max_entries=2)

    async def fetch(key: ResourceKey, _ctx: FetchContext) -> str:
        return key.subject

    source = CallableSource(name="memory", priority=1, supports=lambda _k: True, fetcher=fetch)
    builder = SnapshotBuilder([source], cache=cache, clock=VirtualClock(), default_policy=LONG)
    async with builder:
        first, second, third = KEYS[:3]
        await builder.build([first, second])
        assert (await builder.build([first])).diagnostics.cache_hits == 1  # served warm
        await builder.build([third])  # evicts the least recently used: second
        assert await lru_order(cache) == [first, third]
        assert (await cache.stats()).evictions == 1


@pytest.mark.parametrize("max_entries", [None, 3])
@pytest.mark.parametrize(
    ("between", "expected"),
    [
        ("get", [0, 1]),  # the get of key 0 made key 1 the older: the build uses both again
        ("set", [0, 1]),  # so did the write of key 0
        ("set new", [2, 0, 1]),  # the write of another key made it the newest
        ("set_many", [0, 1]),  # a batch write of key 0
        ("nothing", [0, 1]),
    ],
)
async def test_a_repeated_build_uses_its_keys_again_after_the_order_changed(
    max_entries: int | None, between: str, expected: list[int]
) -> None:
    cache = AsyncMemoryCache(max_entries=max_entries)

    async def fetch(key: ResourceKey, _ctx: FetchContext) -> str:
        return key.subject

    source = CallableSource(name="memory", priority=1, supports=lambda _k: True, fetcher=fetch)
    clock = VirtualClock()
    builder = SnapshotBuilder([source], cache=cache, clock=clock, default_policy=LONG)
    async with builder:
        wanted = KEYS[:2]
        await builder.build(wanted)
        await builder.build(wanted)  # warm: these keys are the most recently used, in order
        if between == "get":
            await cache.get(KEYS[0], now=clock.now(), policy=LONG)
        elif between != "nothing":
            key = KEYS[2] if between == "set new" else KEYS[0]
            now = clock.now() + 1.0
            value = SnapshotValue(key, key.subject, "memory", now, now, 0.0, False, False, 0.0)
            await (cache.set_many([value]) if between == "set_many" else cache.set(value))
        assert (await builder.build(wanted)).diagnostics.cache_hits == 2
        assert await lru_order(cache) == [KEYS[index] for index in expected]
