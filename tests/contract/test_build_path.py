"""Contract facts of the build path: B-CACHE-14..19, B-SF-1, B-SRC-6..8.

Every test goes through the public API on virtual time (see ``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import Any

import pytest

from coalestra.adapters import CallableBatchSource, CallableDerivedSource, CallableSource
from coalestra.cache import AsyncMemoryCache, PublishStatus
from coalestra.core import (
    CacheLookup,
    DependencyCycleError,
    FetchContext,
    FreshnessPolicy,
    RefreshMode,
    ResourceKey,
    ResourceResolutionError,
    Snapshot,
    SnapshotValue,
    SourceAuthorityPolicy,
    SourcePayload,
)
from coalestra.observability import InMemoryMetrics
from coalestra.orchestration import PolicyResolver, SnapshotBuilder
from coalestra.resilience import RetryPolicy
from coalestra.testing import VirtualClock

A = ResourceKey("market", "price", "A")
B = ResourceKey("market", "price", "B")
D = ResourceKey("market", "double", "A")
E = ResourceKey("market", "double", "B")
ONCE = RetryPolicy(max_attempts=1)


class Feed:
    """A single-key source whose answers and failures the test controls; counts calls."""

    def __init__(self, clock: VirtualClock, name: str = "rest", delay: float = 0.0) -> None:
        self.clock = clock
        self.name = name
        self.delay = delay
        self.calls: list[ResourceKey] = []
        self.down = False
        self.age = 0.0
        self.counter = 0

    async def fetch(self, key: ResourceKey, _context: FetchContext) -> Any:
        self.calls.append(key)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise ConnectionError(f"{self.name} is down")
        self.counter += 1
        return SourcePayload(
            f"{key.subject}-{self.counter}", observed_at=self.clock.now() - self.age
        )

    def source(self, priority: int = 10, **kwargs: Any) -> CallableSource:
        return CallableSource(
            name=self.name,
            priority=priority,
            supports=lambda key: key.name == "price",
            fetcher=self.fetch,
            **kwargs,
        )


def doubler(*, priority: int = 20, **kwargs: Any) -> CallableDerivedSource:
    """Derives ``market:double:X`` as twice the numeric suffix of ``market:price:X``."""

    def dependencies(key: ResourceKey) -> list[ResourceKey]:
        return [ResourceKey("market", "price", key.subject)]

    def derive(key: ResourceKey, deps: Snapshot, _context: FetchContext) -> Any:
        value = deps.value(ResourceKey("market", "price", key.subject))
        return f"2x{value}"

    return CallableDerivedSource(
        name="doubler",
        priority=priority,
        supports=lambda key: key.name == "double",
        dependencies=dependencies,
        deriver=derive,
        **kwargs,
    )


# -- B-CACHE-14 ------------------------------------------------------------------------------


async def test_b_cache_14_the_default_policy_is_one_second_fresh_ten_seconds_usable(
    clock: VirtualClock,
) -> None:
    feed = Feed(clock)
    builder = SnapshotBuilder([feed.source()], clock=clock, retry_policy=ONCE)
    first = (await builder.build([A]))[A]

    await asyncio.sleep(0.9)  # within the TTL: served from the cache
    assert (await builder.build([A]))[A].version == first.version
    assert len(feed.calls) == 1

    await asyncio.sleep(0.6)  # past the TTL: the sources are asked again
    second = (await builder.build([A]))[A]
    assert len(feed.calls) == 2

    feed.down = True
    await asyncio.sleep(9.5)  # age 9.5 <= 10: usable on error
    fallback = (await builder.build([A]))[A]
    assert fallback.version == second.version
    assert fallback.stale is True

    await asyncio.sleep(1.0)  # age 10.5 > 10: expired
    snapshot = await builder.build([A], strict=False)
    assert A in snapshot.errors
    await builder.aclose()


async def test_b_cache_14_policy_resolver_wins_over_default_policy(clock: VirtualClock) -> None:
    feed = Feed(clock)
    builder = SnapshotBuilder(
        [feed.source()],
        clock=clock,
        default_policy=FreshnessPolicy(ttl_seconds=100.0, max_stale_seconds=100.0),
        policy_resolver=PolicyResolver(FreshnessPolicy(ttl_seconds=0.0, max_stale_seconds=0.0)),
    )
    await builder.build([A])
    await asyncio.sleep(0.5)
    await builder.build([A])

    assert len(feed.calls) == 2  # ttl 0 from the resolver, not 100 from default_policy
    await builder.aclose()


# -- B-CACHE-15 ------------------------------------------------------------------------------


class KeyCache:
    """A single-key cache (get/set/invalidate/clear only) that counts concurrent calls."""

    def __init__(self, *, fail_get_for: ResourceKey | None = None) -> None:
        self.inner = AsyncMemoryCache()
        self.active = 0
        self.peak: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.cancelled = 0
        self.fail_get_for = fail_get_for
        self.delay = 0.01

    async def _track(self, name: str, key: ResourceKey) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        self.active += 1
        self.peak[name] = max(self.peak.get(name, 0), self.active)
        try:
            await asyncio.sleep(self.delay if key != self.fail_get_for else self.delay / 2)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> CacheLookup:
        await self._track("get", key)
        if key == self.fail_get_for:
            raise OSError("cache node lost")
        return await self.inner.get(key, now=now, policy=policy)

    async def set(self, value: SnapshotValue[Any]) -> None:
        await self._track("set", value.key)
        await self.inner.set(value)

    async def invalidate(self, key: ResourceKey) -> None:
        await self.inner.invalidate(key)

    async def clear(self) -> None:
        await self.inner.clear()


def many(count: int) -> list[ResourceKey]:
    return [ResourceKey("market", "price", f"K{i}") for i in range(count)]


async def test_b_cache_15_a_single_key_cache_is_read_with_bounded_per_key_gets(
    clock: VirtualClock,
) -> None:
    cache = KeyCache()
    builder = SnapshotBuilder([Feed(clock).source()], clock=clock, cache=cache, max_pending_tasks=3)

    await builder.build(many(7))

    assert cache.calls["get"] == 7
    assert cache.peak["get"] == 3  # neither sequential nor unbounded
    await builder.aclose()


class CountingCache(AsyncMemoryCache):
    def __init__(self) -> None:
        super().__init__()
        self.get_many_calls = 0

    async def get_many(
        self,
        keys: Collection[ResourceKey],
        *,
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> Mapping[ResourceKey, CacheLookup]:
        self.get_many_calls += 1
        return await super().get_many(keys, now=now, policies=policies)


async def test_b_cache_15_a_build_reads_its_keys_with_one_get_many(clock: VirtualClock) -> None:
    cache = CountingCache()
    builder = SnapshotBuilder([Feed(clock).source()], clock=clock, cache=cache)

    await builder.build(many(20))

    assert cache.get_many_calls == 1
    await builder.aclose()


@pytest.mark.parametrize("mode", [RefreshMode.BLOCKING, RefreshMode.REFRESH_AHEAD])
async def test_b_cache_15_blocking_and_refresh_ahead_never_serve_past_ttl_before_the_sources(
    clock: VirtualClock, mode: RefreshMode
) -> None:
    feed = Feed(clock)
    policy = FreshnessPolicy(ttl_seconds=1.0, max_stale_seconds=10.0, refresh_mode=mode)
    builder = SnapshotBuilder([feed.source()], clock=clock, default_policy=policy)
    first = (await builder.build([A]))[A]
    await asyncio.sleep(2.0)

    second = (await builder.build([A]))[A]

    assert len(feed.calls) == 2
    assert second.version != first.version
    assert second.stale is False
    await builder.aclose()


async def test_b_cache_15_swr_serves_a_usable_value_stale_and_refreshes_it(
    clock: VirtualClock,
) -> None:
    feed = Feed(clock)
    policy = FreshnessPolicy(
        ttl_seconds=1.0,
        max_stale_seconds=10.0,
        refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE,
    )
    builder = SnapshotBuilder([feed.source()], clock=clock, default_policy=policy)
    first = (await builder.build([A]))[A]
    await asyncio.sleep(2.0)

    served = (await builder.build([A]))[A]
    await builder.wait_for_refreshes()
    after = (await builder.build([A]))[A]

    assert served.version == first.version
    assert served.stale is True
    assert len(feed.calls) == 2  # the background refresh
    assert after.version != first.version
    assert after.stale is False
    await builder.aclose()


# -- B-CACHE-16 ------------------------------------------------------------------------------


async def test_b_cache_16_a_usable_candidate_is_served_with_the_fallback_error(
    clock: VirtualClock,
) -> None:
    feed = Feed(clock)
    policy = FreshnessPolicy(ttl_seconds=0.0, max_stale_seconds=60.0)
    builder = SnapshotBuilder(
        [feed.source()], clock=clock, default_policy=policy, retry_policy=ONCE
    )
    first = (await builder.build([A]))[A]
    feed.down = True
    await asyncio.sleep(5.0)

    value = (await builder.build([A]))[A]

    assert value.version == first.version
    assert value.stale is True
    assert value.from_cache is True
    assert value.metadata["fallback_error_type"] == "ResourceResolutionError"
    assert str(A) in value.metadata["fallback_error"]
    assert "rest is down" in value.metadata["fallback_error"]
    await builder.aclose()


async def test_b_cache_16_no_fallback_without_allow_stale_on_error(clock: VirtualClock) -> None:
    feed = Feed(clock)
    policy = FreshnessPolicy(ttl_seconds=0.0, max_stale_seconds=60.0, allow_stale_on_error=False)
    builder = SnapshotBuilder(
        [feed.source()], clock=clock, default_policy=policy, retry_policy=ONCE
    )
    await builder.build([A])
    feed.down = True
    await asyncio.sleep(5.0)

    snapshot = await builder.build([A], strict=False)

    assert isinstance(snapshot.errors[A], ResourceResolutionError)
    await builder.aclose()


async def test_b_cache_16_a_stale_source_payload_is_the_last_resort_and_is_written(
    clock: VirtualClock,
) -> None:
    feed = Feed(clock)
    feed.age = 5.0  # the source's data is 5 s old: past the TTL, within the stale window
    cache = AsyncMemoryCache()
    policy = FreshnessPolicy(ttl_seconds=1.0, max_stale_seconds=10.0)
    builder = SnapshotBuilder(
        [feed.source()], clock=clock, cache=cache, default_policy=policy, retry_policy=ONCE
    )

    value = (await builder.build([A]))[A]

    assert value.stale is True
    assert value.from_cache is False
    held = await cache.get(A, now=clock.now(), policy=policy)
    assert held.value is not None
    assert held.value.version == value.version
    await builder.aclose()


# -- B-CACHE-17 ------------------------------------------------------------------------------


class WriteLog(AsyncMemoryCache):
    """Records every write call (method name, keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, list[ResourceKey]]] = []

    async def set_many_if_newer(self, values: Any, **kwargs: Any) -> Any:
        self.writes.append(("set_many_if_newer", [v.key for v in values]))
        return await super().set_many_if_newer(values, **kwargs)


