"""A session remembers the revisions its derived values were computed from.

A key first read only as a dependency of a derived value is shown, when a later stage asks for
it, as the revision that derived value was computed from: one session snapshot never shows a
derived value beside another revision of its input (issue 12, defect 1, for sessions).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from coalestra import (
    CallableDerivedSource,
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    Snapshot,
    SnapshotBuilder,
)

RAW = ResourceKey("t", "raw", "k")
DOUBLE = ResourceKey("t", "double", "k")
POLICY = FreshnessPolicy(ttl_seconds=600.0, max_stale_seconds=600.0)


class Upstream:
    """``RAW`` from a counting single-key source; ``DOUBLE`` is twice ``RAW``."""

    def __init__(self) -> None:
        self.value = 1
        self.calls = 0

    async def fetch(self, key: ResourceKey, context: FetchContext) -> int:
        self.calls += 1
        return self.value

    def sources(self) -> list[Any]:
        return [
            CallableSource(
                name="raw", priority=10, supports=lambda key: key == RAW, fetcher=self.fetch
            ),
            CallableDerivedSource(
                name="double",
                priority=5,
                supports=lambda key: key == DOUBLE,
                dependencies=lambda key: [RAW],
                deriver=lambda key, deps, context: 2 * deps.value(RAW),
            ),
        ]


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
async def builder(upstream: Upstream) -> AsyncIterator[SnapshotBuilder]:
    async with SnapshotBuilder(upstream.sources(), default_policy=POLICY) as built:
        yield built


def consistent(snapshot: Snapshot) -> bool:
    return bool(snapshot.value(DOUBLE) == 2 * snapshot.value(RAW))


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
