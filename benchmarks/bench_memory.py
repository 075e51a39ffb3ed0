"""Memory per cached entry (issue 14 target: 100,000 cached entries <= 350 bytes each).

A builder with an unbounded in-memory cache builds 100,000 keys once (immutable payloads, the
source's own strings); what stays allocated afterwards -- cache entries, stored revisions, the
memo of source ``supports()`` answers -- is measured with ``tracemalloc`` and divided by the
number of keys. The keys themselves are made before measuring: they are the caller's.

Run directly (``python benchmarks/bench_memory.py [--keys N] [--where N]``; ``--where`` lists
the allocation sites that retain the most) or through ``benchmarks/run.py``.
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


async def retained_per_entry(count: int, where: int = 0) -> float:
    """Bytes retained per entry; with ``where``, also print the ``where`` allocation sites that
    retain the most (the innermost frame of the library, bytes per entry)."""
    keys = [ResourceKey("bench", "value", f"k{i}") for i in range(count)]
    builder = SnapshotBuilder(
        [MemorySource()], default_policy=LONG, cache=AsyncMemoryCache(max_entries=None)
    )
    await builder.build(keys[:10])  # warm up: first-build allocations are not per entry
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot() if where else None
    start_size = tracemalloc.get_traced_memory()[0]
    for start in range(10, count, 10_000):
        await builder.build(keys[start : start + 10_000])
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - start_size
    if before is not None:
        for stat in tracemalloc.take_snapshot().compare_to(before, "lineno")[:where]:
            print(f"  {stat.size_diff / (count - 10):6.1f} B/entry  {stat.traceback[0]}")
    tracemalloc.stop()
    assert len(builder.cache._store) == count  # type: ignore[attr-defined]
    await builder.aclose()
    return retained / (count - 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument(
        "--where", type=int, default=0, metavar="N", help="print the N sites retaining the most"
    )
    args = parser.parse_args()
    per_entry = asyncio.run(retained_per_entry(args.keys, args.where))
    print(f"memory.cached_entries {args.keys}: {per_entry:.0f} bytes/entry retained target<=350")


if __name__ == "__main__":
    main()