async def test_b_cache_17_each_priority_level_is_written_in_one_call(
    clock: VirtualClock,
) -> None:
    cache = WriteLog()
    slow = Feed(clock, delay=0.2)
    builder = SnapshotBuilder(
        [slow.source(), doubler()], clock=clock, cache=cache, max_pending_tasks=1
    )

    await builder.build([A, B, *many(3)])

    assert cache.writes == [("set_many_if_newer", [A, B, *many(3)])]
    await builder.aclose()


async def test_b_cache_17_derived_level_is_written_after_its_dependencies(
    clock: VirtualClock,
) -> None:
    cache = WriteLog()
    builder = SnapshotBuilder([Feed(clock).source(), doubler()], clock=clock, cache=cache)

    await builder.build([D, E])

    methods = [(name, set(keys)) for name, keys in cache.writes]
    assert methods == [("set_many_if_newer", {A, B}), ("set_many_if_newer", {D, E})]
    await builder.aclose()


class SetManyCache(KeyCache):
    """Batch-capable without set_many_if_newer: set_many is the write."""

    def __init__(self) -> None:
        super().__init__()
        self.set_many_calls: list[list[ResourceKey]] = []

    async def get_many(self, keys: Any, *, now: float, policies: Any) -> Any:
        return await self.inner.get_many(keys, now=now, policies=policies)

    async def set_many(self, values: Collection[SnapshotValue[Any]]) -> None:
        self.set_many_calls.append([v.key for v in values])
        await self.inner.set_many(values)

    async def invalidate_many(self, keys: Any) -> None:
        await self.inner.invalidate_many(keys)


