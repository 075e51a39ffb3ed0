"""Regression tests for two defects of issue 12.

Defect 1: one snapshot mixed revisions. Inside one snapshot every derived value must have been
derived from exactly the dependency revisions the same snapshot shows, and a build reads each
dependency once.

Defect 4: a build counted its own derived dependency as a coalesced request. Only joins of
another build's flight count.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import pytest

from coalestra.adapters import CallableDerivedSource, CallableSource
from coalestra.cache import AsyncMemoryCache
from coalestra.core import (
    CacheLookup,
    FetchContext,
    FreshnessPolicy,
    RefreshMode,
    ResourceKey,
    Snapshot,
)
from coalestra.observability import InMemoryMetrics
from coalestra.orchestration import PolicyResolver, SnapshotBuilder
from coalestra.testing import VirtualClock

K = ResourceKey("acct", "raw", "K")
D = ResourceKey("acct", "double", "K")


def assert_consistent(snapshot: Snapshot) -> None:
    """The defect-1 rule, as a user sees it."""
    for value in snapshot.resources.values():
        for dep, version in value.dependency_versions.items():
            if dep in snapshot.resources:
                assert snapshot[dep].version == version, (value.key, dep)
    if K in snapshot.resources and D in snapshot.resources:
        assert snapshot[D].value == 2 * snapshot[K].value


class ReadHookCache(AsyncMemoryCache):
    """Counts ``get_many`` calls and runs a hook after each (e.g. a publication)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[list[ResourceKey]] = []
        self.after_read: Callable[[], Awaitable[None]] | None = None

    async def get_many(
        self,
        keys: Collection[ResourceKey],
        *,
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> Mapping[ResourceKey, CacheLookup]:
        found = await super().get_many(keys, now=now, policies=policies)
        self.reads.append(list(keys))
        hook, self.after_read = self.after_read, None
        if hook is not None:
            await hook()
        return found


class World:
    """K from a counting source; D = 2 * K from a derived source with an optional delay."""

    def __init__(self, clock: VirtualClock, *, derive_delay: float = 0.0) -> None:
        self.clock = clock
        self.value = 1
        self.derive_delay = derive_delay
        self.fetch_delay = 0.0
        self.derivations = 0

    async def fetch(self, _key: ResourceKey, _c: FetchContext) -> int:
        if self.fetch_delay:
            await asyncio.sleep(self.fetch_delay)
        return self.value

    async def derive(self, _key: ResourceKey, deps: Snapshot, _c: FetchContext) -> int:
        self.derivations += 1
        if self.derive_delay:
            await asyncio.sleep(self.derive_delay)
        return 2 * int(deps.value(K))

    def builder(self, **kwargs: Any) -> SnapshotBuilder:
        raw = CallableSource(name="raw", priority=1, supports=lambda k: k == K, fetcher=self.fetch)
        double = CallableDerivedSource(
            name="double",
            priority=2,
            supports=lambda k: k == D,
            dependencies=lambda _k: [K],
            deriver=self.derive,
        )
        return SnapshotBuilder([double, raw], clock=self.clock, **kwargs)


LONG = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)
SHORT = FreshnessPolicy(ttl_seconds=1.0, max_stale_seconds=10.0)


async def test_a_publication_between_the_read_and_the_derivation_is_not_mixed_in(
    clock: VirtualClock,
) -> None:
    world = World(clock)
    cache = ReadHookCache()
    # K lives long; D is re-derived every build (ttl 0)
    policies = PolicyResolver(
        LONG, overrides={D: FreshnessPolicy(ttl_seconds=0.0, max_stale_seconds=0.0)}
    )
    builder = world.builder(cache=cache, policy_resolver=policies)
    await builder.build([K])

    async def publish() -> None:
        await builder.publisher.publish(K, 50, source="stream")

    cache.after_read = publish  # lands after the build read K, before D is derived
    await asyncio.sleep(1.0)
    snapshot = await builder.build([K, D])

    assert_consistent(snapshot)
    assert snapshot[K].value == 1
    assert snapshot[D].value == 2
    assert (await builder.build([K, D]))[D].value == 100  # the next build sees the publication
    await builder.aclose()


async def test_a_dependency_is_read_once_per_build(clock: VirtualClock) -> None:
    world = World(clock)
    cache = ReadHookCache()
    builder = world.builder(cache=cache, default_policy=LONG)
    await builder.build([K])
    cache.reads.clear()

    await builder.build([K, D])

    assert cache.reads == [[K, D]]  # D's derivation took K from the build's own reading
    await builder.aclose()


