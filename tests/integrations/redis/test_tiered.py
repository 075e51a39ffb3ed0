"""TieredCache: L1 hits stay local, other processes' changes reach every L1, races and outages
never leave L1 behind L2."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from tests.integrations.redis.conftest import (
    LONG,
    Proxy,
    command_calls,
    eventually,
    key,
    policies,
    value,
)

from coalestra.core import CacheWriteStatus, ResourceKey
from coalestra.integrations.redis import RedisCache, TieredCache
from coalestra.integrations.redis._touchlog import TouchLog

A, B = key("A"), key("B")


def tiered(url: str, prefix: str, **options: Any) -> TieredCache:
    return TieredCache(RedisCache(url, prefix=prefix, reconnect_interval_seconds=0.02, **options))


@pytest.fixture
async def pair(redis_url: str, prefix: str) -> AsyncIterator[tuple[TieredCache, TieredCache]]:
    """Two processes' tiered caches on one prefix."""
    first, second = tiered(redis_url, prefix), tiered(redis_url, prefix)
    yield first, second
    await first.aclose()
    await second.aclose()


async def read(cache: TieredCache, k: ResourceKey = A) -> Any:
    found = (await cache.get(k, now=time.time(), policy=LONG)).value
    return None if found is None else found.value


async def test_an_l1_hit_makes_no_redis_call(
    pair: tuple[TieredCache, TieredCache], raw: Redis
) -> None:
    first, _ = pair
    await first.set(value(A, "v1"))  # written to L2, mirrored into L1
    before = await command_calls(raw)
    for _ in range(20):
        assert await read(first) == "v1"
    after = await command_calls(raw)
    assert after.get("mget", 0) == before.get("mget", 0)
    assert after.get("evalsha", 0) == before.get("evalsha", 0)
    assert (await first.stats()).l1.hits == 20


async def test_an_l1_miss_is_read_from_l2_once_then_kept(
    pair: tuple[TieredCache, TieredCache], raw: Redis
) -> None:
    first, second = pair
    await second.set(value(A, "v1"))
    before = (await command_calls(raw)).get("mget", 0)
    assert await read(first) == "v1"
    assert await read(first) == "v1"
    assert (await command_calls(raw)).get("mget", 0) == before + 1


async def test_another_process_s_writes_and_invalidations_reach_this_l1(
    pair: tuple[TieredCache, TieredCache],
) -> None:
    first, second = pair
    await first.set(value(A, "v1"))
    assert await read(first) == "v1"
    await second.set_if_newer(value(A, "v2"))

    async def invalidated() -> bool:
        return (await first.stats()).remote_invalidations >= 1

    await eventually(invalidated, "the write message")
    assert await read(first) == "v2"
    await second.invalidate(A)
    await eventually(lambda: _is(read(first), None), "the invalidation message")
    await second.set(value(B, "b"))
    assert await read(first, B) == "b"
    await second.clear()
    await eventually(lambda: _is(read(first, B), None), "the clear message")


async def _is(result: Any, expected: Any) -> bool:
    return bool(await result == expected)


async def test_own_writes_are_not_dropped_by_their_own_messages(
    pair: tuple[TieredCache, TieredCache], raw: Redis
) -> None:
    first, second = pair
    await first.set(value(A, "v1"))
    await second.set(value(B, "b"))  # a message behind ours: once it is here, ours is too
    await eventually(lambda: _remote(first, 1), "the other process's message")
    before = (await command_calls(raw)).get("mget", 0)
    assert await read(first) == "v1"
    assert (await command_calls(raw)).get("mget", 0) == before


async def _remote(cache: TieredCache, count: int) -> bool:
    return (await cache.stats()).remote_invalidations >= count


async def test_l1_holds_the_winner_of_a_conditional_write(
    pair: tuple[TieredCache, TieredCache], raw: Redis
) -> None:
    first, second = pair
    now = time.time()
    await second.set(value(A, "newer", observed_at=now))
    result = await first.set_if_newer(value(A, "older", observed_at=now - 1))
    assert result.status is CacheWriteStatus.IGNORED_OLDER
    before = (await command_calls(raw)).get("mget", 0)
    assert await read(first) == "newer"  # from L1, no L2 read
    assert (await command_calls(raw)).get("mget", 0) == before


