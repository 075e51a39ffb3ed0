"""Conditional writes: the memory cache's rules, applied atomically inside Redis."""

from __future__ import annotations

import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.integrations.redis.conftest import LONG, key, policies, value

from coalestra.cache import AsyncMemoryCache
from coalestra.core import CacheWriteStatus, PayloadIsolationError
from coalestra.integrations.redis import RedisCache

K = key("BTC")
T = time.time()


@pytest.mark.parametrize(
    ("held", "offered", "force", "replace_equal", "expected"),
    [
        ((0, T), (0, T + 1), False, False, CacheWriteStatus.STORED),
        ((0, T), (0, T - 1), False, False, CacheWriteStatus.IGNORED_OLDER),
        ((0, T), (0, T), False, False, CacheWriteStatus.IGNORED_DUPLICATE),
        ((0, T), (0, T), False, True, CacheWriteStatus.STORED),
        ((5, T), (1, T + 9), False, False, CacheWriteStatus.IGNORED_LOWER_AUTHORITY),
        ((1, T), (5, T - 9), False, False, CacheWriteStatus.STORED),
        ((5, T), (1, T - 9), True, False, CacheWriteStatus.STORED),
        ((-3, T), (-2, T - 1), False, False, CacheWriteStatus.STORED),
    ],
)
async def test_the_write_rules(
    cache: RedisCache,
    held: tuple[int, float],
    offered: tuple[int, float],
    force: bool,
    replace_equal: bool,
    expected: CacheWriteStatus,
) -> None:
    first = value(K, "held", rank=held[0], observed_at=held[1])
    assert (await cache.set_if_newer(first)).previous is None
    second = value(K, "offered", rank=offered[0], observed_at=offered[1])
    result = await cache.set_if_newer(second, force=force, replace_equal=replace_equal)
    assert result.status is expected
    assert result.value is second
    assert result.previous is not None
    assert result.previous.version == first.version
    stored = (await cache.get(K, now=T, policy=LONG)).value
    winner = second if expected is CacheWriteStatus.STORED else first
    assert stored is not None
    assert stored.version == winner.version


async def test_a_batch_applies_in_order_and_reports_the_last_result_per_key(
    cache: RedisCache,
) -> None:
    a, b = key("A"), key("B")
    older, newer = value(a, 1, observed_at=T - 1), value(a, 2, observed_at=T)
    results = await cache.set_many_if_newer([newer, value(b, 3), older])
    assert results[a].status is CacheWriteStatus.IGNORED_OLDER
    assert results[a].previous is not None
    assert results[a].previous.version == newer.version
    assert results[b].stored
    stats = await cache.stats()
    assert (stats.sets, stats.ignored_writes) == (2, 1)


async def test_a_value_the_serializer_refuses_is_skipped_and_the_batch_written(
    cache: RedisCache, caplog: pytest.LogCaptureFixture
) -> None:
    good, bad, worse = key("good"), key("bad"), key("worse")
    results = await cache.set_many_if_newer(
        [value(good, (1, 2)), value(bad, {"at": object()}), value(worse, object())]
    )
    assert results[bad].status is CacheWriteStatus.STORED  # reported as if Redis were down
    assert results[bad].previous is None
    assert "$['v']['at'] is a object" in caplog.text
    await cache.set_many([value(worse, object())])
    assert caplog.text.count("not caching") == 2  # once per payload type (dict, object)
    keys = (good, bad, worse)
    found = await cache.get_many(keys, now=time.time(), policies=policies(*keys))
    assert found[good].value is not None
    assert found[good].value.value == (1, 2)
    assert found[bad].value is None
    assert (await cache.stats()).refused_values == 3
    with pytest.raises(PayloadIsolationError, match="market:price:bad"):
        await cache.set_if_newer(value(bad, object()))  # one value: the caller hears of it


_write = st.tuples(
    st.sampled_from(["A", "B"]),  # key
    st.integers(-2, 2),  # authority rank
    st.integers(0, 3),  # observed_at offset: few values, so ties happen
    st.booleans(),  # force
    st.booleans(),  # replace_equal
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(writes=st.lists(_write, min_size=1, max_size=12))
async def test_redis_decides_every_write_as_the_memory_cache_does(
    redis_url: str, writes: list[tuple[str, int, int, bool, bool]]
) -> None:
    redis = RedisCache(redis_url, prefix=f"h{uuid.uuid4().hex[:10]}")
    memory = AsyncMemoryCache()
    try:
        for subject, rank, offset, force, replace_equal in writes:
            offered = value(key(subject), offset, rank=rank, observed_at=T + offset)
            expected = await memory.set_if_newer(offered, force=force, replace_equal=replace_equal)
            got = await redis.set_if_newer(offered, force=force, replace_equal=replace_equal)
            assert got.status is expected.status
            assert (got.previous is None) == (expected.previous is None)
            if got.previous is not None and expected.previous is not None:
                assert got.previous.version == expected.previous.version
    finally:
        await redis.clear()
        await redis.aclose()
