"""Redis failures never fail a build the sources can serve, and never bring back older values."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from tests.integrations.redis.conftest import (
    FixedPolicies,
    Proxy,
    RedisServer,
    eventually,
    key,
    value,
)

from coalestra import CallableSource, FetchContext, SnapshotBuilder, SourcePayload, SystemClock
from coalestra.core import FreshnessPolicy, ResourceKey
from coalestra.integrations.redis import RedisCache, TieredCache

KEYS = [key(f"K{i}") for i in range(5)]
SHORT = FreshnessPolicy(
    ttl_seconds=0.03, max_stale_seconds=0.03
)  # builds keep refetching, so writes keep coming


def redis_cache(url: str, prefix: str, policy: FreshnessPolicy = SHORT) -> RedisCache:
    return RedisCache(
        url,
        prefix=prefix,
        policy_resolver=FixedPolicies(policy),
        reconnect_interval_seconds=0.02,
        heartbeat_seconds=0.05,
        connect_timeout_seconds=0.2,
        socket_timeout_seconds=0.2,
        lease_ttl_seconds=1.0,
    )


def builder(cache: RedisCache | TieredCache) -> SnapshotBuilder:
    counter = itertools.count()

    async def fetch(k: ResourceKey, _context: FetchContext) -> SourcePayload[Any]:
        return SourcePayload({"n": next(counter)}, observed_at=time.time())

    source = CallableSource(name="upstream", priority=1, supports=lambda _k: True, fetcher=fetch)
    return SnapshotBuilder([source], default_policy=SHORT, cache=cache, clock=SystemClock())


@pytest.mark.parametrize("tier", ["redis", "tiered"])
async def test_builds_survive_a_redis_restart_and_never_go_back(
    own_server: RedisServer, prefix: str, tier: str
) -> None:
    caches = [redis_cache(own_server.url, prefix) for _ in range(2)]
    tiers: list[RedisCache | TieredCache] = (
        [TieredCache(c) for c in caches] if tier == "tiered" else list(caches)
    )
    builders = [builder(c) for c in tiers]
    newest: list[dict[ResourceKey, float]] = [{}, {}]
    sets_before_restart = 0
    for step in range(90):
        if step == 30:
            own_server.stop()
        if step == 60:
            own_server.start()
            sets_before_restart = (await caches[0].stats()).sets
        for seen, made in zip(newest, builders, strict=True):
            snapshot = await made.build(KEYS, deadline_seconds=5.0)  # never raises
            for k in KEYS:
                observed = snapshot[k].observed_at
                assert observed >= seen.get(k, 0.0), "an older value was served"
                seen[k] = observed
        await asyncio.sleep(0.002)
    for made in builders:
        await made.aclose()
    stats = [await c.stats() for c in caches]
    assert all(s.available and s.outages >= 1 and s.errors >= 1 for s in stats)
    assert stats[0].sets > sets_before_restart  # the cache is written to again
    for c in tiers:
        await c.aclose()


async def test_an_invalidation_redis_missed_is_replayed_when_it_is_back(
    proxy: Proxy, prefix: str, raw: Redis
) -> None:
    cut_off = redis_cache(proxy.url, prefix, FreshnessPolicy(60.0, 60.0))
    await cut_off.set(value(key("A"), 1))
    await proxy.cut()
    await cut_off.invalidate(key("A"))  # skipped for now, remembered
    assert await raw.exists(f"{prefix}:v:market:price:A")
    await proxy.restore()

    async def replayed() -> bool:
        await cut_off.get(key("B"), now=time.time(), policy=FreshnessPolicy(60.0, 60.0))  # any call
        return not await raw.exists(f"{prefix}:v:market:price:A")

    await eventually(replayed, "the replayed invalidation")
    await cut_off.aclose()


async def test_writes_and_reads_degrade_while_redis_is_unreachable(
    proxy: Proxy, prefix: str
) -> None:
    cut_off = redis_cache(proxy.url, prefix, FreshnessPolicy(60.0, 60.0))
    await proxy.cut()
    offered = value(key("A"), 1)
    assert (await cut_off.set_if_newer(offered)).stored  # skipped, reported as stored
    await cut_off.set_many([offered])
    lookup = await cut_off.get(key("A"), now=time.time(), policy=FreshnessPolicy(60.0, 60.0))
    assert lookup.value is None
    stats = await cut_off.stats()
    assert not stats.available
    assert stats.degraded_calls >= 3
    assert stats.last_error
    with pytest.raises(RuntimeError, match="clear"):
        await cut_off.clear()
    await cut_off.aclose()


async def test_closing_ends_the_listener_even_when_a_read_absorbs_the_cancellation(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # redis-py 8.2 was seen (on a loaded machine) to swallow the cancel that aclose sends its
    # pub/sub listener while it reads: the listener read on and aclose never returned.
    original = PubSub.get_message

    async def absorbing(self: PubSub, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(self, *args, **kwargs)
        except asyncio.CancelledError:
            return None

    monkeypatch.setattr(PubSub, "get_message", absorbing)
    cache = redis_cache(redis_url, prefix)
    await cache.wait_for_many(
        [KEYS[0]], wait_seconds=0.01, now=time.time(), policies={KEYS[0]: SHORT}
    )  # starts the listener
    assert (await cache.stats()).subscribed
    closing = asyncio.ensure_future(cache.aclose())
    done, _ = await asyncio.wait({closing}, timeout=5.0)  # never cancels: nothing to absorb
    assert closing in done, "aclose did not return"
