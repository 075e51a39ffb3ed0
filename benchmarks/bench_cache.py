"""Cache and publisher speed: the cache-hit hot loop and direct publication.

Run directly (``python benchmarks/bench_cache.py``) or through ``benchmarks/run.py``. Each figure
is the best of several repeats, so it measures the code rather than the machine's other load.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from coalestra.cache import AsyncMemoryCache, ResourcePublisher, ResourceUpdate
from coalestra.core import FreshnessPolicy, ResourceKey, SnapshotValue, SystemClock

KEYS = [ResourceKey("market", "price", f"SYM{i}") for i in range(1_000)]
POLICY = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=90.0)
POLICIES = dict.fromkeys(KEYS, POLICY)
REPEATS = 30


def small_dict(i: int) -> dict[str, Any]:
    return {"price": i, "qty": [i, i + 1]}


def tick(i: int) -> dict[str, Any]:
    """What users publish: a small flat dict."""
    return {"bid": 1.0, "ask": 1.1, "ts": i}


class NullSink:
    """Metrics and events that go nowhere (the publisher's own cost is what is measured)."""

    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        pass

    def observe(self, metric: str, value: float, **labels: str) -> None:
        pass

    def emit(self, event_type: str, **payload: Any) -> None:
        pass


class FixedPolicies:
    def resolve(self, key: ResourceKey) -> FreshnessPolicy:
        return POLICY


async def best_of(repeats: int, action: Callable[[], Awaitable[object]]) -> float:
    """The fastest of ``repeats`` runs of ``action``, in seconds (GC paused while timing)."""
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            await action()
            best = min(best, time.perf_counter() - start)
    finally:
        gc.enable()
    return best


async def bench_get_many(label: str, payload: Callable[[int], Any], target: str) -> None:
    cache = AsyncMemoryCache()
    now = time.time()
    await cache.set_many(
        [
            SnapshotValue(key, payload(i), "bench", now, now, 0.0, False, False, 0.0)
            for i, key in enumerate(KEYS)
        ]
    )

    async def read() -> object:
        result = await cache.get_many(KEYS, now=now + 1.0, policies=POLICIES)
        assert len(result) == len(KEYS)
        return result

    await read()  # warm up
    seconds = await best_of(REPEATS, read)
    per_key = seconds / len(KEYS) * 1e6
    print(
        f"cache.get_many 1000 {label}: {seconds * 1e3:.2f} ms/call ({per_key:.2f} us/key) {target}",
        flush=True,
    )


def new_publisher() -> ResourcePublisher:
    sink = NullSink()
    return ResourcePublisher(
        cache=AsyncMemoryCache(max_entries=None),
        clock=SystemClock(),
        policy_resolver=FixedPolicies(),
        metrics=sink,
        events=sink,
    )


async def bench_publish(
    label: str, payload: Callable[[int], Any], target: str, count: int = 10_000
) -> None:
    async def publish_all() -> object:
        publisher = new_publisher()
        publish = publisher.publish
        for i in range(count):
            await publish(KEYS[i % len(KEYS)], payload(i), source="stream")
        return publisher

    await publish_all()  # warm up
    seconds = await best_of(5, publish_all)
    print(
        f"publisher.publish {count} {label}: {seconds * 1e3:.1f} ms total "
        f"({seconds / count * 1e6:.2f} us/call) {target}",
        flush=True,
    )


async def bench_publish_many(
    label: str, payload: Callable[[int], Any], target: str, count: int = 10_000
) -> None:
    keys = [ResourceKey("market", "quote", f"SYM{i}") for i in range(count)]
    updates = [ResourceUpdate(key, payload(i), "stream") for i, key in enumerate(keys)]

    async def publish_batch() -> object:
        results = await new_publisher().publish_many(updates)
        assert len(results) == count
        return results

    await publish_batch()  # warm up
    seconds = await best_of(5, publish_batch)
    print(
        f"publisher.publish_many {count} {label}: {seconds * 1e3:.1f} ms total "
        f"({seconds / count * 1e6:.2f} us/update) {target}",
        flush=True,
    )


async def main() -> None:
    # Mutable payloads are copied at every boundary (the built-in copier: copy.deepcopy's
    # results); the targets apply to the immutable lines.
    await bench_get_many("immutable", float, "target<1ms")
    await bench_get_many("small flat dict (copied)", tick, "(no target)")
    await bench_get_many("small nested dict (copied)", small_dict, "(no target)")
    # Publication (issue 14): the payload is copied twice (the cache's and the result's copy).
    await bench_publish("immutable", float, "target<=60ms")
    await bench_publish("small flat dict (copied)", tick, "target<=60ms")
    await bench_publish_many("immutable", float, "target<=40ms")
    await bench_publish_many("small flat dict (copied)", tick, "target<=40ms")


if __name__ == "__main__":
    asyncio.run(main())
