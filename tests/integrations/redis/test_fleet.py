"""Operating a fleet: ghost leases, the command timeout, lease inspection and clearing, and
fleet-wide invalidation (two caches stand for two processes)."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis
from tests.integrations.redis.conftest import Proxy, eventually, key, policies, value

from coalestra.core import ResourceKey
from coalestra.integrations.redis import RedisCache, TieredCache

A, B = key("A"), key("B")


async def test_a_lease_request_redis_applies_late_is_released_when_it_answers(
    proxy: Proxy, prefix: str, raw: Redis
) -> None:
    cache = RedisCache(
        proxy.url,
        prefix=prefix,
        socket_timeout_seconds=0.2,
        reconnect_interval_seconds=0.05,
        lease_ttl_seconds=3.0,  # longer than the test: only the ghost release removes it
    )
    await cache.release_many(await cache.lease_many([B]))  # connected, the script loaded
    proxy.freeze()  # the request reaches nobody ...
    assert set(await cache.lease_many([A])) == {A}  # ... times out: granted locally
    proxy.thaw()  # ... and is applied now, late: a lease nobody will use
    lease = f"{prefix}:l:market:price:A"
    await eventually(lambda: raw.exists(lease), "the late lease")

    async def released() -> bool:
        return not await raw.exists(lease) and (await cache.stats()).ghost_releases == 1

    await eventually(released, "the ghost release", limit=2.5)
    await cache.aclose()


async def test_a_silent_redis_holds_a_command_for_the_socket_timeout_once(
    proxy: Proxy, prefix: str
) -> None:
    cache = RedisCache(proxy.url, prefix=prefix, socket_timeout_seconds=0.5)
    await cache.get_many([A], now=time.time(), policies=policies(A))
    proxy.freeze()
    started = time.monotonic()
    found = await cache.get_many([A], now=time.time(), policies=policies(A))
    elapsed = time.monotonic() - started
    assert found[A].value is None
    assert 0.4 < elapsed < 0.9  # one timeout: the client does not retry it (that made 1.0)
    started = time.monotonic()
    await cache.get_many([A], now=time.time(), policies=policies(A))
    assert time.monotonic() - started < 0.1  # then fail fast until the reconnect interval
    proxy.thaw()
    await cache.aclose()


async def test_leases_can_be_listed_and_cleared(
    redis_url: str, prefix: str, raw: Redis, cache: RedisCache
) -> None:
    other = RedisCache(redis_url, prefix=prefix)
    assert set(await cache.lease_many([A, B])) == {A, B}
    found = {info.key: info for info in await other.leases()}
    assert set(found) == {A, B}
    assert found[A].holder is not None
    assert found[A].holder.startswith(f"{cache._store.token}.")
    assert found[A].seconds_left is not None
    assert 0.0 < found[A].seconds_left <= 1.5
    assert await other.clear_leases([A]) == 1
    assert [info.key for info in await other.leases()] == [B]
    waiting = asyncio.create_task(
        other.wait_for_many([B], wait_seconds=5.0, now=time.time(), policies=policies(B))
    )
    await asyncio.sleep(0.05)
    await other.clear()  # values and leases: the waiter wakes and takes the lease over
    assert await waiting == {}
    assert (await other.stats()).lease_takeovers == 1
    await other.aclose()


async def test_invalidating_a_namespace_reaches_every_process_s_l1(
    redis_url: str, prefix: str
) -> None:
    first = TieredCache(RedisCache(redis_url, prefix=prefix))
    second = TieredCache(RedisCache(redis_url, prefix=prefix))
    fx = ResourceKey("fx", "rate", "EURUSD")
    keys = [A, B, fx, key("C", name="volume")]
    await first.set_many([value(k, k.subject) for k in keys])
    now = time.time()
    assert all(
        lookup.value is not None
        for lookup in (await second.get_many(keys, now=now, policies=policies(*keys))).values()
    )  # now in second's L1
    dropped = await first.invalidate_namespace("market", name="price")
    assert set(dropped) == {A, B}

    async def gone_from_second() -> bool:
        found = await second.get_many(keys, now=time.time(), policies=policies(*keys))
        return [k for k in keys if found[k].value is None] == [A, B]

    await eventually(gone_from_second, "the other L1 to drop market:price")
    assert set(await second.invalidate_matching(lambda k: k.subject == "EURUSD")) == {fx}

    async def gone_from_first() -> bool:
        found = await first.get_many([fx], now=time.time(), policies=policies(fx))
        return found[fx].value is None

    await eventually(gone_from_first, "the first L1 to drop fx")
    await first.aclose()
    await second.aclose()


async def test_namespace_parts_with_glob_characters_match_literally(
    cache: RedisCache,
) -> None:
    star, plain = ResourceKey("a*", "x", "1"), ResourceKey("ab", "x", "1")
    await cache.set_many([value(star, 1), value(plain, 2)])
    assert await cache.invalidate_namespace("a*") == (star,)
    found = await cache.get_many([plain], now=time.time(), policies=policies(plain))
    assert found[plain].value is not None
