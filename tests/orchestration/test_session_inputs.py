"""A session remembers the revisions its derived values were computed from.

A key first read only as a dependency of a derived value is shown, when a later stage asks for
it, as the revision that derived value was computed from: one session snapshot never shows a
derived value beside another revision of its input (issue 12, defect 1, for sessions).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coalestra import (
    CallableDerivedSource,
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    RetryPolicy,
    Snapshot,
    SnapshotBuilder,
    SourceUnavailableError,
)
from coalestra.orchestration import PolicyResolver
from coalestra.testing import VirtualClock, VirtualTimeRunner

RAW = ResourceKey("t", "raw", "k")
DOUBLE = ResourceKey("t", "double", "k")
TRIPLE = ResourceKey("t", "triple", "k")
QUAD = ResourceKey("t", "quad", "k")  # twice DOUBLE: derived from a derived value
POLICY = FreshnessPolicy(ttl_seconds=600.0, max_stale_seconds=600.0)


def multiple(key: ResourceKey, of: ResourceKey, factor: int) -> CallableDerivedSource:
    """``key`` is ``factor`` times ``of``."""
    return CallableDerivedSource(
        name=key.name,
        priority=5,
        supports=lambda wanted: wanted == key,
        dependencies=lambda wanted: [of],
        deriver=lambda wanted, deps, context: factor * deps.value(of),
    )


class Upstream:
    """``RAW`` from a counting single-key source; ``DOUBLE`` and ``TRIPLE`` are twice and
    three times ``RAW``."""

    def __init__(self) -> None:
        self.value = 1
        self.calls = 0
        self.gate: asyncio.Event | None = None  # set: fetches wait for it
        self.failing = False
        self.delay = 0.0

    async def fetch(self, key: ResourceKey, context: FetchContext) -> int:
        self.calls += 1
        value = self.value
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failing:
            raise SourceUnavailableError("raw is down")
        return value

    def sources(self) -> list[Any]:
        return [
            CallableSource(
                name="raw", priority=10, supports=lambda key: key == RAW, fetcher=self.fetch
            ),
            multiple(DOUBLE, RAW, 2),
            multiple(TRIPLE, RAW, 3),
            multiple(QUAD, DOUBLE, 2),
        ]


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
async def builder(upstream: Upstream) -> AsyncIterator[SnapshotBuilder]:
    async with SnapshotBuilder(upstream.sources(), default_policy=POLICY) as built:
        yield built


TIMES = {RAW: 1, DOUBLE: 2, TRIPLE: 3, QUAD: 4}


def consistent(snapshot: Snapshot) -> bool:
    """Every value the snapshot shows is a multiple of one and the same ``RAW`` revision."""
    raws = {
        snapshot.value(key) / times for key, times in TIMES.items() if key in snapshot.resources
    }
    return len(raws) <= 1


async def test_a_dependency_asked_for_later_shows_the_revision_the_derived_value_used(
    builder: SnapshotBuilder, upstream: Upstream
) -> None:
    session = builder.session()
    first = await session.resolve([DOUBLE])
    assert tuple(first) == (DOUBLE,)
    assert first.value(DOUBLE) == 2
    await builder.publisher.publish(RAW, 5, source="raw")

    second = await session.resolve([RAW])

    assert second.value(RAW) == 1
    assert consistent(second)
    assert upstream.calls == 1  # read once, by the first stage
    assert (await builder.build([RAW])).value(RAW) == 5  # builds see the publication


async def test_a_revalidated_derived_value_brings_its_new_input_along(
    builder: SnapshotBuilder, upstream: Upstream
) -> None:
    session = builder.session()
    await session.resolve([DOUBLE])
    await builder.publisher.publish(RAW, 5, source="raw")

    revalidated = await session.revalidate([DOUBLE])
    assert tuple(revalidated) == (DOUBLE,)
    assert revalidated.value(DOUBLE) == 10

    later = await session.resolve([RAW])
    assert later.value(RAW) == 5
    assert consistent(later)


async def test_revalidating_an_internal_dependency_updates_what_a_later_stage_shows(
    builder: SnapshotBuilder, upstream: Upstream
) -> None:
    session = builder.session()
    await session.resolve([DOUBLE])
    upstream.value = 7

    revalidated = await session.revalidate([RAW], force_refresh=True)
    assert tuple(revalidated) == (DOUBLE,)
    assert revalidated.value(DOUBLE) == 14

    later = await session.resolve([RAW])
    assert later.value(RAW) == 7
    assert consistent(later)


async def test_a_later_derived_value_uses_the_remembered_input(
    builder: SnapshotBuilder, upstream: Upstream
) -> None:
    session = builder.session()
    await session.resolve([DOUBLE])
    await builder.publisher.publish(RAW, 5, source="raw")

    snapshot = await session.resolve([RAW, DOUBLE])

    assert consistent(snapshot)
    assert snapshot.value(RAW) == 1


# -- a derived value the stage served from the cache ------------------------------------------


async def test_a_cached_derived_value_pins_the_input_revision_it_was_computed_from(
    builder: SnapshotBuilder, upstream: Upstream
) -> None:
    await builder.build([DOUBLE])  # the cache now holds DOUBLE (from RAW = 1) and RAW
    session = builder.session()
    first = await session.resolve([DOUBLE])
    assert first[DOUBLE].from_cache
    await builder.publisher.publish(RAW, 5, source="raw")

    second = await session.resolve([RAW])

    assert second.value(RAW) == 1
    assert consistent(second)
    assert upstream.calls == 1
    assert (await builder.build([RAW])).value(RAW) == 5


async def test_a_remembered_input_is_not_a_requested_or_served_key(
    builder: SnapshotBuilder,
) -> None:
    await builder.build([DOUBLE])
    session = builder.session()

    first = await session.resolve([DOUBLE])

    assert tuple(first) == (DOUBLE,)
    assert first.diagnostics.requested_resources == 1
    assert first.diagnostics.resolved_resources == 1
    assert first.diagnostics.cache_hits == 1
    assert first.diagnostics.cache_misses == 0


async def test_a_later_cached_derived_value_is_rederived_from_the_session_input(
    builder: SnapshotBuilder, upstream: Upstream
) -> None:
    session = builder.session()
    await session.resolve([DOUBLE])  # derives DOUBLE from RAW = 1 and remembers RAW = 1
    await builder.publisher.publish(RAW, 5, source="raw")
    assert (await builder.build([TRIPLE])).value(TRIPLE) == 15  # the cache: TRIPLE from 5

    other = await session.resolve([TRIPLE, RAW])

    assert other.value(RAW) == 1
    assert other.value(TRIPLE) == 3
    assert consistent(other)


async def test_a_derived_value_from_another_builds_flight_pins_its_input(
    builder: SnapshotBuilder, upstream: Upstream
) -> None:
    upstream.gate = asyncio.Event()
    build = asyncio.ensure_future(builder.build([DOUBLE]))
    await asyncio.sleep(0.01)  # the build owns the flights of DOUBLE and RAW
    session = builder.session()
    stage = asyncio.ensure_future(session.resolve([DOUBLE]))
    await asyncio.sleep(0.01)
    upstream.gate.set()
    await build
    first = await stage
    assert first[DOUBLE].metadata.get("coalesced_request") is True
    assert tuple(first) == (DOUBLE,)
    await builder.publisher.publish(RAW, 5, source="raw")

    second = await session.resolve([RAW])

    assert second.value(RAW) == 1
    assert consistent(second)
    assert upstream.calls == 1


# Per-key windows: RAW expires quickly, DOUBLE is long-lived, QUAD in between.
SHORT = FreshnessPolicy(ttl_seconds=1.0, max_stale_seconds=1000.0, allow_stale_on_error=False)
LONG = FreshnessPolicy(ttl_seconds=1000.0, max_stale_seconds=1000.0)
MEDIUM = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=1000.0)


@pytest.fixture
async def windows(upstream: Upstream, clock: VirtualClock) -> AsyncIterator[SnapshotBuilder]:
    resolver = PolicyResolver(LONG, overrides={RAW: SHORT, QUAD: MEDIUM, TRIPLE: MEDIUM})
    async with SnapshotBuilder(
        upstream.sources(),
        policy_resolver=resolver,
        clock=clock,
        retry_policy=RetryPolicy(max_attempts=1),
    ) as built:
        yield built


async def test_a_stale_fallback_pins_the_input_it_was_computed_from(
    windows: SnapshotBuilder, upstream: Upstream
) -> None:
    await windows.build([TRIPLE])  # TRIPLE = 3 from RAW = 1
    await asyncio.sleep(10.0)  # both stale; RAW may not be served stale on error
    upstream.failing = True
    session = windows.session()
    first = await session.resolve([TRIPLE])
    assert first.value(TRIPLE) == 3
    assert first[TRIPLE].stale  # the stale fallback
    upstream.failing, upstream.value = False, 7

    second = await session.resolve([RAW])

    assert second.value(RAW) == 1
    assert consistent(second)


async def test_a_derived_input_computed_from_another_revision_is_derived_again(
    windows: SnapshotBuilder, upstream: Upstream
) -> None:
    await windows.build([QUAD])  # RAW = 1, DOUBLE = 2, QUAD = 4 in the cache
    await asyncio.sleep(10.0)  # RAW and QUAD expired; DOUBLE still fresh
    upstream.value = 7
    session = windows.session()

    first = await session.resolve([RAW, QUAD])  # QUAD's derivation reads the cached DOUBLE

    assert first.value(RAW) == 7
    assert first.value(QUAD) == 28  # derived again, with DOUBLE derived again from RAW = 7
    later = await session.resolve([DOUBLE])
    assert later.value(DOUBLE) == 14
    assert consistent(later)
    # a plain build does not check what it does not show: QUAD from the cached DOUBLE
    assert (await windows.build([DOUBLE])).value(DOUBLE) in (2, 14)


# -- any interleaving ---------------------------------------------------------------------------

SESSION_KEYS = st.lists(st.sampled_from(list(TIMES)), min_size=1, max_size=3, unique=True)
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(2, 9)),
        st.tuples(st.just("upstream"), st.integers(2, 9)),
        st.tuples(st.just("build"), SESSION_KEYS),
        st.tuples(st.just("invalidate"), st.sampled_from(list(TIMES))),
        st.tuples(st.just("sleep"), st.sampled_from([0.5, 2.0, 8.0])),
        st.tuples(st.just("stage"), SESSION_KEYS),
        st.tuples(st.just("race"), SESSION_KEYS),
        st.tuples(st.just("revalidate"), SESSION_KEYS),
    ),
    min_size=1,
    max_size=14,
)


async def _interleave(operations: list[tuple[str, Any]]) -> None:
    upstream = Upstream()
    upstream.delay = 0.2  # flights overlap with whatever runs meanwhile
    clock = VirtualClock()
    resolver = PolicyResolver(LONG, overrides={RAW: SHORT, QUAD: MEDIUM, TRIPLE: MEDIUM})
    async with SnapshotBuilder(
        upstream.sources(), policy_resolver=resolver, clock=clock
    ) as builder:
        session = builder.session()
        pinned: dict[ResourceKey, str] = {}

        def check(snapshot: Snapshot) -> None:
            assert consistent(snapshot), {key: snapshot.value(key) for key in snapshot.resources}
            for key, version in pinned.items():
                assert snapshot[key].version == version, f"{key} changed between stages"
            pinned.update((key, value.version) for key, value in snapshot.resources.items())

        for operation, argument in operations:
            if operation == "publish":
                await builder.publisher.publish(RAW, argument, source="raw")
            elif operation == "upstream":
                upstream.value = argument
            elif operation == "build":
                await builder.build(argument)
            elif operation == "invalidate":
                await builder.publisher.invalidate(argument)
            elif operation == "sleep":
                await asyncio.sleep(argument)
            elif operation == "stage":
                check(await session.resolve(argument))
            elif operation == "race":  # a stage racing a build and a publication
                build = asyncio.ensure_future(builder.build(argument))
                stage = asyncio.ensure_future(session.resolve(argument))
                await asyncio.sleep(0.1)
                await builder.publisher.publish(RAW, upstream.value + 10, source="raw")
                await build
                check(await stage)
            else:
                try:
                    revalidated = await session.revalidate(argument, strict=False)
                except ValueError:  # a key the session never resolved
                    continue
                pinned.clear()
                check(revalidated)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPERATIONS)
def test_no_session_snapshot_ever_mixes_revisions(operations: list[tuple[str, Any]]) -> None:
    runner = VirtualTimeRunner()
    try:
        runner.run(_interleave(operations))
    finally:
        runner.close()


async def test_an_input_of_nothing_the_session_shows_is_not_remembered(
    upstream: Upstream,
) -> None:
    other = ResourceKey("t", "other", "k")

    def derive(key: ResourceKey, deps: Any, context: FetchContext) -> int:
        raise ValueError("cannot derive")

    sources = [
        *upstream.sources(),
        CallableDerivedSource(
            name="failing",
            priority=5,
            supports=lambda key: key == other,
            dependencies=lambda key: [DOUBLE],
            deriver=derive,
        ),
        CallableSource(
            name="fallback", priority=1, supports=lambda key: key == other, fetcher=lambda k, c: 0
        ),
    ]
    async with SnapshotBuilder(sources, default_policy=POLICY) as builder:
        await builder.build([DOUBLE])
        session = builder.session()
        first = await session.resolve([other])  # read DOUBLE, then served by the fallback
        assert first[other].source == "fallback"
        await builder.publisher.publish(RAW, 5, source="raw")

        second = await session.resolve([DOUBLE, RAW])

        assert second.value(RAW) == 5
        assert consistent(second)


async def test_a_warm_stage_keeps_cached_inputs_without_asking_dependencies(
    upstream: Upstream,
) -> None:
    # A stage serving cached derived values takes their inputs from the recorded
    # dependency_versions (issue 12's cost): no dependencies() call per key, no fetch.
    asked: list[ResourceKey] = []

    def counted(key: ResourceKey, of: ResourceKey, factor: int) -> CallableDerivedSource:
        def dependencies(wanted: ResourceKey) -> list[ResourceKey]:
            asked.append(wanted)
            return [of]

        return CallableDerivedSource(
            name=key.name,
            priority=5,
            supports=lambda wanted: wanted == key,
            dependencies=dependencies,
            deriver=lambda wanted, deps, context: factor * deps.value(of),
        )

    sources = [upstream.sources()[0], counted(DOUBLE, RAW, 2), counted(QUAD, DOUBLE, 2)]
    async with SnapshotBuilder(sources, default_policy=POLICY) as built:
        await built.build([QUAD])  # caches RAW = 1, DOUBLE = 2, QUAD = 4
        asked.clear()
        session = built.session()
        first = await session.resolve([QUAD])
        await built.publisher.publish(RAW, 5, source="raw")
        later = await session.resolve([RAW, DOUBLE])

    assert asked == []
    assert upstream.calls == 1
    assert first.value(QUAD) == 4
    assert (later.value(RAW), later.value(DOUBLE), later.value(QUAD)) == (1, 2, 4)
