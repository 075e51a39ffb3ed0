"""How the publisher writes into whatever cache it was given, chosen once from its capabilities.

A publication is always compared with what the cache holds at write time, whoever wrote it; the
publisher keeps no record of its own. By cache kind:

* batch-atomic (``set_many_if_newer``): one ``set_many_if_newer`` call with every candidate;
  the cache's answer is final. A result missing a key raises ``RuntimeError``.
* atomic single-key (``set_if_newer``): bounded per-key ``get``, then bounded per-key
  ``set_if_newer``; ``set`` is never called.
* legacy (only get/set): read with ``get_many`` (batch-capable caches) or bounded per-key
  ``get``, decide here, then write the winners with ``set_many`` or bounded per-key ``set``,
  under per-key stripe locks (this serializes writers *of this publisher*; writers that bypass
  it are not covered).

Reads use an infinite policy: a revision of any age is compared with. "Bounded" means at most
``max_pending_tasks`` calls in flight.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, final

from ..concurrency._bounded import run_bounded
from ..core import (
    AsyncCache,
    CacheLookup,
    CacheWriteResult,
    CacheWriteStatus,
    Clock,
    FreshnessPolicy,
    ResourceKey,
    SnapshotValue,
)
from ._copying import PayloadCopies
from ._decisions import decide_write
from ._memory_writes import Written

_INGRESS = "publication of"
_EGRESS = "publication result of"

ANY_AGE = FreshnessPolicy(math.inf, math.inf)
"""The policy of the publisher's reads: whatever revision is held, however old."""


def _method(cache: object, name: str) -> Callable[..., Any] | None:
    method = getattr(cache, name, None)
    return method if callable(method) else None


