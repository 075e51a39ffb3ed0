"""ResourcePublisher into the default AsyncMemoryCache: ``publish`` (a direct write of one
publication) and ``publish_many`` of one update (commonest revisions built in one step) give
exactly what the general path gives -- results, cache contents, statistics, metrics, events,
clock reads, policy lookups and copier calls -- for every kind of payload, one update or a batch.
The general path is taken with an authority resolver that ranks every source 0 (so it changes
nothing else) and a subclass of the cache, which the publisher writes through its public
``set_many_if_newer``."""

from __future__ import annotations

import copy
import math
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.doubles import RecordingSink

from coalestra.cache import (
    AsyncMemoryCache,
    PublishResult,
    PublishStatus,
    ResourcePublisher,
    ResourceUpdate,
)
from coalestra.core import FreshnessPolicy, ResourceKey, SnapshotValue, SourceAuthorityPolicy
from coalestra.testing import VirtualTimeRunner

KEYS = [ResourceKey("market", "price", name) for name in ("BTC", "ETH", "SOL")]
FOREVER = FreshnessPolicy(ttl_seconds=1e9, max_stale_seconds=1e9)
START = 1_700_000_000.0


class StepClock:
    """A wall clock the test moves; counts its reads."""

    def __init__(self) -> None:
        self.time: Any = START
        self.reads = 0

    def now(self) -> float:
        self.reads += 1
        return self.time  # type: ignore[no-any-return]

    def monotonic(self) -> float:
        return 0.0


class Policies:
    def __init__(self, ttl: float = 1e9) -> None:
        self.policy = FreshnessPolicy(ttl_seconds=ttl, max_stale_seconds=max(ttl, 1e9))
        self.calls = 0

    def resolve(self, key: ResourceKey) -> FreshnessPolicy:
        self.calls += 1
        return self.policy


class CountingCopier:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, value: Any) -> Any:
        self.calls += 1
        return copy.deepcopy(value)


class RankZero:
    """Authority rules under which every source ranks the same (as without rules)."""

    def resolve(self, key: ResourceKey) -> SourceAuthorityPolicy:
        return SourceAuthorityPolicy()

    def rank_for(self, key: ResourceKey, source: str) -> int:
        return 0


class PublicMemoryCache(AsyncMemoryCache):  # type: ignore[misc]  # final to users
    """The memory cache, written by a publisher through its public methods only."""


class Side:
    """One publisher on its own cache, clock, sinks and copier."""

    def __init__(self, options: dict[str, Any], *, general: bool = False) -> None:
        self.clock = StepClock()
        self.sink = RecordingSink()
        self.policies = Policies(options.pop("ttl", 1e9))
        self.copier = CountingCopier() if options.pop("custom_copier", False) else None
        kind = PublicMemoryCache if general else AsyncMemoryCache
        self.cache = kind(payload_copier=self.copier, **options)
        self.publisher = ResourcePublisher(
            cache=self.cache,
            clock=self.clock,
            policy_resolver=self.policies,
            metrics=self.sink,
            events=self.sink,
            authority_resolver=RankZero() if general else None,
        )


def payloads() -> st.SearchStrategy[Any]:
    atoms = st.one_of(st.integers(-5, 5), st.floats(-1, 1), st.text(max_size=3), st.none())
    return st.one_of(
        atoms,
        st.dictionaries(st.text(max_size=3), atoms, max_size=4),  # flat
        st.lists(atoms, max_size=4),  # flat
        st.dictionaries(st.text(max_size=2), st.lists(atoms, max_size=2), max_size=3),  # nested
        st.tuples(atoms, atoms),
        st.builds(lambda n: {f"k{i}": i for i in range(n)}, st.sampled_from([300])),  # large
    )


