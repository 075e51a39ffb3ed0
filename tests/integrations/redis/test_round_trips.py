"""Batch operations are one round trip each (counted by Redis itself: ``INFO commandstats``)."""

from __future__ import annotations

import time

from redis.asyncio import Redis
from tests.integrations.redis.conftest import command_calls, key, policies, value

from coalestra.integrations.redis import RedisCache

KEYS = [key(f"K{i}") for i in range(1000)]


async def warm(cache: RedisCache) -> None:
    """Connect and load the scripts first: the handshake and script loads happen once.

    The leased key has no stored value: a fresh one is not leased, and then nothing is released
    either, so the release script would first load (SCRIPT LOAD, one more EVALSHA) inside the
    measured window whenever no earlier test on the server had loaded it.
    """
    await cache.set_many_if_newer([value(key("warm"), 0)])
    assert list(await cache.lease_many([key("warm-lease")])) == [key("warm-lease")]
    await cache.release_many([key("warm-lease")])


async def counted(raw: Redis) -> dict[str, int]:
    calls = await command_calls(raw)
    calls.pop("info", None)  # the counting itself
    # The event subscription's heartbeat: after a second of silence (a slow, loaded machine) it
    # PINGs in the background. That is no round trip of the operation under test.
    calls.pop("ping", None)
    return calls


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: n - before.get(name, 0) for name, n in after.items() if n != before.get(name, 0)}


async def test_a_thousand_key_read_is_one_mget(cache: RedisCache, raw: Redis) -> None:
    await cache.set_many([value(k, i) for i, k in enumerate(KEYS)])
    before = await counted(raw)
    found = await cache.get_many(KEYS, now=time.time(), policies=policies(*KEYS))
    assert delta(before, await counted(raw)) == {"mget": 1}
    assert sum(1 for lookup in found.values() if lookup.fresh) == 1000


async def test_a_thousand_value_conditional_write_is_one_script(
    cache: RedisCache, raw: Redis
) -> None:
    await warm(cache)
    before = await counted(raw)
    results = await cache.set_many_if_newer([value(k, i) for i, k in enumerate(KEYS)])
    calls = delta(before, await counted(raw))
    # One EVALSHA; the rest are the script's own commands inside Redis (no round trips).
    assert calls["evalsha"] == 1
    assert set(calls) <= {"evalsha", "get", "getrange", "set", "publish"}
    assert all(result.stored for result in results.values())


async def test_leasing_a_thousand_keys_is_one_script(cache: RedisCache, raw: Redis) -> None:
    await warm(cache)
    before = await counted(raw)
    assert len(await cache.lease_many(KEYS)) == 1000
    await cache.release_many(KEYS)
    calls = delta(before, await counted(raw))
    assert calls["evalsha"] == 2
    assert set(calls) <= {"evalsha", "get", "getrange", "set", "del", "publish"}
