"""RedisCache reads, writes, expiry, derived values, invalidation, configuration and bad input."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis
from tests.integrations.redis.conftest import (
    LONG,
    FixedPolicies,
    RedisServer,
    key,
    policies,
    value,
)

from coalestra.core import FreshnessPolicy, PayloadIsolationError, ResourceKey
from coalestra.integrations.redis import DEFAULT_RETENTION, RedisCache


async def test_a_value_comes_back_with_its_provenance(cache: RedisCache) -> None:
    k = key("BTC")
    stored = value(k, {"p": [1, 2.5, "x", None, True]}, rank=3, metadata={"seq": 7}, source="ws")
    await cache.set(stored)
    now = time.time()
    lookup = (await cache.get_many([k], now=now, policies=policies(k)))[k]
    found = lookup.value
    assert found is not None
    assert lookup.fresh
    assert lookup.usable_stale  # True on fresh hits too
    assert found.value == stored.value
    assert found.value is not stored.value
    assert (found.source, found.authority_rank, found.version) == ("ws", 3, stored.version)
    assert (found.observed_at, found.fetched_at) == (stored.observed_at, stored.fetched_at)
    assert dict(found.metadata) == {"seq": 7}
    assert found.from_cache
    assert not found.stale
    assert found.age_seconds == pytest.approx(now - stored.observed_at)


async def test_freshness_is_judged_by_observed_at_under_the_callers_policy(
    cache: RedisCache,
) -> None:
    now = time.time()
    fresh, stale, expired, absent = key("F"), key("S"), key("E"), key("A")
    await cache.set_many(
        [
            value(fresh, 1, observed_at=now - 5),
            value(stale, 2, observed_at=now - 15),
            value(expired, 3, observed_at=now - 25),
        ]
    )
    policy = FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=20.0)
    found = await cache.get_many(
        [fresh, stale, expired, absent],
        now=now,
        policies=policies(fresh, stale, expired, absent, policy=policy),
    )
    assert list(found) == [fresh, stale, expired, absent]
    assert found[fresh].fresh
    assert found[stale].usable_stale
    assert found[stale].value.stale
    assert found[expired].value is None
    assert found[absent].value is None
    stats = await cache.stats()
    assert (stats.fresh_hits, stats.stale_hits, stats.misses, stats.sets) == (1, 1, 2, 3)


async def test_entries_expire_in_redis_after_ttl_plus_stale_window(
    redis_url: str, prefix: str, raw: Redis
) -> None:
    policy = FreshnessPolicy(ttl_seconds=100.0, max_stale_seconds=150.0)
    cache = RedisCache(redis_url, prefix=prefix, policy_resolver=FixedPolicies(policy))
    now = time.time()
    await cache.set(value(key("BTC"), 1, observed_at=now - 30))
    left = await raw.pttl(f"{prefix}:v:market:price:BTC")
    assert 115_000 < left <= 120_000  # 150 s after observed_at, which was 30 s ago
    await cache.aclose()
    default = RedisCache(redis_url, prefix=prefix)
    await default.set(value(key("ETH"), 1, observed_at=now))
    assert (
        await raw.pttl(f"{prefix}:v:market:price:ETH") > (DEFAULT_RETENTION.ttl_seconds - 5) * 1000
    )
    await default.aclose()


async def test_prefixes_isolate_applications(redis_url: str, prefix: str) -> None:
    first = RedisCache(redis_url, prefix=f"{prefix}:a")
    second = RedisCache(redis_url, prefix=f"{prefix}:b")
    k = key("BTC")
    await first.set(value(k, "a"))
    assert (await second.get(k, now=time.time(), policy=LONG)).value is None
    await first.aclose()
    await second.aclose()


async def test_keys_with_separators_and_qualifiers_round_trip(cache: RedisCache) -> None:
    odd = ResourceKey("ns:x", "na me", "a?b&c=d%e/f", {"interval": "1m", "q=": "&:?"})
    await cache.set(value(odd, "odd"))
    found = (await cache.get(odd, now=time.time(), policy=LONG)).value
    assert found is not None
    assert found.key == odd
    assert found.value == "odd"


async def test_duplicate_keys_are_read_once(cache: RedisCache) -> None:
    k = key("BTC")
    await cache.set(value(k, 1))
    found = await cache.get_many([k, k], now=time.time(), policies=policies(k))
    assert list(found) == [k]
    assert (await cache.stats()).hits == 1


async def test_invalidate_and_clear(cache: RedisCache, raw: Redis, prefix: str) -> None:
    a, b, c = key("A"), key("B"), key("C")
    await cache.set_many([value(a, 1), value(b, 2), value(c, 3)])
    await raw.set(f"{prefix}:l:market:price:A", "someone", px=60_000)  # leases are not values
    await cache.invalidate(a)
    found = await cache.get_many([a, b], now=time.time(), policies=policies(a, b))
    assert found[a].value is None
    assert found[b].value is not None
    await cache.clear()
    found = await cache.get_many([b, c], now=time.time(), policies=policies(b, c))
    assert found[b].value is None
    assert found[c].value is None
    assert await raw.get(f"{prefix}:l:market:price:A") is None  # clear() drops leases too
    assert (await cache.stats()).invalidations == 1


# -- derived values ------------------------------------------------------------------------------


async def test_a_derived_value_is_served_while_its_dependencies_are_current(
    cache: RedisCache, raw: Redis, prefix: str
) -> None:
    base, middle, top = key("base"), key("middle", "rule"), key("top", "rule")
    base_value = value(base, 1)
    middle_value = value(middle, 2, dependencies={base: base_value.version})
    top_value = value(top, 3, dependencies={middle: middle_value.version})
    await cache.set_many([base_value, middle_value, top_value])
    # Only the top key is read: its dependencies come from a second read of their headers.
    assert (await cache.get(top, now=time.time(), policy=LONG)).value is not None
    await cache.set(value(base, 10))  # a new revision of the base invalidates the chain
    now = time.time()
    found = await cache.get_many([top, middle], now=now, policies=policies(top, middle))
    assert found[top].value is None
    assert found[middle].value is None
    assert not await raw.exists(f"{prefix}:v:market:rule:top")  # dropped, as the memory cache does
    assert (await cache.stats()).dropped_derived == 2


async def test_a_derived_value_with_a_missing_dependency_is_a_miss(cache: RedisCache) -> None:
    derived = value(key("d", "rule"), 1, dependencies={key("gone"): "v1"})
    await cache.set(derived)
    assert (await cache.get(derived.key, now=time.time(), policy=LONG)).value is None


# -- configuration ------------------------------------------------------------------------------


async def test_url_selects_the_database_and_authenticates(tmp_path: Path, prefix: str) -> None:
    server = RedisServer(tmp_path, None, "--requirepass", "s3cret")
    server.start()
    try:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/3"
        cache = RedisCache(url, prefix=prefix)
        await cache.set(value(key("BTC"), 1))
        check = Redis.from_url(url)
        assert await check.exists(f"{prefix}:v:market:price:BTC")
        assert await check.dbsize() == 1
        await check.aclose()
        await cache.aclose()
        refused = RedisCache(f"redis://:wrong@127.0.0.1:{server.port}/3", prefix=prefix)
        assert (await refused.get(key("BTC"), now=time.time(), policy=LONG)).value is None
        assert (await refused.stats()).errors == 1
        await refused.aclose()
    finally:
        server.stop()


async def test_an_existing_client_can_be_used_and_is_left_open(redis_url: str, prefix: str) -> None:
    client = Redis.from_url(redis_url)
    cache = RedisCache(client=client, prefix=prefix)
    await cache.set(value(key("BTC"), 1))
    await cache.aclose()
    assert await client.ping()
    await client.aclose()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prefix": ""}, ValueError, "prefix"),
        ({"prefix": "a*b"}, ValueError, "prefix"),
        ({"prefix": 3}, TypeError, "prefix"),
        ({"serializer": object()}, TypeError, "serializer"),
        ({"policy_resolver": object()}, TypeError, "policy_resolver"),
        ({"clock": object()}, TypeError, "clock"),
        ({"lease_ttl_seconds": 0.0}, ValueError, "lease_ttl_seconds"),
        ({"lease_ttl_seconds": math.nan}, ValueError, "lease_ttl_seconds"),
        ({"poll_interval_seconds": -1.0}, ValueError, "poll_interval_seconds"),
        ({"max_connections": 0}, ValueError, "max_connections"),
        ({"socket_timeout_seconds": "1"}, TypeError, "socket_timeout_seconds"),
        ({"client": object()}, TypeError, "client"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        RedisCache(**kwargs)  # type: ignore[arg-type]


async def test_rediss_urls_use_tls_and_the_pool_settings() -> None:
    cache = RedisCache(
        "rediss://cache.example:6380/2", max_connections=5, socket_timeout_seconds=0.5
    )
    pool = cache.client.connection_pool
    assert pool.connection_class.__name__ == "SSLConnection"
    assert pool.max_connections == 5
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["socket_timeout"] == 0.5
    await cache.aclose()


async def test_a_client_that_decodes_responses_is_refused(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ValueError, match="decode"):
        RedisCache(client=client)
    await client.aclose()


async def test_url_and_client_are_exclusive(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    with pytest.raises(ValueError, match="url or client"):
        RedisCache(redis_url, client=client)
    await client.aclose()
    with pytest.raises(ValueError, match="scheme"):
        RedisCache("http://example.invalid")


async def test_bad_arguments_are_refused(cache: RedisCache) -> None:
    k = key("BTC")
    with pytest.raises(TypeError, match="keys"):
        await cache.get_many("abc", now=time.time(), policies={})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no FreshnessPolicy"):
        await cache.get_many([k], now=time.time(), policies={})
    with pytest.raises(ValueError, match="now"):
        await cache.get_many([k], now=math.nan, policies=policies(k))
    with pytest.raises(TypeError, match="policy"):
        await cache.get(k, now=time.time(), policy=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="value"):
        await cache.set("x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="force"):
        await cache.set_if_newer(value(k, 1), force=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys"):
        await cache.invalidate_many([k, "x"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="authority_rank"):
        await cache.set(value(k, 1, rank=2**60))
    with pytest.raises(PayloadIsolationError, match="market:price:BTC"):
        await cache.set(value(k, object()))