operations = st.lists(
    st.tuples(
        st.sampled_from(range(len(KEYS))),
        payloads(),
        st.sampled_from([None, -2.0, 0.0, 3.0]),  # observed_at relative to now, or None
        st.sampled_from([None, {}, {"seq": 1}, {"rows": [1, 2]}]),
        st.booleans(),  # force
        st.booleans(),  # replace_equal
        st.sampled_from([0.0, 0.0, 1.0]),  # how far the clock moves first
        st.sampled_from(["publish", "fetched", "publish"]),
    ),
    min_size=1,
    max_size=12,
)
settings_options = st.sampled_from(
    [
        {},
        {"custom_copier": True},
        {"run_payload_copies_in_thread": False},
        {"max_entries": 2},
        {"ttl": 0.5},
    ]
)


def described(value: SnapshotValue[Any] | None) -> Any:
    """Every field but the opaque version."""
    if value is None:
        return None
    return tuple((f.name, getattr(value, f.name)) for f in fields(value) if f.name != "version")


def outcome(result: PublishResult) -> Any:
    return result.status, described(result.value), described(result.previous)


async def apply(side: Side, operation: tuple[Any, ...], direct: bool) -> Any:
    index, payload, offset, metadata, force, replace_equal, step, kind = operation
    if step:
        side.clock.time += step
    key = KEYS[index]
    observed_at = None if offset is None else side.clock.time + offset
    if kind == "fetched":  # a build's revision (attempts > 0), written through the cache
        value = SnapshotValue(
            key, payload, "feed", side.clock.time, side.clock.time, 0.0, False, False, 1.0
        )
        return (await side.cache.set_if_newer(value)).status
    given = copy.deepcopy(payload)
    try:
        result = await publish(
            side, key, given, observed_at, metadata, force, replace_equal, direct
        )
    except Exception as error:  # both sides must fail alike
        return type(error), str(error)
    seen = outcome(result)
    published = copy.deepcopy(result.value.value)
    for mutable in (given, result.value.value):  # the cache shares neither
        if isinstance(mutable, (dict, list)):
            mutable.clear()
    lookup = await side.cache.get(key, now=side.clock.time, policy=FOREVER)
    if result.status is PublishStatus.PUBLISHED and lookup.value is not None:
        assert lookup.value.value == published
    return seen


async def publish(
    side: Side,
    key: ResourceKey,
    given: Any,
    observed_at: float | None,
    metadata: dict[str, Any] | None,
    force: bool,
    replace_equal: bool,
    direct: bool,
) -> PublishResult:
    if direct:
        return await side.publisher.publish(
            key,
            given,
            source="stream",
            observed_at=observed_at,
            metadata=metadata,
            force=force,
            replace_equal=replace_equal,
        )
    update = ResourceUpdate(key, given, "stream", observed_at, metadata or {})
    results = await side.publisher.publish_many([update], force=force, replace_equal=replace_equal)
    return results[key]


async def compare(operations: list[tuple[Any, ...]], options: dict[str, Any]) -> None:
    general = Side(dict(options), general=True)
    for side, direct in ((Side(dict(options)), True), (Side(dict(options)), False)):
        for operation in operations:
            assert await apply(side, operation, direct) == await apply(general, operation, False)
        assert side.sink.calls == general.sink.calls
        assert side.clock.reads == general.clock.reads
        assert side.policies.calls == general.policies.calls
        assert (side.copier and side.copier.calls) == (general.copier and general.copier.calls)
        assert await side.cache.stats() == await general.cache.stats()
        for key in KEYS:
            mine = await side.cache.get(key, now=side.clock.time, policy=FOREVER)
            theirs = await general.cache.get(key, now=general.clock.time, policy=FOREVER)
            assert described(mine.value) == described(theirs.value)
        general = Side(dict(options), general=True)


@settings(max_examples=150, deadline=None)
@given(operations=operations, options=settings_options)
def test_publish_and_publish_many_give_what_the_general_path_gives(
    operations: list[tuple[Any, ...]], options: dict[str, Any]
) -> None:
    runner = VirtualTimeRunner()
    try:
        runner.run(compare(operations, options))
    finally:
        runner.close()


