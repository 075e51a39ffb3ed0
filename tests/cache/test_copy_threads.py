"""Payload copies: which run in worker threads, how many at once, and cancellation."""

from __future__ import annotations

import asyncio
import copy
import threading
from typing import Any

import pytest

from coalestra.cache import AsyncMemoryCache
from coalestra.core import FreshnessPolicy, PayloadIsolationError, ResourceKey, SnapshotValue

KEY = ResourceKey("market", "book", "BTC")
POLICY = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)
T0 = 1_000.0
LARGE = 257  # one more than the documented 256-item threshold
SMALL = 256


def value(key: ResourceKey, payload: Any) -> SnapshotValue[Any]:
    return SnapshotValue(key, payload, "rest", T0, T0, 0.0, False, False, 0.0)


class TrackedList(list[int]):
    """A list that records the thread each deep copy runs on."""

    threads: list[int]

    def __deepcopy__(self, memo: dict[int, Any]) -> TrackedList:
        self.threads.append(threading.get_ident())
        clone = TrackedList(self)
        clone.threads = self.threads
        return clone


def tracked(items: int) -> TrackedList:
    payload = TrackedList(range(items))
    payload.threads = []
    return payload


class ThreadRecorder:
    """A custom copier recording which thread it ran on."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def __call__(self, payload: Any) -> Any:
        self.threads.append(threading.get_ident())
        return copy.deepcopy(payload)


async def test_default_copier_offloads_large_copies_only() -> None:
    cache = AsyncMemoryCache()
    loop_thread = threading.get_ident()
    large, small = tracked(LARGE), tracked(SMALL)
    await cache.set_many([value(KEY, large), value(ResourceKey("m", "n", "small"), small)])
    # Each stored value is copied twice: the cache's copy and the write result's copy.
    assert len(large.threads) == 2
    assert loop_thread not in large.threads
    assert small.threads == [loop_thread] * 2
    await cache.get(KEY, now=T0, policy=POLICY)  # the read copy is offloaded too
    assert len(large.threads) == 3
    assert large.threads[2] != loop_thread


async def test_large_is_judged_inside_nested_containers() -> None:
    cache = AsyncMemoryCache()
    table = tracked(SMALL)
    await cache.set(value(KEY, {"rows": [[i, str(i)] for i in range(LARGE)], "probe": table}))
    assert len(table.threads) == 2
    assert threading.get_ident() not in table.threads


async def test_default_copier_stays_inline_when_disabled() -> None:
    cache = AsyncMemoryCache(run_payload_copies_in_thread=False)
    large = tracked(LARGE)
    await cache.set(value(KEY, large))
    assert large.threads == [threading.get_ident()] * 2


async def test_custom_copier_is_inline_by_default() -> None:
    copier = ThreadRecorder()
    cache = AsyncMemoryCache(payload_copier=copier)
    await cache.set(value(KEY, list(range(LARGE))))
    assert copier.threads == [threading.get_ident()] * 2


async def test_explicit_threads_offload_every_copy_whatever_its_size() -> None:
    copier = ThreadRecorder()
    cache = AsyncMemoryCache(payload_copier=copier, run_payload_copies_in_thread=True)
    await cache.set(value(KEY, list(range(LARGE))))
    await cache.set(value(ResourceKey("m", "n", "small"), [1, 2]))
    await cache.set(value(ResourceKey("m", "n", "text"), "immutable, still copied"))
    assert len(copier.threads) == 6
    assert threading.get_ident() not in copier.threads


async def test_thread_copy_failure_is_a_payload_isolation_error_naming_the_key() -> None:
    def copier(payload: Any) -> Any:
        raise RuntimeError("not thread-safe today")

    cache = AsyncMemoryCache(payload_copier=copier, run_payload_copies_in_thread=True)
    with pytest.raises(PayloadIsolationError, match="market:book:BTC"):
        await cache.set(value(KEY, list(range(LARGE))))
    assert await cache.size() == 0


class ConcurrencyProbe:
    """A thread-safe copier that counts how many of its calls overlap.

    Calls meet at a two-party barrier, so two copies must run at once for any of them to finish:
    with ``max_copy_concurrency=2`` that proves both the parallelism and (via ``peak``) the bound.
    """

    def __init__(self, parties: int) -> None:
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(parties, timeout=10.0)
        self.active = 0
        self.peak = 0
        self.calls = 0

    def __call__(self, payload: Any) -> Any:
        with self._lock:
            self.active += 1
            self.calls += 1
            self.peak = max(self.peak, self.active)
        try:
            self._barrier.wait()
            return list(payload)
        finally:
            with self._lock:
                self.active -= 1


async def test_thread_copies_are_bounded_by_max_copy_concurrency() -> None:
    probe = ConcurrencyProbe(parties=2)
    cache = AsyncMemoryCache(
        payload_copier=probe, run_payload_copies_in_thread=True, max_copy_concurrency=2
    )
    values = [value(ResourceKey("m", "book", str(i)), list(range(LARGE))) for i in range(6)]
    await cache.set_many(values)
    assert probe.calls == 12  # the stored copy and the result's copy of each
    assert probe.peak == 2
    assert await cache.size() == 6
    keys = [v.key for v in values]
    result = await cache.get_many(keys, now=T0, policies=dict.fromkeys(keys, POLICY))
    assert probe.calls == 18
    assert probe.peak == 2
    assert all(lookup.fresh for lookup in result.values())


class GatedCopier:
    """A copier that blocks in its thread until released."""

    def __init__(self) -> None:
        self.entered = [threading.Event(), threading.Event()]
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, payload: Any) -> Any:
        index = self.calls
        self.calls += 1
        self.entered[min(index, 1)].set()
        if index == 0:
            assert self.release.wait(10.0)
        return list(payload)


async def test_cancelled_copy_keeps_its_slot_until_the_thread_finishes() -> None:
    copier = GatedCopier()
    cache = AsyncMemoryCache(
        payload_copier=copier, run_payload_copies_in_thread=True, max_copy_concurrency=1
    )
    first = asyncio.create_task(cache.set(value(KEY, list(range(LARGE)))))
    assert await asyncio.to_thread(copier.entered[0].wait, 10.0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await cache.size() == 0  # the cancelled write stored nothing

    second = asyncio.create_task(cache.set(value(ResourceKey("m", "b", "2"), list(range(LARGE)))))
    for _ in range(20):
        await asyncio.sleep(0)
    # The first thread is still running, so its slot is still taken: no second copy yet.
    assert not copier.entered[1].is_set()
    assert not second.done()

    copier.release.set()
    await second
    assert copier.calls == 3  # the cancelled write's first copy, then both of the second
    assert await cache.size() == 1
