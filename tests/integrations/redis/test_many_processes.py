"""Many worker processes, each with its own builder, on one Redis (the issue's acceptance runs).

Workers are real processes (``workers.py``). Source calls are counted in Redis with ``INCR``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from tests.integrations.redis.conftest import RedisServer, key

from coalestra.core import FreshnessPolicy
from coalestra.integrations.redis import RedisCache

WORKERS = Path(__file__).with_name("workers.py")
# Generous: a worker takes a few seconds, many times that on a loaded two-core machine.
RUN_TIMEOUT = 90.0
STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def reap_workers() -> Iterator[None]:
    """Kill and reap what a failed test left running: no process or pipe leaks into later tests."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
        process.communicate()


def start(mode: str, url: str, prefix: str, *options: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(WORKERS), mode, url, prefix, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    STARTED.append(process)
    return process


def result(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate(timeout=RUN_TIMEOUT)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def until(predicate: Any, what: str) -> None:
    """Poll ``predicate()`` (async) every few milliseconds for at most ``RUN_TIMEOUT``."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def go(raw: Redis, prefix: str, ready: int, tokens: int) -> None:
    """When ``ready`` workers said so, release ``tokens`` of them at once (a fair race)."""

    async def all_ready() -> bool:
        return int(await raw.get(f"{prefix}:ready") or 0) >= ready

    await until(all_ready, "the workers to start")
    await raw.rpush(f"{prefix}:go", *range(tokens))


@pytest.mark.parametrize("cache", ["redis", "tiered"])
async def test_four_processes_make_one_source_call_per_key(
    redis_url: str, prefix: str, raw: Redis, cache: str
) -> None:
    options = ("--cache", cache, "--keys", "100", "--rounds", "50")
    workers = [start("build", redis_url, prefix, *options) for _ in range(4)]
    await go(raw, prefix, 4, 4)
    summaries = [result(worker) for worker in workers]
    assert int(await raw.get(f"{prefix}:calls")) == 100
    # Every process was served the one fetched revision of each key.
    assert len({json.dumps(s["by"], sort_keys=True) for s in summaries}) == 1


async def test_a_killed_lease_holder_s_keys_are_served_by_another_process_within_2_s(
    redis_url: str, prefix: str, raw: Redis
) -> None:
    # Default settings. The owner fetches 5 keys; its first call hangs, so nothing of that
    # priority level is written (a level is written in one call once it is done, B-CACHE-17).
    # It is killed mid-fetch, holding the leases of the 5 keys.
    options = ("--keys", "5")
    owner = start("build", redis_url, prefix, *options, "--sleep-first", "60")
    await go(raw, prefix, 1, 1)
    await until(lambda: raw.exists(f"{prefix}:fetching"), "the owner to start fetching")
    waiters = [start("build", redis_url, prefix, *options) for _ in range(2)]
    await go(raw, prefix, 3, 2)
    await asyncio.sleep(0.5)  # the waiters are waiting on the owner's renewed lease
    killed_at = time.time()
    os.kill(owner.pid, signal.SIGKILL)
    owner.communicate(timeout=RUN_TIMEOUT)  # reaps it and closes its pipes
    summaries = [result(waiter) for waiter in waiters]
    assert summaries[0]["by"] == summaries[1]["by"]  # both served the same revisions
    by = summaries[0]["by"]
    assert owner.pid not in by.values()  # the owner wrote nothing before dying
    assert int(await raw.get(f"{prefix}:calls")) == 10  # its 5 calls and 5 taken over
    for summary in summaries:
        ((_started, ended, outcome),) = summary["builds"]
        assert outcome == "ok"
        assert ended - killed_at < 2.0, f"served {ended - killed_at:.2f} s after the kill"
        print(f"takeover: served {ended - killed_at:.2f} s after the kill")


async def test_four_workers_with_a_failing_source_never_deadlock(
    redis_url: str, prefix: str, raw: Redis
) -> None:
    # 200 keys, a source failing 30 % of its calls, 4 processes building all keys each round:
    # every lease holder either writes or gives up, so nobody waits forever on anybody.
    deadline = 10.0
    options = ("--keys", "200", "--rounds", "12", "--fail-rate", "0.3")
    options += ("--deadline", str(deadline), "--not-same")
    workers = [start("build", redis_url, prefix, *options) for _ in range(4)]
    await go(raw, prefix, 4, 4)
    summaries = [result(worker) for worker in workers]
    builds = [build for summary in summaries for build in summary["builds"]]
    assert len(builds) == 48
    slowest = max(ended - started for started, ended, _ in builds)
    assert slowest < deadline + 1.0, f"a build took {slowest:.1f} s"
    assert any(outcome == "ok" for _, _, outcome in builds)
    # One successful call per key (the TTL is 10 minutes): failures are retried, by the
    # holder or by a waiter that took its lease over, but never fetched twice.
    successes = {k.decode(): int(n) for k, n in (await raw.hgetall(f"{prefix}:ok")).items()}
    assert len(successes) == 200
    assert max(successes.values()) == 1, sorted(successes.items(), key=lambda kv: -kv[1])[:5]


async def test_eight_workers_ride_out_a_five_second_redis_pause(
    own_server: RedisServer, prefix: str
) -> None:
    # Default settings, a 1 s TTL so that leases are taken all the time. Redis is paused (as
    # by a long fork, a VM stall or a debugger) for 5 s: builds during the pause wait at most
    # the socket timeout per command, then work alone. After the resume, the requests Redis
    # applies late are leases nobody renews: they die within a lease lifetime (and their
    # requesters delete them once Redis answers), so builds started 2 s after it all succeed.
    raw = Redis.from_url(own_server.url)
    options = ("--keys", "40", "--ttl", "1", "--rounds", "0", "--duration", "10.5")
    options += ("--deadline", "5", "--local-count", "--not-same", "--gap", "0.1")
    workers = [
        start("build", own_server.url, prefix, *options, "--cache", cache)
        for cache in ("redis", "tiered") * 4
    ]
    await go(raw, prefix, 8, 8)
    await raw.aclose()
    await asyncio.sleep(1.0)
    assert own_server.process is not None
    os.kill(own_server.process.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(5.0)
    finally:
        os.kill(own_server.process.pid, signal.SIGCONT)
    resumed = time.time()
    summaries = [result(worker) for worker in workers]
    after = [b for s in summaries for b in s["builds"] if b[0] >= resumed + 2.0]
    failed = [b for b in after if b[2] != "ok"]
    assert not failed, failed[:3]
    assert all(any(b[0] >= resumed + 2.0 for b in s["builds"]) for s in summaries)
    report(summaries, resumed)


def report(summaries: list[dict[str, Any]], resumed: float) -> None:
    """Print what the pause did (``pytest -s`` shows it; docs/running-many-workers.md quotes
    it)."""
    builds = [b for s in summaries for b in s["builds"]]
    paused = [b for b in builds if resumed - 5.0 <= b[0] < resumed]
    soon = [b for b in builds if resumed <= b[0] < resumed + 2.0]
    for name, part in (("during", paused), ("first 2 s after", soon)):
        failed = sum(1 for b in part if b[2] != "ok")
        longest = max((b[1] - b[0] for b in part), default=0.0)
        print(f"pause: {name}: {len(part)} builds, {failed} failed, longest {longest:.2f} s")


async def test_racing_conditional_writers_keep_the_newest_value(
    redis_url: str, prefix: str, raw: Redis
) -> None:
    workers = [
        start("race", redis_url, prefix, "--keys", "10", "--writes", "60", "--seed", str(seed))
        for seed in range(4)
    ]
    await go(raw, prefix, 4, 4)
    newest: dict[str, float] = {}
    for summary in (result(worker) for worker in workers):
        for subject, observed in summary["newest"].items():
            newest[subject] = max(newest.get(subject, observed), observed)
    reader = RedisCache(redis_url, prefix=prefix)
    keys = [key(subject) for subject in newest]
    policy = FreshnessPolicy(ttl_seconds=3600.0, max_stale_seconds=3600.0)
    found = await reader.get_many(keys, now=time.time(), policies=dict.fromkeys(keys, policy))
    await reader.aclose()
    for k in keys:
        stored = found[k].value
        assert stored is not None
        assert stored.observed_at == newest[k.subject]
        assert stored.value["observed"] == newest[k.subject]
