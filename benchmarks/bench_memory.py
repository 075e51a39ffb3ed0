"""Memory per cached entry (issue 14 target: 100,000 cached entries <= 350 bytes each).

A builder with an unbounded in-memory cache builds 100,000 keys once (immutable payloads, the
source's own strings); what stays allocated afterwards -- cache entries, stored revisions, the
memo of source ``supports()`` answers -- is measured with ``tracemalloc`` and divided by the
number of keys. The keys themselves are made before measuring: they are the caller's.

Run directly (``python benchmarks/bench_memory.py [--keys N] [--where N]``; ``--where`` lists
the allocation sites that retain the most) or through ``benchmarks/run.py``. A second line gives
the same allocations as the allocator's blocks (tracemalloc counts the bytes requested; a small
request takes a block of the next multiple of 16): detail, not the target's figure.
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


async def retained_per_entry(count: int, where: int = 0) -> tuple[float, float]:
    """Bytes retained per entry, as requested from the allocator and as the blocks it handed
    out (see :func:`_in_blocks`); with ``where``, also print the ``where`` allocation sites that
    retain the most (the innermost frame of the library, bytes per entry)."""
    keys = [ResourceKey("bench", "value", f"k{i}") for i in range(count)]
    builder = SnapshotBuilder(
        [MemorySource()], default_policy=LONG, cache=AsyncMemoryCache(max_entries=None)
    )
    await builder.build(keys[:10])  # warm up: first-build allocations are not per entry
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    start_size = tracemalloc.get_traced_memory()[0]
    for start in range(10, count, 10_000):
        await builder.build(keys[start : start + 10_000])
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - start_size
    after = tracemalloc.take_snapshot()
    blocks = _in_blocks(after) - _in_blocks(before)
    for stat in after.compare_to(before, "lineno")[:where]:
        print(f"  {stat.size_diff / (count - 10):6.1f} B/entry  {stat.traceback[0]}")
    tracemalloc.stop()
    assert len(builder.cache._store) == count  # type: ignore[attr-defined]
    await builder.aclose()
    return retained / (count - 10), blocks / (count - 10)


def _in_blocks(snapshot: tracemalloc.Snapshot) -> int:
    """The bytes of ``snapshot``'s allocations as CPython's small-object allocator hands them
    out: a request of up to 512 bytes takes a block of the next multiple of 16 (a 24-byte float
    takes 32, a 65-byte string 80). tracemalloc counts the bytes requested (the target's
    figure); this is closer to what the process keeps."""
    return sum(
        -(-trace.size // 16) * 16 if trace.size <= 512 else trace.size for trace in snapshot.traces
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument(
        "--where", type=int, default=0, metavar="N", help="print the N sites retaining the most"
    )
    args = parser.parse_args()
    per_entry, in_blocks = asyncio.run(retained_per_entry(args.keys, args.where))
    print(f"memory.cached_entries {args.keys}: {per_entry:.0f} bytes/entry retained target<=350")
    print(
        f"memory.cached_entries {args.keys}: {in_blocks:.0f} bytes/entry in allocator blocks "
        "(requests rounded up to the small-object allocator's 16-byte blocks; no target)"
    )


if __name__ == "__main__":
    main()
