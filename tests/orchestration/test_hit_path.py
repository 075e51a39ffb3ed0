"""A warm build's hits, served by the built-in cache in one loop: what each served value holds,
that it is the build's own (no later build or cache read changes it), and that the keys the
loop does not serve (stale, derived, slow copies) still follow the general rules."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.orchestration.conftest import Single, keys, make_builder

from coalestra.cache import AsyncMemoryCache
from coalestra.core import (
    FreshnessPolicy,
    PayloadIsolationError,
    RefreshMode,
    ResourceKey,
)
from coalestra.orchestration import PolicyResolver
from coalestra.testing import VirtualClock

A, B, C = keys("A", "B", "C")
LONG = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)


def quote(key: ResourceKey, _ctx: Any) -> dict[str, Any]:
    return {"bid": 1.0, "ask": 1.1, "venue": key.subject, "ts": 123, "levels": [1, 2]}


async def test_a_served_hit_is_restamped_and_the_stored_revision_is_not(
    clock: VirtualClock,
) -> None:
    cache = AsyncMemoryCache()
    builder = make_builder(
        [Single("rest", 1, lambda k, _c: k.subject)], clock, cache=cache, default_policy=LONG
    )
    first = (await builder.build([A]))[A]
    await asyncio.sleep(2.0)
    second = (await builder.build([A]))[A]
    await asyncio.sleep(3.0)
    third = (await builder.build([A]))[A]

    assert (second.from_cache, second.latency_ms, second.stale) == (True, 0.0, False)
    assert second.fetched_at == first.fetched_at + 2.0
    assert second.age_seconds == 2.0
    assert (third.fetched_at, third.age_seconds) == (first.fetched_at + 5.0, 5.0)
    # Each build serves its own value: a later build changes nothing an earlier one returned.
    assert second is not third
    assert (second.fetched_at, second.age_seconds) == (first.fetched_at + 2.0, 2.0)
    stored = (await cache.get(A, now=clock.now(), policy=LONG)).value
    assert stored is not None
    assert (stored.from_cache, stored.fetched_at) == (False, first.fetched_at)
    assert stored.latency_ms == first.latency_ms
    assert (stored.version, second.version, third.version) == (first.version,) * 3


async def test_served_mutable_payloads_are_copies_per_build(clock: VirtualClock) -> None:
    builder = make_builder([Single("rest", 1, quote)], clock, default_policy=LONG)
    await builder.build([A, B])
    one = await builder.build([A, B])
    two = await builder.build([A, B])

    assert one[A].value == quote(A, None)
    assert one[A].value is not two[A].value
    one[A].value["levels"].append(3)
    one[B].value["bid"] = 0.0
    three = await builder.build([A, B])
    assert three[A].value == quote(A, None)
    assert three[B].value == quote(B, None)
    assert three.diagnostics.cache_hits == 2


async def test_fresh_stale_and_missing_keys_in_one_build_keep_request_order(
    clock: VirtualClock,
) -> None:
    short = FreshnessPolicy(
        ttl_seconds=1.0, max_stale_seconds=60.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
    )
    policies = PolicyResolver(LONG, overrides={B: short})
    builder = make_builder(
        [Single("rest", 1, lambda k, _c: k.subject)], clock, policy_resolver=policies
    )
    await builder.build([A, B])
    await asyncio.sleep(5.0)

    snapshot = await builder.build([C, B, A])

    assert list(snapshot.resources) == [C, B, A]
    assert (snapshot[B].stale, snapshot[B].from_cache) == (True, True)
    assert (snapshot[A].stale, snapshot[A].from_cache) == (False, True)
    assert not snapshot[C].from_cache
    assert (snapshot.diagnostics.cache_hits, snapshot.diagnostics.cache_misses) == (2, 1)
    assert snapshot.diagnostics.stale_values == 1
    assert snapshot.diagnostics.observation_skew_ms == pytest.approx(5000.0)


async def test_a_payload_the_copier_cannot_copy_on_a_hit_fails_the_build(
    clock: VirtualClock,
) -> None:
    calls = {"n": 0}

    def copier(value: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 1:  # the write's one copy (kept) succeeds, the read's copy fails
            raise RuntimeError("no copy today")
        return dict(value)

    cache = AsyncMemoryCache(payload_copier=copier)
    builder = make_builder(
        [Single("rest", 1, lambda k, _c: {"x": 1})], clock, cache=cache, default_policy=LONG
    )
    await builder.build([A])

    with pytest.raises(PayloadIsolationError) as caught:
        await builder.build([A])
    assert caught.value.context == f"cache read of {A}"
    assert caught.value.value_type == "dict"
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert (await cache.stats()).fresh_hits == 1


async def test_refresh_ahead_is_scheduled_from_a_served_hit(clock: VirtualClock) -> None:
    ahead = FreshnessPolicy(
        ttl_seconds=10.0,
        max_stale_seconds=10.0,
        refresh_mode=RefreshMode.REFRESH_AHEAD,
        refresh_ahead_seconds=5.0,
    )
    calls: list[ResourceKey] = []

    def fetch(key: ResourceKey, _ctx: Any) -> str:
        calls.append(key)
        return key.subject

    builder = make_builder([Single("rest", 1, fetch)], clock, default_policy=ahead)
    await builder.build([A, B])
    await asyncio.sleep(6.0)

    snapshot = await builder.build([A, B])
    await builder.wait_for_refreshes()

    assert snapshot[A].metadata["refresh_scheduled"] is True
    assert snapshot.diagnostics.refresh_scheduled == 2
    assert calls == [A, B, A, B]
    await builder.aclose()