class SetIfNewerCache(KeyCache):
    """Atomic single-key: set_if_newer is the write."""

    async def set_if_newer(self, value: SnapshotValue[Any], **kwargs: Any) -> Any:
        await self._track("set_if_newer", value.key)
        return await self.inner.set_if_newer(value, **kwargs)


async def test_b_cache_17_set_many_then_bounded_set_if_newer_then_bounded_set(
    clock: VirtualClock,
) -> None:
    batch = SetManyCache()
    builder = SnapshotBuilder([Feed(clock).source()], clock=clock, cache=batch)
    await builder.build(many(5))
    assert batch.set_many_calls == [many(5)]
    assert "set" not in batch.calls
    await builder.aclose()

    atomic = SetIfNewerCache()
    builder = SnapshotBuilder(
        [Feed(clock).source()], clock=clock, cache=atomic, max_pending_tasks=3
    )
    await builder.build(many(7))
    assert atomic.calls["set_if_newer"] == 7
    assert atomic.peak["set_if_newer"] == 3
    assert "set" not in atomic.calls
    await builder.aclose()

    plain = KeyCache()
    builder = SnapshotBuilder([Feed(clock).source()], clock=clock, cache=plain, max_pending_tasks=4)
    await builder.build(many(9))
    assert plain.calls["set"] == 9
    assert plain.peak["set"] == 4
    await builder.aclose()


