"""Property tests: the memory cache against a plain model, and monotonic publication."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from coalestra.cache import AsyncMemoryCache, PublishStatus, ResourcePublisher, ResourceUpdate
from coalestra.core import (
    AuthorityPolicyResolver,
    CacheLookup,
    CacheWriteStatus,
    FreshnessPolicy,
    ResourceKey,
    SnapshotValue,
    SourceAuthorityPolicy,
)
from coalestra.testing import VirtualTimeRunner

R = TypeVar("R")
KEYS = [ResourceKey("market", "price", subject) for subject in ("A", "B", "C", "D")]
MAX_ENTRIES = 3
POLICY = FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=15.0)
FOREVER = FreshnessPolicy(ttl_seconds=1e9, max_stale_seconds=1e9)

keys = st.sampled_from(KEYS)
ages = st.integers(min_value=0, max_value=20).map(float)  # whole seconds: equal stamps happen
ranks = st.integers(min_value=0, max_value=2)


def expected_status(
    existing: SnapshotValue[Any] | None,
    observed_at: float,
    rank: int,
    *,
    force: bool,
    replace_equal: bool,
) -> CacheWriteStatus:
    """The documented rules, written independently of the implementation."""
    if force or existing is None:
        return CacheWriteStatus.STORED
    if existing.authority_rank > rank:
        return CacheWriteStatus.IGNORED_LOWER_AUTHORITY
    if existing.authority_rank < rank or observed_at > existing.observed_at:
        return CacheWriteStatus.STORED
    if observed_at < existing.observed_at:
        return CacheWriteStatus.IGNORED_OLDER
    return CacheWriteStatus.STORED if replace_equal else CacheWriteStatus.IGNORED_DUPLICATE


class MemoryCacheMachine(RuleBasedStateMachine):
    """Drives AsyncMemoryCache and an OrderedDict model (key -> value, in LRU order) in step."""

    def __init__(self) -> None:
        super().__init__()
        self.runner = VirtualTimeRunner()
        self.cache = AsyncMemoryCache(max_entries=MAX_ENTRIES)
        self.model: OrderedDict[ResourceKey, SnapshotValue[Any]] = OrderedDict()
        self.now = 10_000.0
        self.serial = 0

    def run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        return self.runner.run(coroutine)

    def teardown(self) -> None:
        self.runner.close()

    def make(self, key: ResourceKey, age: float, rank: int, mutable: bool) -> SnapshotValue[Any]:
        self.serial += 1
        payload: Any = [self.serial] if mutable else self.serial
        stamp = self.now - age
        return SnapshotValue(key, payload, "src", stamp, stamp, 0.0, False, False, 0.0, 1, {}, rank)

    def model_put(self, value: SnapshotValue[Any]) -> None:
        self.model[value.key] = value
        self.model.move_to_end(value.key)
        while len(self.model) > MAX_ENTRIES:
            self.model.popitem(last=False)

    def model_read(self, key: ResourceKey) -> tuple[SnapshotValue[Any] | None, bool, float]:
        value = self.model.get(key)
        if value is None:
            return None, False, 0.0
        age = self.now - value.observed_at
        if not POLICY.is_usable(age):
            del self.model[key]
            return None, False, age
        self.model.move_to_end(key)
        return value, POLICY.is_fresh(age), age

    def check_lookup(self, key: ResourceKey, lookup: CacheLookup) -> None:
        expected, fresh, age = self.model_read(key)
        if expected is None:
            assert lookup.value is None
            assert not lookup.hit
            return
        assert lookup.value is not None
        assert (lookup.fresh, lookup.usable_stale, lookup.age_seconds) == (fresh, True, age)
        assert lookup.value.value == expected.value
        assert lookup.value.version == expected.version
        assert (lookup.value.stale, lookup.value.from_cache) == (False, False)  # as stored
        if isinstance(expected.value, list):
            assert lookup.value.value is not expected.value

    @rule(seconds=st.floats(min_value=0.0, max_value=8.0))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule(key=keys, age=ages, rank=ranks, mutable=st.booleans())
    def set(self, key: ResourceKey, age: float, rank: int, mutable: bool) -> None:
        value = self.make(key, age, rank, mutable)
        existing = self.model.get(key)
        self.run(self.cache.set(value))  # monotonic: set is set_if_newer without the result
        status = expected_status(
            existing, value.observed_at, rank, force=False, replace_equal=False
        )
        if status is CacheWriteStatus.STORED:
            self.model_put(value)

    @rule(
        key=keys,
        age=ages,
        rank=ranks,
        mutable=st.booleans(),
        force=st.booleans(),
        replace_equal=st.booleans(),
    )
    def set_if_newer(
        self,
        key: ResourceKey,
        age: float,
        rank: int,
        mutable: bool,
        force: bool,
        replace_equal: bool,
    ) -> None:
        value = self.make(key, age, rank, mutable)
        existing = self.model.get(key)
        result = self.run(self.cache.set_if_newer(value, force=force, replace_equal=replace_equal))
        status = expected_status(
            existing, value.observed_at, rank, force=force, replace_equal=replace_equal
        )
        assert result.status is status
        if status is CacheWriteStatus.STORED:
            assert result.value == value
        else:
            assert existing is not None
            assert result.value.version == existing.version
        if existing is None:
            assert result.previous is None
        else:
            assert result.previous is not None
            assert result.previous.version == existing.version
        if status is CacheWriteStatus.STORED:
            self.model_put(value)

    @rule(key=keys)
    def invalidate(self, key: ResourceKey) -> None:
        self.run(self.cache.invalidate(key))
        self.model.pop(key, None)

    @rule(key=keys)
    def get(self, key: ResourceKey) -> None:
        lookup = self.run(self.cache.get(key, now=self.now, policy=POLICY))
        self.check_lookup(key, lookup)

    @rule(batch=st.lists(keys, unique=True, max_size=4))
    def get_many(self, batch: list[ResourceKey]) -> None:
        found = self.run(
            self.cache.get_many(batch, now=self.now, policies=dict.fromkeys(batch, POLICY))
        )
        assert list(found) == batch
        for key in batch:
            self.check_lookup(key, found[key])

    @rule()
    def prune(self) -> None:
        class Resolver:
            def resolve(self, key: ResourceKey) -> FreshnessPolicy:
                return POLICY

        removed = self.run(self.cache.prune(now=self.now, policy_resolver=Resolver()))
        expired = [
            key
            for key, value in self.model.items()
            if not POLICY.is_usable(self.now - value.observed_at)
        ]
        assert list(removed) == expired
        for key in expired:
            del self.model[key]

    @invariant()
    def same_keys_in_lru_order(self) -> None:
        seen: list[ResourceKey] = []

        def record(key: ResourceKey) -> bool:
            seen.append(key)
            return False

        self.run(self.cache.invalidate_matching(record))
        assert seen == list(self.model)
        assert len(seen) <= MAX_ENTRIES
        assert self.run(self.cache.size()) == len(self.model)


TestMemoryCacheMachine = MemoryCacheMachine.TestCase
TestMemoryCacheMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


# -- monotonic publication --------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now


class Null:
    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        pass

    def observe(self, metric: str, value: float, **labels: str) -> None:
        pass

    def emit(self, event_type: str, **payload: Any) -> None:
        pass


class Policies:
    def resolve(self, key: ResourceKey) -> FreshnessPolicy:
        return FOREVER


class PlainCache:
    # The publisher decides for a get/set cache itself, ranks included, so the authority rules
    # it is given are honoured (B-PUB-6 requires the declaration).
    validates_source_authority = True

    def __init__(self) -> None:
        self.data: dict[ResourceKey, SnapshotValue[Any]] = {}

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> CacheLookup:
        found = self.data.get(key)
        return CacheLookup(found, found is not None, False, None)

    async def set(self, value: SnapshotValue[Any]) -> None:
        self.data[value.key] = value

    async def invalidate(self, key: ResourceKey) -> None:
        self.data.pop(key, None)

    async def clear(self) -> None:
        self.data.clear()


NOW = 50_000.0
KEY = KEYS[0]
PUBLISH_STATUS = {
    CacheWriteStatus.STORED: PublishStatus.PUBLISHED,
    CacheWriteStatus.IGNORED_LOWER_AUTHORITY: PublishStatus.IGNORED_LOWER_AUTHORITY,
    CacheWriteStatus.IGNORED_OLDER: PublishStatus.IGNORED_OLDER,
    CacheWriteStatus.IGNORED_DUPLICATE: PublishStatus.IGNORED_DUPLICATE,
}
publications = st.lists(st.tuples(ages, ranks, st.booleans()), min_size=1, max_size=12)


def publisher_for(cache: Any) -> ResourcePublisher:
    ranks = SourceAuthorityPolicy(source_ranks={"r0": 0, "r1": 1, "r2": 2})
    return ResourcePublisher(
        cache=cache,
        clock=Clock(NOW),
        policy_resolver=Policies(),
        metrics=Null(),
        events=Null(),
        authority_resolver=AuthorityPolicyResolver(ranks),
    )


@settings(max_examples=150, deadline=None)
@given(events=publications, memory=st.booleans())
def test_final_value_is_the_models_winner(
    events: list[tuple[float, int, bool]], memory: bool
) -> None:
    async def scenario() -> None:
        cache: Any = AsyncMemoryCache() if memory else PlainCache()
        publisher = publisher_for(cache)
        winner: SnapshotValue[Any] | None = None
        for index, (age, rank, replace_equal) in enumerate(events):
            observed = NOW - age
            result = await publisher.publish(
                KEY, index, source=f"r{rank}", observed_at=observed, replace_equal=replace_equal
            )
            status = expected_status(
                winner, observed, rank, force=False, replace_equal=replace_equal
            )
            assert result.status is PUBLISH_STATUS[status]
            if status is CacheWriteStatus.STORED:
                winner = result.value
        assert winner is not None
        lookup = await cache.get(KEY, now=NOW, policy=FOREVER)
        assert lookup.value is not None
        assert lookup.value.value == winner.value
        assert (lookup.value.observed_at, lookup.value.authority_rank) == (
            winner.observed_at,
            winner.authority_rank,
        )

    with VirtualTimeRunner() as runner:
        runner.run(scenario())


@settings(max_examples=100, deadline=None)
@given(events=publications)
def test_one_batch_ends_with_the_same_winner_as_one_by_one_with_replace_equal(
    events: list[tuple[float, int, bool]],
) -> None:
    async def scenario() -> None:
        batch_cache, serial_cache = AsyncMemoryCache(), AsyncMemoryCache()
        updates = [
            ResourceUpdate(KEY, index, f"r{rank}", observed_at=NOW - age)
            for index, (age, rank, _replace) in enumerate(events)
        ]
        results = await publisher_for(batch_cache).publish_many(updates)
        serial = publisher_for(serial_cache)
        for update in updates:  # a batch's ties go to the later update (B-PUB-5)
            await serial.publish_update(update, replace_equal=True)
        batch_value = (await batch_cache.get(KEY, now=NOW, policy=FOREVER)).value
        serial_value = (await serial_cache.get(KEY, now=NOW, policy=FOREVER)).value
        assert batch_value is not None
        assert serial_value is not None
        assert batch_value.value == serial_value.value == results[KEY].value.value

    with VirtualTimeRunner() as runner:
        runner.run(scenario())
