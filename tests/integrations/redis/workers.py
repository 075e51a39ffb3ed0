"""Worker processes for the multi-process tests (run as ``python workers.py MODE ...``).

``build``: one builder on a shared Redis (``RedisCache`` or ``TieredCache``, default settings
unless told) builds the same keys for several rounds, or for ``--duration`` seconds; every source
call is counted in Redis with ``INCR`` (successful ones per key in the hash ``ok``), or in the
process with ``--local-count`` (when Redis is about to be paused). The source fails a
``--fail-rate`` share of its calls. Prints a JSON summary with every build's start, end and
outcome.
``race``: many concurrent ``set_if_newer`` writes with random ``observed_at``; prints the newest
``observed_at`` it wrote per key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from typing import Any

from redis.asyncio import Redis

from coalestra import (
    CallableSource,
    CircuitBreaker,
    FetchContext,
    FreshnessPolicy,
    PolicyResolver,
    ResourceKey,
    SnapshotBuilder,
    SnapshotValue,
    SystemClock,
)
from coalestra.integrations.redis import RedisCache, TieredCache


def keys(count: int) -> list[ResourceKey]:
    return [ResourceKey("market", "price", f"K{i}") for i in range(count)]


async def wait_for_go(counter: Redis, args: argparse.Namespace) -> None:
    """Say "ready", then block (on the socket) until the test hands out a start token."""
    await counter.incr(f"{args.prefix}:ready")
    await counter.blpop([f"{args.prefix}:go"])


def make_cache(args: argparse.Namespace, policy: FreshnessPolicy) -> RedisCache | TieredCache:
    options: dict[str, Any] = {}
    if args.lease_ttl is not None:
        options["lease_ttl_seconds"] = args.lease_ttl
    redis = RedisCache(
        args.url, prefix=args.prefix, policy_resolver=PolicyResolver(policy), **options
    )
    return TieredCache(redis) if args.cache == "tiered" else redis


class UpstreamFailure(Exception):
    """The source's planned failure."""


async def build(args: argparse.Namespace) -> dict[str, Any]:
    counter = Redis.from_url(args.url)
    pid = os.getpid()
    rng = random.Random(pid)
    calls = {"all": 0, "ok": 0}
    policy = FreshnessPolicy(ttl_seconds=args.ttl, max_stale_seconds=args.ttl)

    async def fetch(key: ResourceKey, _context: FetchContext) -> dict[str, Any]:
        calls["all"] += 1
        if not args.local_count:
            await counter.incr(f"{args.prefix}:calls")
        if args.sleep_first and await counter.set(f"{args.prefix}:sleeper", pid, nx=True):
            await counter.set(f"{args.prefix}:fetching", pid)
            await asyncio.sleep(args.sleep_first)  # killed here by the test
        if rng.random() < args.fail_rate:
            raise UpstreamFailure(f"{key.subject} failed")
        calls["ok"] += 1
        if not args.local_count:
            await counter.hincrby(f"{args.prefix}:ok", key.subject, 1)
        return {"subject": key.subject, "by": pid}

    source = CallableSource(name="upstream", priority=10, supports=lambda _k: True, fetcher=fetch)
    cache = make_cache(args, policy)
    builder = SnapshotBuilder(
        [source],
        default_policy=policy,
        cache=cache,
        clock=SystemClock(),
        max_concurrency=16,
        # Planned failures must reach the source, not be cut short by an open circuit.
        circuit_breaker=CircuitBreaker(failure_threshold=10**9) if args.fail_rate else None,
    )
    wanted = keys(args.keys)
    await wait_for_go(counter, args)
    seen: dict[str, int] = {}
    builds: list[tuple[float, float, str]] = []
    until = time.time() + args.duration
    rounds = 0
    while rounds < args.rounds or time.time() < until:
        rounds += 1
        started = time.time()
        try:
            snapshot = await builder.build(wanted, deadline_seconds=args.deadline)
        except Exception as error:
            builds.append((started, time.time(), f"{type(error).__name__}: {error}"[:300]))
            await asyncio.sleep(args.gap)
            continue
        builds.append((started, time.time(), "ok"))
        await asyncio.sleep(args.gap)
        for key in wanted:
            payload = snapshot.value(key, dict)
            assert payload["subject"] == key.subject
            if args.same:
                assert seen.setdefault(key.subject, payload["by"]) == payload["by"], "changed"
    stats = await cache.stats()
    await builder.aclose()
    await cache.aclose()
    await counter.aclose()
    return {"pid": pid, "by": seen, "builds": builds, "calls": calls, "stats": repr(stats)}


async def race(args: argparse.Namespace) -> dict[str, Any]:
    counter = Redis.from_url(args.url)
    cache = RedisCache(args.url, prefix=args.prefix)
    wanted = keys(args.keys)
    rng = random.Random(args.seed)
    newest: dict[str, float] = {}
    now = time.time()
    await wait_for_go(counter, args)

    async def writer() -> None:
        for _ in range(args.writes):
            key = rng.choice(wanted)
            observed = now - rng.uniform(0.0, 100.0)
            offered = SnapshotValue(
                key=key,
                value={"observed": observed, "by": os.getpid()},
                source="race",
                observed_at=observed,
                fetched_at=now,
                age_seconds=0.0,
                stale=False,
                from_cache=False,
                latency_ms=0.0,
            )
            await cache.set_if_newer(offered)
            newest[key.subject] = max(newest.get(key.subject, observed), observed)

    await asyncio.gather(*(writer() for _ in range(8)))
    await cache.aclose()
    await counter.aclose()
    return {"newest": newest}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["build", "race"])
    parser.add_argument("url")
    parser.add_argument("prefix")
    parser.add_argument("--cache", choices=["redis", "tiered"], default="redis")
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--lease-ttl", type=float, default=None)
    parser.add_argument("--ttl", type=float, default=600.0)
    parser.add_argument("--deadline", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=0.0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--local-count", action="store_true")
    parser.add_argument("--gap", type=float, default=0.0)
    parser.add_argument("--not-same", dest="same", action="store_false")
    parser.add_argument("--sleep-first", type=float, default=0.0)
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run = build if args.mode == "build" else race

    print(json.dumps(asyncio.run(run(args))))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