batches = st.lists(
    st.tuples(
        st.lists(
            st.tuples(
                st.sampled_from(range(len(KEYS))),
                payloads(),
                st.sampled_from([None, None, -2.0, 3.0]),  # observed_at relative to now
                st.sampled_from([None, None, {"seq": 1}]),
            ),
            min_size=1,
            max_size=4,
        ),
        st.booleans(),  # force
        st.booleans(),  # replace_equal
        st.sampled_from([0.0, 1.0]),  # how far the clock moves first
        st.sampled_from([None, None, 0, 1]),  # a build's revision of this key first
    ),
    min_size=1,
    max_size=6,
)


async def apply_batch(side: Side, batch: tuple[Any, ...]) -> Any:
    specs, force, replace_equal, step, fetched = batch
    if step:
        side.clock.time += step
    now = side.clock.time
    if fetched is not None:
        value = SnapshotValue(
            KEYS[fetched], {"rows": [1]}, "feed", now, now, 0.0, False, False, 1.0
        )
        await side.cache.set_if_newer(value)
    given = [copy.deepcopy(payload) for _index, payload, _offset, _metadata in specs]
    updates = [
        ResourceUpdate(
            KEYS[index], payload, "stream", None if offset is None else now + offset, meta
        )
        for (index, _payload, offset, meta), payload in zip(specs, given, strict=True)
    ]
    try:
        results = await side.publisher.publish_many(
            updates, force=force, replace_equal=replace_equal
        )
    except Exception as error:  # both sides must fail alike
        return type(error), str(error)
    seen = [(key, outcome(result)) for key, result in results.items()]
    published = {
        key: copy.deepcopy(result.value.value)
        for key, result in results.items()
        if result.status is PublishStatus.PUBLISHED
    }
    for mutable in given + [result.value.value for result in results.values()]:
        if isinstance(mutable, (dict, list)):  # the cache shares none of them
            mutable.clear()
    for key, payload in published.items():
        lookup = await side.cache.get(key, now=side.clock.time, policy=FOREVER)
        assert lookup.value is None or lookup.value.value == payload
    return seen


async def compare_batches(batches: list[tuple[Any, ...]], options: dict[str, Any]) -> None:
    side, general = Side(dict(options)), Side(dict(options), general=True)
    for batch in batches:
        assert await apply_batch(side, batch) == await apply_batch(general, batch)
    assert side.sink.calls == general.sink.calls
    assert side.clock.reads == general.clock.reads
    assert side.policies.calls == general.policies.calls
    assert (side.copier and side.copier.calls) == (general.copier and general.copier.calls)
    assert await side.cache.stats() == await general.cache.stats()


@settings(max_examples=150, deadline=None)
@given(batches=batches, options=settings_options)
def test_publish_many_of_a_batch_gives_what_the_general_path_gives(
    batches: list[tuple[Any, ...]], options: dict[str, Any]
) -> None:
    runner = VirtualTimeRunner()
    try:
        runner.run(compare_batches(batches, options))
    finally:
        runner.close()


@pytest.mark.parametrize("reading", [1_700_000_000, True, "now", math.nan, math.inf])
async def test_a_clock_reading_is_checked_as_on_every_other_path(reading: Any) -> None:
    outcomes: list[Any] = []
    for direct, general in ((True, False), (False, False), (False, True)):
        side = Side({}, general=general)
        side.clock.time = reading
        operation = (0, {"a": 1}, None, None, False, False, 0.0, "publish")
        result = await apply(side, operation, direct)
        outcomes.append((result, side.clock.reads, side.sink.calls))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    if reading == 1_700_000_000:  # an int reading is stamped as a float
        _status, value, _previous = outcomes[0][0]
        assert dict(value)["observed_at"].__class__ is float
