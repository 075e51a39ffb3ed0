"""Bad entries are absent entries: whatever sits in Redis under our names (a non-finite or
far-future timestamp, another key's body, an unreadable body with the top rank, a lease that
never expires) is read as a miss, replaced by the next fetch, counted, never served, and costs a
bounded number of Redis commands."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from tests.integrations.redis.conftest import command_calls, key, value

from coalestra import (
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    PolicyResolver,
    ResourceKey,
    SnapshotBuilder,
    SystemClock,
)
from coalestra.integrations.redis import RedisCache

POLICY = FreshnessPolicy(ttl_seconds=600.0, max_stale_seconds=600.0)
A, B = key("A"), key("B")


@pytest.fixture
async def builder(redis_url: str, prefix: str) -> AsyncIterator[SnapshotBuilder]:
    async def fetch(k: ResourceKey, _context: FetchContext) -> dict[str, Any]:
        return {"subject": k.subject, "fetched": True}

    source = CallableSource(name="upstream", priority=10, supports=lambda _k: True, fetcher=fetch)
    cache = RedisCache(redis_url, prefix=prefix, policy_resolver=PolicyResolver(POLICY))
    made = SnapshotBuilder([source], default_policy=POLICY, cache=cache, clock=SystemClock())
    yield made
    await made.aclose()
    await cache.aclose()


def _cache(builder: SnapshotBuilder) -> RedisCache:
    cache = builder.cache
    assert isinstance(cache, RedisCache)
    return cache


async def _stored(raw: Redis, prefix: str, k: ResourceKey) -> bytes:
    entry = await raw.get(f"{prefix}:v:{k.namespace}:{k.name}:{k.subject}")
    assert entry is not None
    return bytes(entry)


async def _build_once(builder: SnapshotBuilder, raw: Redis, k: ResourceKey) -> int:
    """Build ``k``; return how many Redis commands that took."""
    before = sum((await command_calls(raw)).values())
    snapshot = await builder.build([k], deadline_seconds=5.0)
    assert snapshot.value(k, dict) == {"subject": k.subject, "fetched": True}
    assert not snapshot[k].from_cache  # never served: fetched
    return sum((await command_calls(raw)).values()) - before - 1  # less our own INFO


def _header(rank: int | str, observed: float | str) -> bytes:
    return f"c1 {rank} {observed} v1 0\n".encode()


@pytest.mark.parametrize(
    "observed", ["inf", "-inf", "nan", repr(time.time() + 86400.0)], ids=str.lstrip
)
async def test_an_absurd_timestamp_is_a_miss_and_is_replaced(
    builder: SnapshotBuilder, raw: Redis, prefix: str, observed: str
) -> None:
    name = f"{prefix}:v:market:price:A"
    body = b'{"k":"market:price:A","s":"x","f":0,"l":0,"a":1,"m":{},"v":{"forged":true}}'
    await raw.set(name, _header(0, observed) + body)
    commands = await _build_once(builder, raw, A)
    assert commands < 60  # no recursion (the issue saw ~2,900), no polling loop
    assert not (await _stored(raw, prefix, A)).startswith(_header(0, observed))  # replaced
    stats = await _cache(builder).stats()
    assert stats.rejected_entries == 1
    snapshot = await builder.build([A], deadline_seconds=5.0)
    assert snapshot[A].from_cache  # the replacement is served from now on


async def test_another_key_s_entry_is_a_miss_and_is_replaced(
    builder: SnapshotBuilder, raw: Redis, prefix: str
) -> None:
    await builder.build([B], deadline_seconds=5.0)
    await raw.set(f"{prefix}:v:market:price:A", await _stored(raw, prefix, B))  # copied over
    await _build_once(builder, raw, A)
    assert b'"subject":"A"' in await _stored(raw, prefix, A)
    assert (await _cache(builder).stats()).rejected_entries == 1


async def test_an_unreadable_entry_with_the_top_rank_is_dropped_and_replaced(
    builder: SnapshotBuilder, raw: Redis, prefix: str
) -> None:
    top = _header(2**53, repr(time.time())) + b"\x00garbage"
    await raw.set(f"{prefix}:v:market:price:A", top)
    await _build_once(builder, raw, A)
    assert await _stored(raw, prefix, A) != top  # the write was not refused by its rank
    stats = await _cache(builder).stats()
    assert (stats.rejected_entries, stats.dropped_bad_entries) == (1, 1)


async def test_a_lease_without_expiry_is_taken_over_at_once(
    builder: SnapshotBuilder, raw: Redis, prefix: str
) -> None:
    await raw.set(f"{prefix}:l:market:price:A", "nobody")  # no TTL: nobody would ever free it
    commands = await _build_once(builder, raw, A)
    assert commands < 60  # no millisecond polling (the issue saw 5,742 in 2 s)
    stats = await _cache(builder).stats()
    assert stats.bad_leases == 1
    assert stats.lease_waits == 0  # it never waited on it
    assert await raw.get(f"{prefix}:l:market:price:A") is None  # released after the write


async def test_a_lease_that_is_not_a_string_is_treated_as_absent(
    builder: SnapshotBuilder, raw: Redis, prefix: str
) -> None:
    await raw.hset(f"{prefix}:l:market:price:A", "x", "y")
    await raw.hset(f"{prefix}:v:market:price:A", "x", "y")  # and a value of the wrong type
    await _build_once(builder, raw, A)
    assert (await _cache(builder).stats()).bad_leases == 1
    assert (await _stored(raw, prefix, A)).startswith(b"c1 ")


async def test_a_write_is_never_refused_by_an_entry_nobody_can_read(
    redis_url: str, prefix: str, raw: Redis
) -> None:
    cache = RedisCache(redis_url, prefix=prefix)
    top = _header(2**53, repr(time.time())) + b"\x00garbage"
    await raw.set(f"{prefix}:v:market:price:A", top)
    result = await cache.set_if_newer(value(A, "good"))  # no read before: the write meets it
    assert result.stored
    assert result.previous is None
    assert (await cache.stats()).dropped_bad_entries == 1
    assert await _stored(raw, prefix, A) != top
    await cache.aclose()
