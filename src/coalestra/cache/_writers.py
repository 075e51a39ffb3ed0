"""How the publisher writes into whatever cache it was given, chosen once from its capabilities.

* An :class:`~coalestra.core.AtomicAsyncCache` compares and writes itself (``set_if_newer``).
* A plain :class:`~coalestra.core.AsyncCache` (only get/set) gets compare-and-write emulated:
  ``get`` + compare + ``set`` under one of ``lock_stripes`` asyncio locks chosen by the key's hash.
  This serializes writers *of this publisher* per key; writers that bypass it are not covered.
* A :class:`~coalestra.core.BatchAtomicAsyncCache` takes a whole batch in one
  ``set_many_if_newer`` call; otherwise a batch becomes per-key writes run by at most
  ``max_pending_tasks`` workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, final

from ..concurrency._bounded import run_bounded
from ..core import (
    AsyncCache,
    AtomicAsyncCache,
    BatchAsyncCache,
    BatchAtomicAsyncCache,
    CacheWriteResult,
    CacheWriteStatus,
    Clock,
    FreshnessPolicyProvider,
    ResourceKey,
    SnapshotValue,
)
from ._store import decide_write


@final
class CacheWriter:
    """Compare-and-write and invalidation against one cache.

    Args:
        cache: the cache to write to.
        clock: stamps the reads of the emulated compare-and-write.
        policy_resolver: gives the policy those reads need.
        lock_stripes: the number of per-key locks of the emulated compare-and-write (>= 1).
        max_pending_tasks: the most per-key writes of one batch in flight (>= 1).
    """

    __slots__ = (
        "_atomic",
        "_batch",
        "_batch_atomic",
        "_cache",
        "_clock",
        "_limit",
        "_locks",
        "_policy_resolver",
    )

    def __init__(
        self,
        cache: AsyncCache,
        *,
        clock: Clock,
        policy_resolver: FreshnessPolicyProvider,
        lock_stripes: int,
        max_pending_tasks: int,
    ) -> None:
        self._cache = cache
        self._clock = clock
        self._policy_resolver = policy_resolver
        self._limit = max_pending_tasks
        # Capabilities are probed once, here; the write paths never probe again. Batch paths
        # are used only with an atomic cache: emulated writes need their per-key locks.
        self._atomic = cache if isinstance(cache, AtomicAsyncCache) else None
        atomic = self._atomic is not None
        self._batch_atomic = cache if atomic and isinstance(cache, BatchAtomicAsyncCache) else None
        self._batch = cache if atomic and isinstance(cache, BatchAsyncCache) else None
        count = 0 if atomic else lock_stripes
        self._locks = tuple(asyncio.Lock() for _ in range(count))

    async def write(
        self, value: SnapshotValue[Any], *, force: bool, replace_equal: bool
    ) -> CacheWriteResult:
        """Store ``value`` unless the cache holds a revision that wins over it."""
        if self._atomic is not None:
            return await self._atomic.set_if_newer(value, force=force, replace_equal=replace_equal)
        key = value.key
        async with self._stripe(key):
            lookup = await self._cache.get(
                key, now=self._clock.now(), policy=self._policy_resolver.resolve(key)
            )
            status = decide_write(lookup.value, value, force=force, replace_equal=replace_equal)
            if status is CacheWriteStatus.STORED:
                await self._cache.set(value)
        return CacheWriteResult(status, value, lookup.value)

    async def write_many(
        self, values: Sequence[SnapshotValue[Any]], *, force: bool, replace_equal: bool
    ) -> Mapping[ResourceKey, CacheWriteResult]:
        """Write values for distinct keys: one batch call if the cache can, else pooled writes."""
        if self._batch_atomic is not None:
            return await self._batch_atomic.set_many_if_newer(
                values, force=force, replace_equal=replace_equal
            )

        async def one(value: SnapshotValue[Any]) -> CacheWriteResult:
            return await self.write(value, force=force, replace_equal=replace_equal)

        results = await run_bounded(values, one, self._limit)
        return {value.key: result for value, result in zip(values, results, strict=True)}

    async def invalidate(self, key: ResourceKey) -> None:
        """Drop ``key`` (under its stripe lock when compare-and-write is emulated)."""
        if self._atomic is not None:
            await self._cache.invalidate(key)
            return
        async with self._stripe(key):
            await self._cache.invalidate(key)

    async def invalidate_many(self, keys: Sequence[ResourceKey]) -> None:
        """Drop every key: one batch call if the cache can, else pooled per-key invalidations."""
        if self._batch is not None:
            await self._batch.invalidate_many(keys)
            return
        await run_bounded(keys, self.invalidate, self._limit)

    def _stripe(self, key: ResourceKey) -> asyncio.Lock:
        return self._locks[hash(key) % len(self._locks)]