async def test_b_cache_17_a_background_refresh_does_not_write_a_stale_payload(
    clock: VirtualClock,
) -> None:
    feed = Feed(clock)
    cache = AsyncMemoryCache()
    policy = FreshnessPolicy(
        ttl_seconds=1.0, max_stale_seconds=10.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
    )
    builder = SnapshotBuilder(
        [feed.source()], clock=clock, cache=cache, default_policy=policy, retry_policy=ONCE
    )
    first = (await builder.build([A]))[A]
    await asyncio.sleep(2.0)
    feed.age = 1.5  # the refresh gets stale data, newer than the cached revision

    await builder.build([A])
    await builder.wait_for_refreshes()

    held = await cache.get(A, now=clock.now(), policy=policy)
    assert held.value is not None
    assert held.value.version == first.version
    await builder.aclose()


# -- B-CACHE-18 ------------------------------------------------------------------------------


async def test_b_cache_18_a_higher_authority_winner_is_served_as_superseding_the_fetch(
    clock: VirtualClock,
) -> None:
    feed = Feed(clock, delay=1.0)
    builder = SnapshotBuilder(
        [feed.source()],
        clock=clock,
        authority_policy=SourceAuthorityPolicy(source_ranks={"admin": 5}),
        default_policy=FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=10.0),
    )
    build = asyncio.ensure_future(builder.build([A]))
    await asyncio.sleep(0.5)
    published = await builder.publisher.publish(A, "from-admin", source="admin")
    assert published.status is PublishStatus.PUBLISHED

    value = (await build)[A]

    assert value.value == "from-admin"
    assert value.from_cache is True
    assert value.stale is False
    assert value.metadata["superseded_source"] == "rest"
    await builder.aclose()