async def test_a_read_that_raced_with_a_change_does_not_fill_l1(
    pair: tuple[TieredCache, TieredCache],
) -> None:
    first, second = pair
    await second.set(value(A, "v1"))
    l2 = first.l2
    original = l2.get_many
    read_v1, gate = asyncio.Event(), asyncio.Event()

    async def slow_read(*args: Any, **kwargs: Any) -> Any:
        found = await original(*args, **kwargs)  # reads v1 ...
        read_v1.set()
        await gate.wait()  # ... and is overtaken by a change before it fills L1
        return found

    l2.get_many = slow_read  # type: ignore[method-assign]
    reading = asyncio.create_task(read(first))
    await read_v1.wait()  # not a sleep: on a loaded machine the read could start after the write
    await second.set_if_newer(value(A, "v2"))
    await eventually(lambda: _remote(first, 1), "the write message")
    gate.set()
    assert await reading == "v1"  # it was the value when the read began
    l2.get_many = original  # type: ignore[method-assign]
    assert (await first.stats()).skipped_fills == 1
    assert await read(first) == "v2"  # not the raced v1


async def test_a_cut_network_keeps_l1_serving_and_resyncs_on_reconnect(
    proxy: Proxy, redis_url: str, prefix: str
) -> None:
    cut_off = tiered(proxy.url, prefix, heartbeat_seconds=0.05, socket_timeout_seconds=0.2)
    other = tiered(redis_url, prefix)
    await cut_off.set(value(A, "v1"))
    assert await read(cut_off) == "v1"
    await proxy.cut()
    await other.set_if_newer(value(A, "v2"))  # a message cut_off never receives
    assert await read(cut_off) == "v1"  # degraded: L1 keeps serving
    result = await cut_off.set(value(B, "local"))  # L2 unreachable: L1 only
    assert result is None
    assert await read(cut_off, B) == "local"
    assert not (await cut_off.stats()).l2.available
    await proxy.restore()
    await eventually(lambda: _is(read(cut_off), "v2"), "the resync after reconnection")
    stats = await cut_off.stats()
    assert stats.l1_drops >= 2
    assert stats.l2.available
    assert stats.l2.subscriptions >= 2
    await cut_off.aclose()
    await other.aclose()


async def test_a_silent_subscription_is_noticed_and_l1_resynced(proxy: Proxy, prefix: str) -> None:
    quiet = tiered(proxy.url, prefix, heartbeat_seconds=0.02, socket_timeout_seconds=0.2)
    await quiet.set(value(A, "v1"))
    assert (await quiet.stats()).l2.subscribed
    proxy.freeze()  # no reset, no error: only silence
    await eventually(lambda: _subscribed(quiet, False), "the heartbeat to give up")
    drops = (await quiet.stats()).l1_drops
    proxy.thaw()
    await eventually(lambda: _subscribed(quiet, True), "the resubscription")
    assert (await quiet.stats()).l1_drops > drops
    await quiet.aclose()


async def _subscribed(cache: TieredCache, expected: bool) -> bool:
    return (await cache.stats()).l2.subscribed is expected


def test_the_touch_log() -> None:
    log = TouchLog()
    first = log.begin()
    log.touch([A])
    second = log.begin()
    assert not log.unchanged(A, first)
    assert log.unchanged(B, first)
    assert log.unchanged(A, second)
    log.touch_all()
    assert not log.unchanged(B, second)
    log.end(first)
    log.end(second)
    third = log.begin()
    assert log.unchanged(A, third)
    assert log.unchanged(B, third)
    log.end(third)


async def test_lease_methods_are_l2_s(pair: tuple[TieredCache, TieredCache]) -> None:
    first, second = pair
    assert list(await first.lease_many([A])) == [A]
    assert list(await second.lease_many([A])) == []
    await first.release_many([A])
    assert (
        await second.wait_for_many([A], wait_seconds=1.0, now=time.time(), policies=policies(A))
        == {}
    )
    assert list(await second.lease_many([A])) == [A]


async def test_lease_administration_is_l2_s(pair: tuple[TieredCache, TieredCache]) -> None:
    first, second = pair
    assert list(await first.lease_many([A, B])) == [A, B]
    assert sorted(str(info.key) for info in await second.leases()) == sorted([str(A), str(B)])
    assert await second.clear_leases([A]) == 1
    assert [info.key for info in await first.l2.leases()] == [B]
    assert await first.clear_leases() == 1
    assert await second.leases() == ()


def test_a_tiered_cache_needs_a_redis_cache() -> None:
    with pytest.raises(TypeError, match="RedisCache"):
        TieredCache(object())  # type: ignore[arg-type]
