"""The per-key calls of a cache without batch reads or writes (see :mod:`._cache_access`):
``min(limit, n)`` concurrent calls, in input order; the first failure cancels the calls in
flight and starts no more. Off the path of the built-in cache, which batches."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..concurrency._bounded import run_bounded
from ..core import (
    AsyncCache,
    CacheLookup,
    CacheWriteResult,
    FreshnessPolicy,
    ResourceKey,
    SnapshotValue,
)


async def get_each(
    cache: AsyncCache,
    keys: Sequence[ResourceKey],
    now: float,
    policies: Mapping[ResourceKey, FreshnessPolicy],
    limit: int,
) -> dict[ResourceKey, CacheLookup]:
    """One ``get`` per key."""
    get = cache.get

    async def one(key: ResourceKey) -> CacheLookup:
        return await get(key, now=now, policy=policies[key])

    return dict(zip(keys, await run_bounded(keys, one, limit), strict=True))


async def write_each(
    cache: AsyncCache,
    values: Sequence[SnapshotValue[Any]],
    set_if_newer: Callable[[SnapshotValue[Any]], Awaitable[CacheWriteResult]] | None,
    limit: int,
) -> dict[ResourceKey, CacheWriteResult | None]:
    """One ``set_if_newer`` per value, else one ``set`` (``None``: no comparison made)."""
    if set_if_newer is not None:
        results = await run_bounded(values, set_if_newer, limit)
        return {value.key: result for value, result in zip(values, results, strict=True)}
    await run_bounded(values, cache.set, limit)
    return dict.fromkeys((value.key for value in values), None)