async def test_b_cache_18_a_newer_publication_during_a_fetch_is_served_next_time(
    clock: VirtualClock,
) -> None:
    feed = Feed(clock, delay=1.0)
    feed.age = 1.0  # the fetch returns data observed when it started
    builder = SnapshotBuilder(
        [feed.source()],
        clock=clock,
        default_policy=FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=10.0),
    )
    build = asyncio.ensure_future(builder.build([A]))
    await asyncio.sleep(0.5)
    await builder.publisher.publish(A, "published", source="stream")

    fetched = (await build)[A]
    later = (await builder.build([A]))[A]

    assert fetched.value == "A-1"
    assert fetched.from_cache is False
    assert later.value == "published"
    await builder.aclose()


# -- B-CACHE-19 ------------------------------------------------------------------------------


async def test_b_cache_19_a_failing_get_propagates_and_cancels_the_calls_in_flight(
    clock: VirtualClock,
) -> None:
    keys = many(8)
    cache = KeyCache(fail_get_for=keys[1])
    feed = Feed(clock)
    builder = SnapshotBuilder([feed.source()], clock=clock, cache=cache, max_pending_tasks=4)

    with pytest.raises(OSError, match="cache node lost"):
        await builder.build(keys)

    assert cache.calls["get"] == 4  # no new call once one failed
    assert cache.cancelled == 3
    assert feed.calls == []
    await builder.aclose()


class FailingWrites(AsyncMemoryCache):
    async def set_many_if_newer(self, values: Any, **kwargs: Any) -> Any:
        raise RuntimeError("cache is read-only")


async def test_b_cache_19_a_failing_write_propagates_out_of_build_and_resolve(
    clock: VirtualClock,
) -> None:
    builder = SnapshotBuilder([Feed(clock).source()], clock=clock, cache=FailingWrites())

    with pytest.raises(RuntimeError, match="cache is read-only"):
        await builder.build([A])
    session = builder.session()
    with pytest.raises(RuntimeError, match="cache is read-only"):
        await session.resolve([B])
    await builder.aclose()


class FailingReads(AsyncMemoryCache):
    async def get_many(self, keys: Any, **kwargs: Any) -> Any:
        raise ConnectionError("redis went away")


async def test_b_cache_19_a_failing_read_propagates_unwrapped(clock: VirtualClock) -> None:
    builder = SnapshotBuilder([Feed(clock).source()], clock=clock, cache=FailingReads())

    with pytest.raises(ConnectionError, match="redis went away"):
        await builder.build([A])
    await builder.aclose()


# -- B-SF-1 ----------------------------------------------------------------------------------


async def test_b_sf_1_a_joiner_gets_coalesced_request_and_is_counted(clock: VirtualClock) -> None:
    calls: list[list[ResourceKey]] = []

    async def fetch_many(keys: Collection[ResourceKey], _c: FetchContext) -> Any:
        calls.append(list(keys))
        await asyncio.sleep(0.1)
        return {key: key.subject for key in keys}

    source = CallableBatchSource(
        name="batch", priority=1, supports=lambda _k: True, fetcher=fetch_many
    )
    metrics = InMemoryMetrics()
    builder = SnapshotBuilder([source], clock=clock, metrics=metrics)
    keys = [A, B]

    owner, joiner = await asyncio.gather(builder.build(keys), builder.build(keys))

    assert len(calls) == 1
    assert all("coalesced_request" not in owner[key].metadata for key in keys)
    assert all(joiner[key].metadata["coalesced_request"] is True for key in keys)
    assert owner.diagnostics.coalesced_requests == 0
    assert joiner.diagnostics.coalesced_requests == 2
    labels = {"resource_namespace": "market", "resource_name": "price"}
    assert metrics.counter("singleflight_join_total", **labels) == 2
    await builder.aclose()


