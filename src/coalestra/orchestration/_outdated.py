"""Derived hits of a cache that does not check dependency versions itself: a hit computed from
a revision the cache no longer holds is a miss (and is invalidated), so no snapshot serves a
derived value beside another revision of its input.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..core import AsyncCache, CacheLookup, FreshnessPolicy, ResourceKey, SnapshotValue
from ..core._lookups import MISS

ANY_AGE = FreshnessPolicy(math.inf, math.inf)
"""Dependency checks read whatever revision is held, however old."""


async def drop_outdated(
    cache: AsyncCache,
    found: Mapping[ResourceKey, CacheLookup],
    now: float,
    invalidate: Callable[[Sequence[ResourceKey]], Awaitable[None]],
) -> Mapping[ResourceKey, CacheLookup]:
    """Treat derived hits whose dependencies are missing or at another version as misses,
    and ``invalidate`` them.

    Each dependency is read once with ``get`` under an infinite policy, transitively.
    """
    derived = [
        key
        for key, lookup in found.items()
        if lookup.value is not None and lookup.value.dependency_versions
    ]
    if not derived:
        return found
    memo: dict[ResourceKey, SnapshotValue[Any] | None] = {}
    current: dict[ResourceKey, bool] = {}
    outdated = [
        key
        for key in derived
        if not await _current(cache, found[key].value, now, memo, current)  # type: ignore[arg-type]
    ]
    if not outdated:
        return found
    await invalidate(outdated)
    return {**found, **dict.fromkeys(outdated, MISS)}


async def _current(
    cache: AsyncCache,
    value: SnapshotValue[Any],
    now: float,
    memo: dict[ResourceKey, SnapshotValue[Any] | None],
    current: dict[ResourceKey, bool],
) -> bool:
    known = current.get(value.key)
    if known is not None:
        return known
    current[value.key] = False  # while in progress: a dependency cycle is not current
    for dependency, version in value.dependency_versions.items():
        if dependency not in memo:
            lookup = await cache.get(dependency, now=now, policy=ANY_AGE)
            memo[dependency] = lookup.value
        held = memo[dependency]
        if held is None or held.version != version:
            return False
        if held.dependency_versions and not await _current(cache, held, now, memo, current):
            return False
    current[value.key] = True
    return True
