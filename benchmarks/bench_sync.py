"""Synchronous facade benchmark (issue target on a 2-core machine):

- a warm 100-key build through ``SyncSnapshotBuilder.build`` costs at most 1.5x the same async
  build plus 100 us (the portal's thread round trip).

Figures are medians of many repetitions (a thread hop's cost varies with scheduling), taken
after a warm-up that fills the cache.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from coalestra.core import FetchContext, FreshnessPolicy, ResourceKey
from coalestra.orchestration import SnapshotBuilder
from coalestra.sync import SyncSnapshotBuilder

LONG = FreshnessPolicy(ttl_seconds=3600.0, max_stale_seconds=3600.0)
KEYS = [ResourceKey("bench", "value", f"k{i}") for i in range(100)]
REPEATS = 2000


class MemorySource:
    """An in-memory async single-key source."""

    name = "memory"
    priority = 10

    def supports(self, key: ResourceKey) -> bool:
        return key.namespace == "bench"

    async def fetch(self, key: ResourceKey, context: FetchContext) -> Any:
        return key.subject


def make_builder() -> SnapshotBuilder:
    return SnapshotBuilder([MemorySource()], default_policy=LONG)


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def async_build_us() -> float:
    builder = make_builder()
    await builder.build(KEYS)
    samples = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        await builder.build(KEYS)
        samples.append(time.perf_counter() - started)
    await builder.aclose()
    return median_us(samples)


def timed(call: Callable[[], object]) -> float:
    samples = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return median_us(samples)


def main() -> None:
    async_us = asyncio.run(async_build_us())
    with SyncSnapshotBuilder(make_builder()) as facade:
        facade.build(KEYS)
        sync_us = timed(lambda: facade.build(KEYS))
        # The smallest build there is (an empty key list is refused, B-TIME-5): one warm key.
        one_us = timed(lambda: facade.build(KEYS[:1]))
    target = 1.5 * async_us + 100.0
    print(f"sync.warm_build 100 keys, async build: {async_us:.1f} us")
    print(
        f"sync.warm_build 100 keys, via SyncSnapshotBuilder: {sync_us:.1f} us target<={target:.1f}"
    )
    print(f"sync.round_trip one warm key via SyncSnapshotBuilder: {one_us:.1f} us")


if __name__ == "__main__":
    main()