async def test_b_sf_1_cancelling_a_caller_never_cancels_the_shared_work(
    clock: VirtualClock,
) -> None:
    feed = Feed(clock, delay=1.0)
    builder = SnapshotBuilder([feed.source()], clock=clock)
    owner = asyncio.ensure_future(builder.build([A]))
    joiner = asyncio.ensure_future(builder.build([A]))
    await asyncio.sleep(0.1)

    owner.cancel()
    snapshot = await joiner

    assert snapshot[A].value == "A-1"
    assert len(feed.calls) == 1
    assert (await builder.health_snapshot()).singleflight_in_flight == 0
    await builder.aclose()


# -- B-SRC-6 ---------------------------------------------------------------------------------


async def test_b_src_6_a_plain_derived_value_is_stamped_with_the_derivation_time(
    clock: VirtualClock,
) -> None:
    feed = Feed(clock)
    feed.age = 30.0
    policy = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)
    builder = SnapshotBuilder([doubler(), feed.source()], clock=clock, default_policy=policy)

    snapshot = await builder.build([A, D])

    derived = snapshot[D]
    assert snapshot[A].observed_at == clock.now() - 30.0
    assert derived.observed_at == clock.now()
    assert derived.fetched_at == derived.observed_at
    assert derived.age_seconds == 0.0
    await builder.aclose()


async def test_b_src_6_an_explicit_observed_at_is_kept(clock: VirtualClock) -> None:
    stamp = clock.now() - 3.0
    source = CallableDerivedSource(
        name="d",
        priority=5,
        supports=lambda key: key.name == "double",
        dependencies=lambda key: [A],
        deriver=lambda key, deps, ctx: SourcePayload(1, observed_at=stamp),
    )
    policy = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)
    builder = SnapshotBuilder([source, Feed(clock).source()], clock=clock, default_policy=policy)

    assert (await builder.build([D]))[D].observed_at == stamp
    await builder.aclose()


async def test_b_src_6_opt_in_stamps_the_oldest_dependency_time(clock: VirtualClock) -> None:
    feed = Feed(clock)
    feed.age = 30.0
    policy = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)
    builder = SnapshotBuilder(
        [doubler(observed_at_from_dependencies=True), feed.source()],
        clock=clock,
        default_policy=policy,
    )

    snapshot = await builder.build([A, D])

    assert snapshot[D].observed_at == snapshot[A].observed_at == clock.now() - 30.0
    await builder.aclose()


# -- B-SRC-7 ---------------------------------------------------------------------------------


async def test_b_src_7_dependency_failure_texts_appear_in_the_derived_error(
    clock: VirtualClock,
) -> None:
    async def broken(_key: ResourceKey, _c: FetchContext) -> Any:
        raise ConnectionError("no info")

    raw = CallableSource(
        name="raw", priority=1, supports=lambda k: k.name == "price", fetcher=broken
    )
    builder = SnapshotBuilder([doubler(), raw], clock=clock, retry_policy=ONCE)

    snapshot = await builder.build([D], strict=False)

    error = snapshot.errors[D]
    assert isinstance(error, ResourceResolutionError)
    failure = error.failures[0]
    assert failure.source == "doubler"
    assert failure.error_type == "DependencyResolutionError"
    assert failure.attempts == 0
    assert failure.message.startswith(
        f"Unable to derive {D} with source doubler; dependency failures: "
        f"{A}=ResourceResolutionError("
    )
    assert "no info" in failure.message
    await builder.aclose()