@final
class CacheWriter:
    """Compare-and-write and invalidation against one cache.

    Args:
        cache: the cache to write to.
        clock: stamps the reads.
        lock_stripes: the number of per-key locks of the legacy compare-and-write (>= 1).
        max_pending_tasks: the most per-key calls of one batch in flight (>= 1).
    """

    __slots__ = (
        "_cache",
        "_clock",
        "_get_many",
        "_invalidate_many",
        "_limit",
        "_locks",
        "_set_if_newer",
        "_set_many",
        "_set_many_if_newer",
    )

    def __init__(
        self, cache: AsyncCache, clock: Clock, lock_stripes: int, max_pending_tasks: int
    ) -> None:
        self._cache = cache
        self._clock = clock
        self._limit = max_pending_tasks
        # Capabilities are probed once, here; the write paths never probe again.
        self._set_many_if_newer = _method(cache, "set_many_if_newer")
        self._set_if_newer = _method(cache, "set_if_newer")
        batch = all(_method(cache, name) for name in ("get_many", "set_many", "invalidate_many"))
        self._get_many = _method(cache, "get_many") if batch else None
        self._set_many = _method(cache, "set_many") if batch else None
        self._invalidate_many = _method(cache, "invalidate_many")
        atomic = self._set_many_if_newer is not None or self._set_if_newer is not None
        self._locks = tuple(asyncio.Lock() for _ in range(0 if atomic else lock_stripes))

    async def write_many(
        self, values: Sequence[SnapshotValue[Any]], *, force: bool, replace_equal: bool
    ) -> tuple[dict[ResourceKey, CacheWriteResult], dict[ResourceKey, SnapshotValue[Any] | None]]:
        """Offer every value (distinct keys) to the cache.

        Returns the cache's result per key, and what was read before the write per key (empty
        when no read was made).

        Raises:
            RuntimeError: a batch-atomic cache's result leaves out a key.
        """
        if self._set_many_if_newer is not None:
            written: Mapping[ResourceKey, CacheWriteResult] = await self._set_many_if_newer(
                values, force=force, replace_equal=replace_equal
            )
            missing = [value.key for value in values if value.key not in written]
            if missing:
                raise RuntimeError(
                    "atomic cache omitted write results for: " + ", ".join(map(str, missing))
                )
            return {value.key: written[value.key] for value in values}, {}
        keys = [value.key for value in values]
        if self._set_if_newer is not None:
            held = await self._read(keys)
            set_if_newer = self._set_if_newer

            async def one(value: SnapshotValue[Any]) -> CacheWriteResult:
                result: CacheWriteResult = await set_if_newer(
                    value, force=force, replace_equal=replace_equal
                )
                return result

            results = await run_bounded(values, one, self._limit)
            return dict(zip(keys, results, strict=True)), held
        async with AsyncExitStack() as stack:
            for lock in self._stripes(keys):
                await stack.enter_async_context(lock)
            held = await self._read(keys)
            return await self._decide_and_set(values, held, force, replace_equal), held

    async def write_isolated(
        self,
        offered: Sequence[SnapshotValue[Any]],
        copies: PayloadCopies,
        *,
        trusted: bool,
        force: bool,
        replace_equal: bool,
    ) -> list[Written]:
        """:meth:`write_many` with the copies the publisher owes: a cache that is not
        ``trusted`` (an AsyncMemoryCache copies what it stores and returns) gets a copy of
        its own, and what it returns is copied again (its isolation is unknown).

        Returns, per offered value in order: the status, the value the result describes (the
        one written, or the one the cache keeps) and the previous revision.
        """
        stored = offered if trusted else await copies.isolate_values(offered, context=_INGRESS)
        written, held = await self.write_many(stored, force=force, replace_equal=replace_equal)
        statuses: list[CacheWriteStatus] = []
        values: list[SnapshotValue[Any]] = []
        previous: list[SnapshotValue[Any] | None] = []
        for offer in offered:
            result = written[offer.key]
            statuses.append(result.status)
            if result.status is CacheWriteStatus.STORED:
                values.append(result.value if trusted else offer)
                previous.append(result.previous)
                continue
            # Ignored: the result describes the revision the cache keeps.
            kept = result.value if trusted else result.previous or held.get(offer.key)
            values.append(offer if kept is None else kept)
            previous.append(kept)
        if not trusted:
            # One isolation call for everything, so large copies run in threads side by side.
            extra = [value for value in previous if value is not None]
            isolated = iter(await copies.isolate_values(values + extra, context=_EGRESS))
            values = [next(isolated) for _ in values]
            previous = [None if value is None else next(isolated) for value in previous]
            for index, status in enumerate(statuses):
                if status is not CacheWriteStatus.STORED:
                    values[index] = previous[index] or values[index]
        return list(zip(statuses, values, previous, strict=True))

    async def _decide_and_set(
        self,
        values: Sequence[SnapshotValue[Any]],
        held: Mapping[ResourceKey, SnapshotValue[Any] | None],
        force: bool,
        replace_equal: bool,
    ) -> dict[ResourceKey, CacheWriteResult]:
        """The legacy path: decide against what was read, then store the winners."""
        results: dict[ResourceKey, CacheWriteResult] = {}
        winners: list[SnapshotValue[Any]] = []
        for value in values:
            before = held[value.key]
            status = decide_write(before, value, force=force, replace_equal=replace_equal)
            results[value.key] = CacheWriteResult(status, value, before)
            if status is CacheWriteStatus.STORED:
                winners.append(value)
        if winners and self._set_many is not None:
            await self._set_many(winners)
        elif winners:
            await run_bounded(winners, self._cache.set, self._limit)
        return results

    async def _read(self, keys: Sequence[ResourceKey]) -> dict[ResourceKey, Any]:
        """What the cache holds for each key, of any age (``None`` when nothing)."""
        now = self._clock.now()
        if self._get_many is not None:
            found: Mapping[ResourceKey, CacheLookup] = await self._get_many(
                keys, now=now, policies=dict.fromkeys(keys, ANY_AGE)
            )
            return {key: found[key].value if key in found else None for key in keys}
        get = self._cache.get

        async def one(key: ResourceKey) -> SnapshotValue[Any] | None:
            lookup = await get(key, now=now, policy=ANY_AGE)
            return lookup.value

        return dict(zip(keys, await run_bounded(keys, one, self._limit), strict=True))

    async def invalidate(self, key: ResourceKey) -> None:
        """Drop ``key`` (under its stripe lock on a legacy cache)."""
        async with AsyncExitStack() as stack:
            for lock in self._stripes((key,)):
                await stack.enter_async_context(lock)
            await self._cache.invalidate(key)

    async def invalidate_many(self, keys: Sequence[ResourceKey]) -> None:
        """Drop every key: one ``invalidate_many`` call, or bounded per-key invalidations."""
        if self._invalidate_many is not None:
            await self._invalidate_many(keys)
            return
        await run_bounded(keys, self.invalidate, self._limit)

    def _stripes(self, keys: Sequence[ResourceKey]) -> list[asyncio.Lock]:
        """The stripe locks of ``keys``, each once, in one global order (no deadlock)."""
        locks = self._locks
        if not locks:
            return []
        return [locks[index] for index in sorted({hash(key) % len(locks) for key in keys})]
