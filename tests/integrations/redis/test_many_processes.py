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
from tests.integrations.redis.conftest import key

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


async def test_a_killed_owner_s_keys_are_fetched_by_another_process(
    redis_url: str, prefix: str, raw: Redis
) -> None:
    # The owner fetches 5 keys; its first call hangs, the other 4 are written at once.
    options = ("--keys", "5", "--lease-ttl", "0.5")
    owner = start("build", redis_url, prefix, *options, "--sleep-first", "60")
    await go(raw, prefix, 1, 1)
    await until(lambda: raw.exists(f"{prefix}:fetching"), "the owner to start fetching")
    waiters = [start("build", redis_url, prefix, *options) for _ in range(2)]
    await go(raw, prefix, 3, 2)
    os.kill(owner.pid, signal.SIGKILL)  # mid-fetch: its leases stay until they expire
    owner.communicate(timeout=RUN_TIMEOUT)  # reaps it and closes its pipes
    summaries = [result(waiter) for waiter in waiters]
    assert summaries[0]["by"] == summaries[1]["by"]  # both served the same revisions
    by = summaries[0]["by"]
    assert sorted(by.values()).count(owner.pid) == 4  # what the owner wrote before dying
    assert int(await raw.get(f"{prefix}:calls")) == 6  # its 5 calls and one takeover


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
