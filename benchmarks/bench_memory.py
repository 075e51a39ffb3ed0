"""Memory per cached entry (issue 14 target: 100,000 cached entries <= 350 bytes each).

A builder with an unbounded in-memory cache builds 100,000 keys once (immutable payloads, the
source's own strings); what stays allocated afterwards -- cache entries, stored revisions, the
memo of source ``supports()`` answers -- is measured with ``tracemalloc`` and divided by the
number of keys. The keys themselves are made before measuring: they are the caller's.

Run directly (``python benchmarks/bench_memory.py [--keys N]``) or through ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tracemalloc

from bench_builder import LONG, MemorySource  # serves each key's subject: no payload memory

from coalestra.cache import AsyncMemoryCache
from coalestra.core import ResourceKey
from coalestra.orchestration import SnapshotBuilder


async def retained_per_entry(count: int) -> float:
    keys = [ResourceKey("bench", "value", f"k{i}") for i in range(count)]
    builder = SnapshotBuilder(
        [MemorySource()], default_policy=LONG, cache=AsyncMemoryCache(max_entries=None)
    )
    await builder.build(keys[:10])  # warm up: first-build allocations are not per entry
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for start in range(10, count, 10_000):
        await builder.build(keys[start : start + 10_000])
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(builder.cache._store) == count  # type: ignore[attr-defined]
    await builder.aclose()
    return retained / (count - 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    count = parser.parse_args().keys
    per_entry = asyncio.run(retained_per_entry(count))
    print(f"memory.cached_entries {count}: {per_entry:.0f} bytes/entry retained target<=350")


if __name__ == "__main__":
    main()
