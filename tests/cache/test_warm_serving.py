"""A build's warm hits, served by the memory cache's own loop (``cache._serving``): each is an
exact, frozen SnapshotValue restamped as B-DIAG-1 says, whatever the payload; with one policy
for every key or a policy per key (read differently, see ``_policy_reader``)."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
from typing import Any

import pytest

from coalestra.adapters import CallableSource
from coalestra.core import (
    FetchContext,
    FreshnessPolicy,
    RefreshMode,
    ResourceKey,
    SnapshotValue,
)
from coalestra.orchestration import PolicyResolver, SnapshotBuilder
from coalestra.testing import VirtualClock

KEYS = [ResourceKey("warm", "value", str(index)) for index in range(3)]
LONG = FreshnessPolicy(ttl_seconds=100.0, max_stale_seconds=100.0)
PAYLOADS: dict[str, Any] = {
    "immutable": "payload",
    "flat dict": {"bid": 1.0, "venue": "x"},
    "nested": {"levels": [1, 2, 3]},
}


def builder_of(payload: Any, clock: VirtualClock, **options: Any) -> SnapshotBuilder:
    async def fetch(_key: ResourceKey, _ctx: FetchContext) -> Any:
        return payload

    source = CallableSource(name="memory", priority=1, supports=lambda _k: True, fetcher=fetch)
    return SnapshotBuilder([source], clock=clock, **options)


@pytest.mark.parametrize("kind", list(PAYLOADS))
async def test_a_warm_hit_is_an_exact_frozen_snapshot_value_restamped_as_served(
    kind: str, clock: VirtualClock
) -> None:
    async with builder_of(PAYLOADS[kind], clock, default_policy=LONG) as builder:
        cold = (await builder.build(KEYS))[KEYS[0]]
        await asyncio.sleep(2.0)
        await builder.build(KEYS)
        await asyncio.sleep(1.0)
        warm = (await builder.build(KEYS))[KEYS[0]]  # a repeated build: looked up, not touched

    assert type(warm) is SnapshotValue
    with pytest.raises(dataclasses.FrozenInstanceError):
        warm.stale = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del warm.value  # type: ignore[misc]
    assert (warm.from_cache, warm.stale, warm.latency_ms) == (True, False, 0.0)
    assert (warm.fetched_at, warm.age_seconds) == (clock.now(), 3.0)
    assert warm == dataclasses.replace(
        cold, fetched_at=clock.now(), age_seconds=3.0, from_cache=True, latency_ms=0.0
    )
    assert (warm.version, warm.authority_rank, warm.attempts) == (
        cold.version,
        cold.authority_rank,
        cold.attempts,
    )
    assert warm.dependency_versions == cold.dependency_versions
    assert pickle.loads(pickle.dumps(warm)) == warm
    assert hash(warm.key) == hash(KEYS[0])
    if kind != "immutable":
        assert warm.value == PAYLOADS[kind]
        assert warm.value is not cold.value


async def test_a_policy_per_key_serves_each_key_by_its_own_policy(clock: VirtualClock) -> None:
    ahead = FreshnessPolicy(
        ttl_seconds=10.0,
        max_stale_seconds=20.0,
        refresh_mode=RefreshMode.REFRESH_AHEAD,
        refresh_ahead_seconds=5.0,
    )
    short = FreshnessPolicy(ttl_seconds=1.0, max_stale_seconds=1.0)
    resolver = PolicyResolver(LONG, overrides={KEYS[1]: short, KEYS[2]: ahead})
    async with builder_of("payload", clock, policy_resolver=resolver) as builder:
        await builder.build(KEYS)
        await asyncio.sleep(6.0)  # KEYS[1] expired; KEYS[2] fresh and in its refresh-ahead window
        snapshot = await builder.build(KEYS)

    assert [snapshot[key].from_cache for key in KEYS] == [True, False, True]
    assert snapshot.diagnostics.cache_hits == 2
    assert snapshot.diagnostics.refresh_scheduled == 1
    assert snapshot[KEYS[2]].metadata.get("refresh_scheduled") is True
    assert "refresh_scheduled" not in snapshot[KEYS[0]].metadata


@pytest.mark.parametrize("change", ["set", "set_many", "invalidate", "get"])
async def test_a_repeated_build_serves_each_entry_as_it_is_now(
    change: str, clock: VirtualClock
) -> None:
    async with builder_of("payload", clock, default_policy=LONG) as builder:
        for _ in range(3):  # served, then repeated: the keys are only looked up, then not even
            await builder.build(KEYS)
        cache = builder.cache
        await asyncio.sleep(1.0)
        now = clock.now()
        newer = SnapshotValue(KEYS[0], "newer", "memory", now, now, 0.0, False, False, 0.0)
        if change == "set":
            await cache.set(newer)
        elif change == "set_many":
            await cache.set_many([newer])
        elif change == "invalidate":
            await cache.invalidate(KEYS[0])
        else:
            await cache.get(KEYS[0], now=now, policy=LONG)
        snapshot = await builder.build(KEYS)
        again = await builder.build(KEYS)

    expected = {"set": "newer", "set_many": "newer", "invalidate": "payload", "get": "payload"}
    assert snapshot[KEYS[0]].value == again[KEYS[0]].value == expected[change]
    assert snapshot[KEYS[0]].from_cache is (change != "invalidate")
    assert again.diagnostics.cache_hits == len(KEYS)
