"""Two worker processes, one Redis: one upstream call per key, however many workers ask.

Run it with ``python examples/many_workers.py`` (needs ``pip install "coalestra[redis]"``). It
starts its own ``redis-server`` on a free port (or uses ``--url redis://...``), then two worker
processes. Each worker has its own builder with a ``TieredCache`` (memory L1 + Redis L2) and
builds the same 20 price keys five times; the "upstream" is slow (50 ms a call) and counts its
calls in Redis. The workers coordinate through fetch leases, so the upstream sees 20 calls in
total, not 2 x 20, and every later build is served from each worker's L1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from redis.asyncio import Redis

from coalestra import (
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    PolicyResolver,
    ResourceKey,
    SnapshotBuilder,
)
from coalestra.integrations.redis import RedisCache, TieredCache

PREFIX = "many-workers-example"
POLICY = PolicyResolver(FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=600.0))
KEYS = [ResourceKey("market", "price", f"SYM{i}") for i in range(20)]


async def worker(url: str, name: str) -> None:
    """One worker process: its own builder, sharing Redis with the others."""
    counter = Redis.from_url(url)

    async def fetch_price(key: ResourceKey, _context: FetchContext) -> dict[str, float]:
        await counter.incr(f"{PREFIX}:upstream-calls")  # the upstream's own bookkeeping
        await asyncio.sleep(0.05)  # a slow remote API
        return {"price": 100.0 + int(key.subject.removeprefix("SYM"))}

    upstream = CallableSource(
        name="price-api", priority=10, supports=lambda _key: True, fetcher=fetch_price
    )
    # The cache gets the builder's policy resolver: Redis expires entries after TTL + stale.
    cache = TieredCache(RedisCache(url, prefix=PREFIX, policy_resolver=POLICY))
    async with SnapshotBuilder(
        [upstream], policy_resolver=POLICY, cache=cache, manage_lifecycle=True
    ) as builder:
        calls = 0
        for _ in range(5):
            snapshot = await builder.build(KEYS, deadline_seconds=10.0)
            calls += sum(snapshot.diagnostics.source_calls_by_source.values())
        stats = await cache.stats()
        print(
            f"{name}: 5 builds of {len(KEYS)} keys, {calls} upstream calls made here, "
            f"{stats.l1.hits} L1 hits, {stats.l2.lease_waits} waits for the other worker"
        )
    await counter.aclose()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway ``redis-server`` on a free loopback port (no persistence)."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: install it, or pass --url redis://host:port/0")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        server = subprocess.Popen(
            [
                binary,
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
        try:
            _wait_for(port)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.kill()
            server.wait()


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"PING\r\n")
            if conn.recv(16):
                return
        time.sleep(0.01)
    sys.exit("redis-server did not start")


async def total_calls(url: str, *, reset: bool = False) -> int:
    client = Redis.from_url(url)
    if reset:
        await client.delete(f"{PREFIX}:upstream-calls")
        await RedisCache(client=client, prefix=PREFIX).clear()
    calls = int(await client.get(f"{PREFIX}:upstream-calls") or 0)
    await client.aclose()
    return calls


def run(url: str) -> None:
    asyncio.run(total_calls(url, reset=True))
    # Each worker writes to a pipe of its own, printed whole once it is done: two processes
    # sharing one stdout could interleave their lines.
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", name, "--url", url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("worker-1", "worker-2")
    ]
    for process in workers:
        output, _ = process.communicate()
        print(output, end="")
        if process.returncode != 0:
            sys.exit(f"a worker failed (exit code {process.returncode})")
    print(f"upstream calls in total: {asyncio.run(total_calls(url))} for {len(KEYS)} keys")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an existing Redis (default: start a throwaway one)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args.url, args.worker))
    elif args.url:
        run(args.url)
    else:
        with redis_server() as url:
            run(url)


if __name__ == "__main__":
    main()