async def test_a_joined_derivation_from_another_revision_is_derived_again(
    clock: VirtualClock,
) -> None:
    world = World(clock, derive_delay=1.0)
    builder = world.builder(default_policy=LONG)
    await builder.build([K])

    first = asyncio.ensure_future(builder.build([D]))  # derives from K == 1, slowly
    await asyncio.sleep(0.1)
    await builder.publisher.publish(K, 7, source="stream")
    second = await builder.build([K, D])  # reads K == 7, joins the flight of D

    assert_consistent(second)
    assert second[K].value == 7
    assert second[D].value == 14
    assert (await first)[D].value == 2
    await builder.aclose()


async def test_a_refresh_ahead_of_a_dependency_is_not_mixed_in(clock: VirtualClock) -> None:
    world = World(clock)
    world.fetch_delay = 0.5
    ahead = FreshnessPolicy(
        ttl_seconds=10.0,
        max_stale_seconds=10.0,
        refresh_mode=RefreshMode.REFRESH_AHEAD,
        refresh_ahead_seconds=5.0,
    )
    policies = PolicyResolver(
        ahead, overrides={D: FreshnessPolicy(ttl_seconds=0.0, max_stale_seconds=0.0)}
    )
    builder = world.builder(policy_resolver=policies)
    await builder.build([K])
    world.value = 3
    await asyncio.sleep(6.0)  # K is in its refresh-ahead window

    snapshot = await builder.build([K, D])

    assert_consistent(snapshot)
    assert snapshot[K].metadata["refresh_scheduled"] is True
    await builder.wait_for_refreshes()
    await builder.aclose()


@pytest.mark.parametrize("seed", range(6))
async def test_racing_publications_never_mix_revisions(clock: VirtualClock, seed: int) -> None:
    rng = random.Random(seed)
    world = World(clock, derive_delay=0.05)
    world.fetch_delay = 0.03
    policies = PolicyResolver(
        SHORT,
        overrides={
            D: FreshnessPolicy(
                ttl_seconds=0.2,
                max_stale_seconds=2.0,
                refresh_mode=rng.choice(list(RefreshMode)),
            )
        },
    )
    builder = world.builder(policy_resolver=policies)
    snapshots: list[Snapshot] = []

    async def publisher() -> None:
        for value in range(2, 200):
            await asyncio.sleep(rng.uniform(0.0, 0.08))
            await builder.publisher.publish(K, value, source="stream", force=rng.random() < 0.2)

    async def reader() -> None:
        for _ in range(60):
            await asyncio.sleep(rng.uniform(0.0, 0.1))
            keys = rng.choice([[K, D], [D, K], [D]])
            snapshots.append(await builder.build(keys))

    await asyncio.gather(publisher(), *(reader() for _ in range(4)))

    assert len(snapshots) == 240
    for snapshot in snapshots:
        assert_consistent(snapshot)
    await builder.aclose()


# -- defect 4 --------------------------------------------------------------------------------


async def test_a_build_never_counts_its_own_dependency_as_coalesced(clock: VirtualClock) -> None:
    world = World(clock)
    world.fetch_delay = 0.1
    metrics = InMemoryMetrics()
    builder = world.builder(metrics=metrics)

    snapshot = await builder.build([K, D])

    assert snapshot.diagnostics.coalesced_requests == 0
    assert all("coalesced_request" not in value.metadata for value in snapshot.resources.values())
    assert (
        metrics.counter("singleflight_join_total", resource_namespace="acct", resource_name="raw")
        == 0
    )
    await builder.aclose()


async def test_a_join_of_another_builds_flight_still_counts(clock: VirtualClock) -> None:
    world = World(clock)
    world.fetch_delay = 0.1
    metrics = InMemoryMetrics()
    builder = world.builder(metrics=metrics)

    own, other = await asyncio.gather(builder.build([K, D]), builder.build([K]))

    assert own.diagnostics.coalesced_requests == 0
    assert other.diagnostics.coalesced_requests == 1
    assert other[K].metadata["coalesced_request"] is True
    assert (
        metrics.counter("singleflight_join_total", resource_namespace="acct", resource_name="raw")
        == 1
    )
    await builder.aclose()
