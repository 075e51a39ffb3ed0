"""Cross-process single-flight: leases, releases, waits and takeovers (two caches stand for two
processes: each has its own token)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from tests.integrations.redis.conftest import (
    LONG,
    FixedPolicies,
    command_calls,
    eventually,
    free_port,
    key,
    policies,
    value,
)

from coalestra import CallableSource, FetchContext, SnapshotBuilder, SystemClock
from coalestra.core import FreshnessPolicy, RefreshMode, ResourceKey
from coalestra.integrations.redis import RedisCache

A, B = key("A"), key("B")


@pytest.fixture
async def other(redis_url: str, prefix: str) -> AsyncIterator[RedisCache]:
    """A second process's cache on the same prefix."""
    made = RedisCache(redis_url, prefix=prefix, poll_interval_seconds=0.02)
    yield made
    await made.aclose()


async def test_a_lease_is_held_by_one_process(cache: RedisCache, other: RedisCache) -> None:
    assert set(await cache.lease_many([A, B])) == {A, B}
    assert set(await cache.lease_many([A])) == {A}  # re-entrant for its holder
    assert list(await other.lease_many([A, B])) == []
    await cache.release_many([A])
    assert list(await other.lease_many([A, B])) == [A]
    stats = await other.stats()
    assert (stats.leases_granted, stats.leases_refused) == (1, 3)


async def test_release_deletes_only_our_own_leases(
    redis_url: str, prefix: str, other: RedisCache, raw: Redis
) -> None:
    # Renewed every third of the TTL: 0.1 s between renewals leaves room for a loaded machine.
    short = RedisCache(redis_url, prefix=prefix, lease_ttl_seconds=0.3)
    assert list(await short.lease_many([A])) == [A]
    lease = f"{prefix}:l:market:price:A"
    await asyncio.sleep(0.75)
    assert await raw.exists(lease)  # renewed while held: it outlives its TTL
    await short.aclose()  # a holder that stops renewing (frozen, or dead) ...
    await eventually(lambda: _gone(raw, lease), "our lease to expire")  # ... loses it
    assert list(await other.lease_many([A])) == [A]  # ... and another process takes it
    await short.release_many([A])
    assert await raw.get(f"{prefix}:l:market:price:A") is not None
    assert (await short.stats()).lease_renewals >= 1
    await short.aclose()


async def _gone(raw: Redis, name: str) -> bool:
    return not await raw.exists(name)


async def test_no_lease_for_a_value_that_needs_no_fetch(redis_url: str, prefix: str) -> None:
    now = time.time()
    hourly = RedisCache(redis_url, prefix=prefix, policy_resolver=FixedPolicies(LONG))
    await hourly.set_many([value(A, 1, observed_at=now), value(B, 2, observed_at=now - 3700)])
    # Fresh: waiting for it serves it at once. Past its TTL (in the stale window): leased.
    assert list(await hourly.lease_many([A, B])) == [B]
    await hourly.aclose()
    ahead = FreshnessPolicy(
        ttl_seconds=10.0,
        max_stale_seconds=10.0,
        refresh_mode=RefreshMode.REFRESH_AHEAD,
        refresh_ahead_seconds=5.0,
    )
    refreshing = RedisCache(redis_url, prefix=prefix, policy_resolver=FixedPolicies(ahead))
    await refreshing.set(value(A, 1, observed_at=now - 6))  # due for its refresh-ahead
    assert list(await refreshing.lease_many([A])) == [A]
    await refreshing.aclose()


async def test_a_waiter_is_served_when_the_owner_writes(
    cache: RedisCache, other: RedisCache
) -> None:
    assert set(await cache.lease_many([A, B])) == {A, B}
    waiting = asyncio.create_task(
        other.wait_for_many([A, B], wait_seconds=5.0, now=time.time(), policies=policies(A, B))
    )
    await asyncio.sleep(0.01)
    await cache.set_many_if_newer([value(A, "fetched")])
    arrived = await waiting
    assert list(arrived) == [A]
    assert arrived[A].fresh
    assert arrived[A].value is not None
    assert arrived[A].value.value == "fetched"
    assert (await other.stats()).lease_waits == 1


async def test_a_released_lease_is_taken_over_by_the_waiter(
    cache: RedisCache, other: RedisCache
) -> None:
    assert list(await cache.lease_many([A])) == [A]
    waiting = asyncio.create_task(
        other.wait_for_many([A], wait_seconds=5.0, now=time.time(), policies=policies(A))
    )
    await asyncio.sleep(0.01)
    await cache.release_many([A])  # the owner failed: no value
    assert await waiting == {}
    assert list(await other.lease_many([A])) == [A]  # the waiter holds it now
    assert list(await cache.lease_many([A])) == []
    assert (await other.stats()).lease_takeovers == 1


async def test_a_crashed_owner_s_lease_expires_and_is_taken_over(
    redis_url: str, prefix: str, other: RedisCache
) -> None:
    crashed = RedisCache(redis_url, prefix=prefix, lease_ttl_seconds=0.1)
    assert list(await crashed.lease_many([A])) == [A]
    await crashed.aclose()  # no renewals from now on, as after a crash
    # Only the lease's expiry can end this wait: no message will come.
    assert (
        await other.wait_for_many([A], wait_seconds=5.0, now=time.time(), policies=policies(A))
        == {}
    )
    assert list(await other.lease_many([A])) == [A]


