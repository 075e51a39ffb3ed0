"""How often a build copies what it writes into the built-in cache. With the built-in copier the
cache keeps the build's own private value (no copy: nobody can tell); a custom copier is called
for the cache's private copy too, and for no write result the build never reads. Public writes
still hand back their own copies."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.doubles import fresh_value
from tests.orchestration.conftest import Single, keys, make_builder

from coalestra.cache import AsyncMemoryCache
from coalestra.core import CacheWriteStatus, FreshnessPolicy
from coalestra.testing import VirtualClock

A, B = keys("A", "B")
LONG = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)


class Counting:
    """A payload copier that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, value: Any) -> Any:
        self.calls += 1
        return copy.deepcopy(value)


def quote(key: Any, _ctx: Any) -> dict[str, Any]:
    return {"venue": key.subject, "levels": [1, 2]}


async def test_a_cold_build_of_one_dict_key_copies_it_three_times(clock: VirtualClock) -> None:
    counting = Counting()
    builder = make_builder(
        [Single("rest", 1, quote)], clock, default_policy=LONG, payload_copier=counting
    )

    snapshot = await builder.build([A])

    # The fetched payload, the cache's private copy and the reader's copy: no copy is made
    # for a write result the build does not read.
    assert counting.calls == 3
    assert snapshot[A].value == {"venue": "A", "levels": [1, 2]}


class Probe:
    """A payload part counting the deep copies made of it (the built-in copier's included)."""

    def __init__(self, copies: list[int]) -> None:
        self.copies = copies

    def __deepcopy__(self, memo: dict[int, Any]) -> Probe:
        self.copies.append(1)
        return Probe(self.copies)


async def test_a_cold_build_of_one_dict_key_copies_it_twice_with_the_builtin_copier(
    clock: VirtualClock,
) -> None:
    copies: list[int] = []
    builder = make_builder(
        [Single("rest", 1, lambda key, _ctx: {"probe": Probe(copies)})], clock, default_policy=LONG
    )

    snapshot = await builder.build([A])

    # The fetched payload (the source may keep it) and the reader's copy; the cache keeps the
    # build's private copy itself.
    assert len(copies) == 2
    assert snapshot[A].value["probe"] is not None


async def test_what_a_source_mutates_after_a_cold_build_is_not_what_the_cache_keeps(
    clock: VirtualClock,
) -> None:
    returned: list[dict[str, Any]] = []

    def fetch(key: Any, _ctx: Any) -> dict[str, Any]:
        returned.append({"levels": [1, 2]})
        return returned[-1]

    builder = make_builder([Single("rest", 1, fetch)], clock, default_policy=LONG)
    first = (await builder.build([A]))[A]
    returned[0]["levels"].append(3)
    first.value["levels"].append(4)

    again = (await builder.build([A]))[A]

    assert again.from_cache
    assert again.value == {"levels": [1, 2]}


async def test_a_cold_build_writes_one_copy_per_key_into_a_cache_copying_in_threads(
    clock: VirtualClock,
) -> None:
    counting = Counting()
    cache = AsyncMemoryCache(payload_copier=counting, run_payload_copies_in_thread=True)
    builder = make_builder([Single("rest", 1, quote)], clock, default_policy=LONG, cache=cache)

    await builder.build([A, B])

    assert counting.calls == 2  # the copy each key keeps, none for the write results
    assert (await cache.stats()).sets == 2


async def test_what_a_cold_build_serves_is_not_what_the_cache_keeps(clock: VirtualClock) -> None:
    builder = make_builder([Single("rest", 1, quote)], clock, default_policy=LONG)
    served = (await builder.build([A]))[A]
    served.value["levels"].append(3)

    again = (await builder.build([A]))[A]

    assert again.from_cache
    assert again.value == {"venue": "A", "levels": [1, 2]}


@pytest.mark.parametrize("in_thread", [False, True])
async def test_public_writes_still_return_independent_copies(in_thread: bool) -> None:
    cache = AsyncMemoryCache(run_payload_copies_in_thread=in_thread)
    mine = fresh_value(A, {"levels": [1]}, 1.0)
    other = fresh_value(B, {"levels": [2]}, 1.0)

    one = await cache.set_if_newer(mine)
    many = await cache.set_many_if_newer([other])

    for result, given in ((one, mine), (many[B], other)):
        assert result.status is CacheWriteStatus.STORED
        assert result.value is not given
        assert result.value.value is not given.value
        result.value.value["levels"].append(9)
        given.value["levels"].append(8)
    for key, payload in ((A, {"levels": [1]}), (B, {"levels": [2]})):
        held = (await cache.get(key, now=1.0, policy=LONG)).value
        assert held is not None
        assert held.value == payload
