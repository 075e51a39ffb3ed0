"""Builders in two "processes" (two caches, two builders) sharing one Redis: publications,
derived values and authority rules behave as with one shared memory cache."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.integrations.redis.conftest import LONG, eventually

from coalestra import (
    CallableDerivedSource,
    CallableSource,
    PolicyResolver,
    PublishStatus,
    ResourceKey,
    Snapshot,
    SnapshotBuilder,
    SourceAuthorityPolicy,
    SystemClock,
)
from coalestra.integrations.redis import RedisCache, TieredCache

PRICE = ResourceKey("market", "price", "BTC")
DOUBLE = ResourceKey("market", "double", "BTC")
POLICIES = PolicyResolver(LONG)


def make_builder(url: str, prefix: str, calls: itertools.count[int]) -> SnapshotBuilder:
    def fetch(_key: ResourceKey, _context: Any) -> dict[str, int]:
        return {"price": 100 + next(calls)}

    def derive(_key: ResourceKey, snapshot: Snapshot, _context: Any) -> dict[str, int]:
        return {"double": 2 * snapshot.value(PRICE, dict)["price"]}

    sources = [
        CallableSource(name="rest", priority=1, supports=lambda k: k == PRICE, fetcher=fetch),
        CallableDerivedSource(
            name="double",
            priority=1,
            supports=lambda k: k == DOUBLE,
            dependencies=lambda _k: (PRICE,),
            deriver=derive,
        ),
    ]
    cache = TieredCache(RedisCache(url, prefix=prefix, policy_resolver=POLICIES))
    return SnapshotBuilder(
        sources,
        policy_resolver=POLICIES,
        cache=cache,
        clock=SystemClock(),
        authority_policy=SourceAuthorityPolicy({"ledger": 10}),
        manage_lifecycle=True,
    )


@pytest.fixture
async def builders(redis_url: str, prefix: str) -> AsyncIterator[list[SnapshotBuilder]]:
    calls = itertools.count()
    made = [make_builder(redis_url, prefix, calls) for _ in range(2)]
    yield made
    for builder in made:
        await builder.aclose()


async def test_a_publication_in_one_process_reaches_the_other(
    builders: list[SnapshotBuilder],
) -> None:
    first, second = builders
    assert (await second.build([PRICE])).value(PRICE, dict) == {"price": 100}
    now = time.time()
    published = await first.publisher.publish(PRICE, {"price": 7}, source="ws", observed_at=now)
    assert published.status is PublishStatus.PUBLISHED
    older = await second.publisher.publish(PRICE, {"price": 6}, source="ws", observed_at=now - 1)
    assert older.status is PublishStatus.IGNORED_OLDER

    async def seen() -> bool:
        return bool((await second.build([PRICE])).value(PRICE, dict) == {"price": 7})

    await eventually(seen, "the publication in the other process")


async def test_a_derived_value_follows_its_dependency_across_processes(
    builders: list[SnapshotBuilder],
) -> None:
    first, second = builders
    assert (await first.build([DOUBLE])).value(DOUBLE, dict) == {"double": 200}
    assert (await second.build([DOUBLE])).value(DOUBLE, dict) == {"double": 200}  # shared
    await first.publisher.publish(PRICE, {"price": 50}, source="ws", observed_at=time.time())

    async def rederived() -> bool:
        return bool((await second.build([DOUBLE])).value(DOUBLE, dict) == {"double": 100})

    await eventually(rederived, "the derived value to follow its dependency")


async def test_authority_is_decided_in_redis(builders: list[SnapshotBuilder]) -> None:
    first, second = builders
    now = time.time()
    ledger = await first.publisher.publish(
        PRICE, {"price": 1}, source="ledger", observed_at=now - 10
    )
    assert ledger.published
    newer_but_weaker = await second.publisher.publish(
        PRICE, {"price": 2}, source="ws", observed_at=now
    )
    assert newer_but_weaker.status is PublishStatus.IGNORED_LOWER_AUTHORITY
    assert (await second.build([PRICE])).value(PRICE, dict) == {"price": 1}
