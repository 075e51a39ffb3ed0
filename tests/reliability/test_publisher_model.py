"""The publisher of a builder against a plain model, over any sequence of operations.

``tests/cache/test_properties.py`` checks one key's final winner and one batch against one-by-one
publication. This machine covers what those leave out: many keys at once; ``force`` and
``replace_equal``; ``publish_many`` batches mixing keys and sources; ``invalidate`` and
``invalidate_many``; observation timestamps slightly (accepted as clock skew) and far (refused,
nothing written) in the future; mutation of inputs and results after the call; and reads
through the builder (a published value is what the next build serves).

The model is written from the product page and the publisher's docstrings, not from the code:

* per key: ``force`` or nothing cached stores; a higher cached authority rank wins; a lower one
  loses; with equal ranks a newer ``observed_at`` wins, an older one is ignored, an equal one is
  a duplicate unless ``replace_equal``;
* a batch is first reduced per key as if applied in order (rank, then newer stamp, equal stamps
  keep the earlier update unless ``replace_equal``); only the winner meets the cache;
* a stamp up to the tolerance ahead of the clock is stored as given (never clamped to now), with
  ``clock_skew_seconds``;
  further ahead the whole call fails with ``SourceProtocolError`` and nothing is written.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from tests.orchestration.conftest import Single, make_builder

from coalestra.cache import PublishResult, PublishStatus, ResourceUpdate
from coalestra.core import (
    FreshnessPolicy,
    ObservationPolicy,
    ResourceKey,
    SnapshotValue,
    SourceAuthorityPolicy,
    SourceProtocolError,
)
from coalestra.orchestration import SnapshotBuilder
from coalestra.testing import VirtualClock, VirtualTimeRunner

R = TypeVar("R")
KEYS = [ResourceKey("pub", "item", subject) for subject in ("A", "B", "C")]
SOURCES = {"r0": 0, "r1": 1, "r2": 2}
TOLERANCE = 1.0
FOREVER = FreshnessPolicy(ttl_seconds=1e9, max_stale_seconds=1e9, allow_stale_on_error=False)
# Offsets from "now": whole seconds so equal stamps are common; +0.5 is accepted clock skew,
# +5 is refused.
OFFSETS = [-3.0, -2.0, -1.0, 0.0, 0.0, 0.5, 5.0]

keys = st.sampled_from(KEYS)
sources = st.sampled_from(sorted(SOURCES))
offsets = st.sampled_from(OFFSETS)


@dataclass(frozen=True)
class Held:
    """What the model says the cache holds for one key."""

    version: str
    observed_at: float
    rank: int
    source: str
    payload: Any
    skew: float


def decide(held: Held | None, observed_at: float, rank: int, *, force: bool, equal: bool) -> str:
    """The documented write rules, as a PublishStatus value."""
    if force or held is None:
        return "published"
    if held.rank > rank:
        return "ignored_lower_authority"
    if held.rank < rank or observed_at > held.observed_at:
        return "published"
    if observed_at < held.observed_at:
        return "ignored_older"
    return "published" if equal else "ignored_duplicate"


class PublisherMachine(RuleBasedStateMachine):
    """A builder's publisher and cache, and a dict model of what the cache must hold."""

    def __init__(self) -> None:
        super().__init__()
        self.runner = VirtualTimeRunner()
        self.clock = VirtualClock(self.runner.get_loop())
        self.model: dict[ResourceKey, Held] = {}
        self.serial = 0
        self.results: list[PublishResult] = []
        self.inputs: list[Any] = []
        self.source = Single("down", 1, self._unavailable)
        self.builder: SnapshotBuilder = self.run(self._make_builder())

    def run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        return self.runner.run(coroutine)

    async def _make_builder(self) -> SnapshotBuilder:
        return make_builder(
            [self.source],
            self.clock,
            default_policy=FOREVER,
            authority_policy=SourceAuthorityPolicy(source_ranks=SOURCES),
            observation_policy=ObservationPolicy(future_tolerance_seconds=TOLERANCE),
        )

    @staticmethod
    async def _unavailable(key: ResourceKey, _context: Any) -> Any:
        raise RuntimeError(f"{key} is only ever published")

    def now(self) -> float:
        return self.clock.now()

    def payload(self) -> list[int]:
        self.serial += 1
        return [self.serial]

    # -- operations -------------------------------------------------------------------------

    @rule(
        key=keys,
        source=sources,
        offset=offsets,
        force=st.booleans(),
        equal=st.booleans(),
    )
    def publish(self, key: ResourceKey, source: str, offset: float, force: bool, equal: bool):
        now = self.now()
        value = self.payload()
        expected = copy.deepcopy(value)
        publisher = self.builder.publisher
        if offset > TOLERANCE:
            with pytest.raises(SourceProtocolError):
                self.run(
                    publisher.publish(
                        key, value, source=source, observed_at=now + offset, force=force
                    )
                )
            return
        result = self.run(
            publisher.publish(
                key,
                value,
                source=source,
                observed_at=now + offset,
                force=force,
                replace_equal=equal,
            )
        )
        stamp, skew = now + offset, max(offset, 0.0)
        self.apply(key, source, stamp, skew, expected, result, force=force, equal=equal)
        self.inputs.append(value)

    @rule(
        batch=st.lists(st.tuples(keys, sources, offsets), min_size=1, max_size=5),
        force=st.booleans(),
        equal=st.booleans(),
    )
    def publish_many(
        self, batch: list[tuple[ResourceKey, str, float]], force: bool, equal: bool
    ) -> None:
        now = self.now()
        updates = [
            ResourceUpdate(key, self.payload(), source, observed_at=now + offset)
            for key, source, offset in batch
        ]
        publisher = self.builder.publisher
        if any(offset > TOLERANCE for _key, _source, offset in batch):
            with pytest.raises(SourceProtocolError):
                self.run(publisher.publish_many(updates, force=force, replace_equal=equal))
            return
        expected = [copy.deepcopy(update.value) for update in updates]
        results = self.run(publisher.publish_many(updates, force=force, replace_equal=equal))
        winners: dict[ResourceKey, tuple[int, float, float]] = {}
        for index, (key, source, offset) in enumerate(batch):
            stamp = now + offset
            held = winners.get(key)
            if held is None:
                winners[key] = (index, stamp, offset)
                continue
            first, first_stamp, _ = held
            rival = Held("", first_stamp, SOURCES[batch[first][1]], "", None, 0.0)
            # Within a batch, ties go to the later update whatever ``equal`` says (B-PUB-5).
            if decide(rival, stamp, SOURCES[source], force=False, equal=True) == "published":
                winners[key] = (index, stamp, offset)
        assert list(results) == list(winners), "one result per distinct key, in first order"
        for key, (index, stamp, offset) in winners.items():
            source = batch[index][1]
            skew = offset if offset > 0 else 0.0
            result = results[key]
            self.apply(key, source, stamp, skew, expected[index], result, force=force, equal=equal)
        self.inputs.extend(update.value for update in updates)

    def apply(
        self,
        key: ResourceKey,
        source: str,
        stamp: float,
        skew: float,
        payload: Any,
        result: PublishResult,
        *,
        force: bool,
        equal: bool,
    ) -> None:
        """Check one publication's result against the model, then update the model."""
        held = self.model.get(key)
        status = decide(held, stamp, SOURCES[source], force=force, equal=equal)
        assert result.status is PublishStatus(status), (key, held, stamp, source)
        offered = result.value
        if status != "published":  # B-PUB-1: an ignored result carries the kept revision
            assert held is not None
            assert result.previous is not None
            assert (offered.version, result.previous.version) == (held.version, held.version)
            assert offered.value == held.payload
            self.results.append(result)
            return
        assert (offered.key, offered.source, offered.value) == (key, source, payload)
        assert offered.observed_at == stamp
        assert offered.authority_rank == SOURCES[source]
        assert offered.metadata.get("clock_skew_seconds", 0.0) == pytest.approx(skew)
        if held is None:
            assert result.previous is None
        else:
            assert result.previous is not None
            assert result.previous.version == held.version
            assert result.previous.value == held.payload
        if status == "published":
            self.model[key] = Held(offered.version, stamp, SOURCES[source], source, payload, skew)
        self.results.append(result)

    @rule(key=keys)
    def invalidate(self, key: ResourceKey) -> None:
        self.run(self.builder.publisher.invalidate(key, reason="gap"))
        self.model.pop(key, None)

    @rule(batch=st.lists(keys, max_size=3))
    def invalidate_many(self, batch: list[ResourceKey]) -> None:
        self.run(self.builder.publisher.invalidate_many(batch, reason="gap"))
        for key in batch:
            self.model.pop(key, None)

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0]))
    def advance(self, seconds: float) -> None:
        self.run(asyncio.sleep(seconds))

    @precondition(lambda self: bool(self.results) or bool(self.inputs))
    @rule()
    def mutate_inputs_and_results(self) -> None:
        for result in self.results:
            for value in (result.value, result.previous):
                if value is not None and isinstance(value.value, list):
                    value.value.append("mutated")
        for value in self.inputs:
            value.append("mutated")
        self.results.clear()
        self.inputs.clear()

    @rule(key=keys)
    def build_reads_the_published_value(self, key: ResourceKey) -> None:
        snapshot = self.run(self.builder.build([key], strict=False))
        held = self.model.get(key)
        if held is None:
            assert key in snapshot.errors
            return
        value = snapshot[key]
        assert (value.version, value.value, value.source) == (
            held.version,
            held.payload,
            held.source,
        )
        snapshot[key].value.append("mutated by a reader")

    # -- what the cache holds ---------------------------------------------------------------

    @invariant()
    def cache_holds_the_model(self) -> None:
        found: Mapping[ResourceKey, Any] = self.run(
            self.builder.cache.get_many(  # type: ignore[attr-defined]
                KEYS, now=self.now(), policies=dict.fromkeys(KEYS, FOREVER)
            )
        )
        for key in KEYS:
            held = self.model.get(key)
            value: SnapshotValue[Any] | None = found[key].value
            if held is None:
                assert value is None, f"{key} should not be cached: {value}"
                continue
            assert value is not None, f"{key} lost: the model holds {held}"
            assert value.version == held.version
            assert value.value == held.payload
            assert (value.observed_at, value.authority_rank, value.source) == (
                held.observed_at,
                held.rank,
                held.source,
            )
            assert value.metadata.get("clock_skew_seconds", 0.0) == pytest.approx(held.skew)

    def teardown(self) -> None:
        try:
            self.run(self.builder.aclose())
        finally:
            self.runner.close()


TestPublisherMachine = PublisherMachine.TestCase
TestPublisherMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