# -- B-SRC-8 ---------------------------------------------------------------------------------


def cyclic(graph: dict[ResourceKey, tuple[ResourceKey, ...]]) -> CallableDerivedSource:
    return CallableDerivedSource(
        name="cyclic",
        priority=1,
        supports=lambda key: key in graph,
        dependencies=lambda key: graph[key],
        deriver=lambda key, deps, ctx: "never",
    )


CA = ResourceKey("graph", "node", "A")
CB = ResourceKey("graph", "node", "B")
CC = ResourceKey("graph", "node", "C")


async def test_b_src_8_a_cycle_fails_the_requested_key_with_a_dependency_error(
    clock: VirtualClock,
) -> None:
    builder = SnapshotBuilder([cyclic({CA: (CB,), CB: (CA,)})], clock=clock)

    snapshot = await asyncio.wait_for(builder.build([CA], strict=False), timeout=5.0)

    failure = snapshot.errors[CA].failures[0]  # type: ignore[attr-defined]
    assert failure.error_type == "DependencyResolutionError"
    assert "DependencyCycleError" in failure.message
    assert f"Derived resource dependency cycle detected: {CA} -> {CB} -> {CA}" in failure.message
    await builder.aclose()


async def test_b_src_8_the_key_that_closes_the_loop_records_the_cycle(
    clock: VirtualClock,
) -> None:
    builder = SnapshotBuilder([cyclic({CA: (CB,), CB: (CC,), CC: (CA,)})], clock=clock)

    snapshot = await asyncio.wait_for(builder.build([CA, CB, CC], strict=False), timeout=5.0)

    kinds = [snapshot.errors[k].failures[0].error_type for k in (CA, CB, CC)]  # type: ignore[attr-defined]
    # exactly one key closed the loop; the others failed on it as a dependency
    assert sorted(kinds) == ["DependencyCycleError", *["DependencyResolutionError"] * 2]
    for key in (CA, CB, CC):
        failure = snapshot.errors[key].failures[0]  # type: ignore[attr-defined]
        assert "DependencyCycleError" in f"{failure.error_type}({failure.message})"
        assert f"{CA} -> {CB} -> {CC} -> {CA}" in failure.message
    await builder.aclose()


def test_b_src_8_the_cycle_error_shows_its_path() -> None:
    error = DependencyCycleError((CA, CB, CA))

    assert error.path == (CA, CB, CA)
    assert str(error) == f"Derived resource dependency cycle detected: {CA} -> {CB} -> {CA}"


async def test_b_src_8_a_self_dependency_is_a_cycle_of_one(clock: VirtualClock) -> None:
    builder = SnapshotBuilder([cyclic({CA: (CA,)})], clock=clock)

    snapshot = await asyncio.wait_for(builder.build([CA], strict=False), timeout=5.0)

    failure = snapshot.errors[CA].failures[0]  # type: ignore[attr-defined]
    assert failure.error_type == "DependencyCycleError"
    assert failure.message == f"Derived resource dependency cycle detected: {CA} -> {CA}"
    await builder.aclose()


async def test_b_cache_17_a_forced_revalidation_does_not_write_a_stale_payload(
    clock: VirtualClock,
) -> None:
    feed = Feed(clock)
    cache = AsyncMemoryCache()
    policy = FreshnessPolicy(ttl_seconds=1.0, max_stale_seconds=10.0)
    builder = SnapshotBuilder(
        [feed.source()], clock=clock, cache=cache, default_policy=policy, retry_policy=ONCE
    )
    session = builder.session()
    first = (await session.resolve([A]))[A]
    await asyncio.sleep(8.0)
    feed.age = 5.0  # the source answers with data past the TTL, newer than the cached one

    await session.revalidate([A], force_refresh=True, strict=False)

    held = await cache.get(A, now=clock.now(), policy=policy)
    assert held.value is not None
    assert held.value.version == first.version
    await builder.aclose()