async def test_a_wait_ends_at_wait_seconds(cache: RedisCache, other: RedisCache) -> None:
    assert list(await cache.lease_many([A])) == [A]
    assert (
        await other.wait_for_many([A], wait_seconds=0.05, now=time.time(), policies=policies(A))
        == {}
    )
    assert list(await other.lease_many([A])) == []  # still the owner's


async def test_a_value_already_there_is_served_at_once(
    cache: RedisCache, other: RedisCache
) -> None:
    await cache.set(value(A, 1))
    found = await other.wait_for_many([A], wait_seconds=None, now=time.time(), policies=policies(A))
    assert found[A].fresh


async def test_a_stale_value_does_not_end_a_wait(cache: RedisCache, other: RedisCache) -> None:
    assert list(await cache.lease_many([A])) == [A]
    await cache.set(value(A, 1, observed_at=time.time() - 100))
    policy = FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=1010.0)
    found = await other.wait_for_many(
        [A], wait_seconds=0.05, now=time.time(), policies=policies(A, policy=policy)
    )
    assert found == {}


async def test_without_redis_leases_are_granted_locally_and_waits_end() -> None:
    down = RedisCache(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_seconds=0.2)
    assert set(await down.lease_many([A, B])) == {A, B}
    assert (
        await down.wait_for_many([A], wait_seconds=None, now=time.time(), policies=policies(A))
        == {}
    )
    await down.release_many([A, B])
    stats = await down.stats()
    assert stats.leases_granted_locally == 2
    assert not stats.available
    assert stats.degraded_calls >= 2
    await down.aclose()


async def test_lease_arguments_are_checked(cache: RedisCache) -> None:
    with pytest.raises(TypeError, match="keys"):
        await cache.lease_many("A")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no FreshnessPolicy"):
        await cache.wait_for_many([A], wait_seconds=1.0, now=time.time(), policies={})
    with pytest.raises(ValueError, match="wait_seconds"):
        await cache.wait_for_many([A], wait_seconds=-1.0, now=time.time(), policies=policies(A))
    assert list(await cache.lease_many([])) == []
    assert await cache.wait_for_many([], wait_seconds=1.0, now=time.time(), policies={}) == {}
    assert LONG.ttl_seconds > 0


async def test_a_waiter_sleeps_until_news_or_the_lease_s_expiry(
    cache: RedisCache, redis_url: str, prefix: str, raw: Redis
) -> None:
    holder = RedisCache(redis_url, prefix=prefix)  # default 1.5 s leases, renewed
    assert list(await holder.lease_many([A])) == [A]
    before = (await command_calls(raw)).get("pttl", 0)
    found = await cache.wait_for_many(
        [A], wait_seconds=1.2, now=time.time(), policies=policies(A)
    )  # gives up after 3/4 of it: 0.9 s
    assert found == {}
    looks = ((await command_calls(raw)).get("pttl", 0) - before) // 2  # 2 PTTL per look
    assert 1 <= looks <= 3  # woken by the lease's expiry (renewed), not by a 0.02 s poll
    assert (await cache.stats()).lease_waits_abandoned == 1
    await holder.aclose()


async def test_a_build_never_fails_because_of_a_lease(
    redis_url: str, prefix: str, raw: Redis
) -> None:
    # Another process holds the lease of A, alive (renewing) but never writing: the build
    # waits for 3/4 of its deadline, then fetches A itself.
    holder = RedisCache(redis_url, prefix=prefix)
    assert list(await holder.lease_many([A])) == [A]

    async def fetch(k: ResourceKey, _context: FetchContext) -> str:
        return "fetched here"

    source = CallableSource(name="s", priority=1, supports=lambda _k: True, fetcher=fetch)
    cache = RedisCache(redis_url, prefix=prefix, policy_resolver=FixedPolicies(LONG))
    builder = SnapshotBuilder([source], default_policy=LONG, cache=cache, clock=SystemClock())
    snapshot = await builder.build([A], deadline_seconds=1.0)
    assert snapshot.value(A, str) == "fetched here"
    assert (await cache.stats()).lease_waits_abandoned == 1
    await builder.aclose()
    await cache.aclose()
    await holder.aclose()


async def test_without_pub_sub_a_waiter_falls_back_to_polling_with_a_backoff(
    redis_url: str, prefix: str, raw: Redis, cache: RedisCache
) -> None:
    # A user that may run every command but subscribe to no channel: its event subscription
    # never comes up, so only polling can tell its waiter that the value arrived.
    user = f"u{prefix}"
    await raw.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "+@all", "resetchannels")
    deaf = RedisCache(
        redis_url.replace("redis://", f"redis://{user}:pw@"),
        prefix=prefix,
        poll_interval_seconds=0.05,
        connect_timeout_seconds=0.2,
    )
    assert list(await cache.lease_many([A])) == [A]
    waiting = asyncio.create_task(
        deaf.wait_for_many([A], wait_seconds=10.0, now=time.time(), policies=policies(A))
    )
    await asyncio.sleep(0.5)
    written = time.monotonic()
    await cache.set_many_if_newer([value(A, "fetched")])
    found = await waiting
    assert time.monotonic() - written < 1.2  # the backoff is bounded (1 s at most)
    assert found[A].value is not None
    assert not (await deaf.stats()).subscribed
    await deaf.aclose()
    await raw.execute_command("ACL", "DELUSER", user)
