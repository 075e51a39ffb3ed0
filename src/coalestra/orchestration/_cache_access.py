"""How the engine talks to whatever cache it was given.

The cache's capabilities (batch reads, atomic conditional writes, authority validation) are read
once here. A cache that raises degrades the build instead of failing it: a failed read is a miss,
a failed write leaves the value served but uncached; both are counted for health.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, final

from ..concurrency._bounded import run_bounded
from ..core import (
    AsyncCache,
    CacheLookup,
    CacheWriteResult,
    FreshnessPolicy,
    PayloadIsolationError,
    ResourceKey,
    SnapshotValue,
)
from ..core._protocols import LeasingCache
from ..core._values import MISS

_ANY_AGE = FreshnessPolicy(math.inf, math.inf)
"""Dependency checks read whatever revision is held, however old."""


def _method(cache: object, name: str) -> Callable[..., Any] | None:
    method = getattr(cache, name, None)
    return method if callable(method) else None


@final
class CacheAccess:
    """The engine's single door to the cache."""

    __slots__ = (
        "_get_many",
        "_invalidate_many",
        "_leases",
        "_limit",
        "_set_if_newer",
        "_set_many_if_newer",
        "_validates_dependencies",
        "cache",
        "read_failures",
        "validates_authority",
        "write_failures",
    )

    def __init__(self, cache: AsyncCache, *, max_pending_tasks: int = 8) -> None:
        for required in ("get", "set", "invalidate", "clear"):
            if _method(cache, required) is None:
                raise TypeError(f"cache must implement AsyncCache: it has no {required}() method")
        self.cache = cache
        self._get_many = _method(cache, "get_many")
        self._invalidate_many = _method(cache, "invalidate_many")
        # Per-key calls on single-key caches run bounded: neither one by one nor unbounded.
        self._limit = max_pending_tasks
        self._set_many_if_newer = _method(cache, "set_many_if_newer")
        self._set_if_newer = _method(cache, "set_if_newer")
        self.validates_authority = getattr(cache, "validates_source_authority", False) is True
        self._validates_dependencies = (
            getattr(cache, "validates_dependency_versions", False) is True
        )
        self._leases: LeasingCache | None = cache if isinstance(cache, LeasingCache) else None
        self.read_failures = 0
        self.write_failures = 0

    async def read(
        self,
        keys: Sequence[ResourceKey],
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> Mapping[ResourceKey, CacheLookup]:
        """Look every key up (one batched call when the cache supports it).

        A cache that does not declare ``validates_dependency_versions = True`` gets its derived
        hits checked here (see :meth:`_drop_outdated`).
        """
        try:
            if self._get_many is not None:
                found: Mapping[ResourceKey, CacheLookup] = await self._get_many(
                    keys, now=now, policies=policies
                )
            else:
                get = self.cache.get

                async def one(key: ResourceKey) -> CacheLookup:
                    return await get(key, now=now, policy=policies[key])

                found = dict(zip(keys, await run_bounded(keys, one, self._limit), strict=True))
        except PayloadIsolationError:
            raise
        except Exception:
            self.read_failures += 1
            return dict.fromkeys(keys, MISS)
        if self._validates_dependencies:
            return found
        return await self._drop_outdated(found, now)

    async def _drop_outdated(
        self, found: Mapping[ResourceKey, CacheLookup], now: float
    ) -> Mapping[ResourceKey, CacheLookup]:
        """Treat derived hits whose dependencies are missing or at another version as misses,
        and invalidate them (one ``invalidate_many`` call, or bounded per-key ``invalidate``).

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
            if not await self._current(found[key].value, now, memo, current)  # type: ignore[arg-type]
        ]
        if not outdated:
            return found
        await self.invalidate(outdated)
        return {**found, **dict.fromkeys(outdated, MISS)}

    async def _current(
        self,
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
                lookup = await self.cache.get(dependency, now=now, policy=_ANY_AGE)
                memo[dependency] = lookup.value
            held = memo[dependency]
            if held is None or held.version != version:
                return False
            if held.dependency_versions and not await self._current(held, now, memo, current):
                return False
        current[value.key] = True
        return True

    async def write(
        self, values: Collection[SnapshotValue[Any]]
    ) -> Mapping[ResourceKey, CacheWriteResult | None]:
        """Store ``values`` monotonically; ``None`` results mean "stored, no comparison made".

        Raises:
            PayloadIsolationError: a payload could not be copied (nothing of the batch stored).
        """
        try:
            if self._set_many_if_newer is not None:
                written: Mapping[ResourceKey, CacheWriteResult] = await self._set_many_if_newer(
                    values
                )
                return written
            ordered = list(values)
            if self._set_if_newer is not None:
                results = await run_bounded(ordered, self._set_if_newer, self._limit)
                return {value.key: result for value, result in zip(ordered, results, strict=True)}
            await run_bounded(ordered, self.cache.set, self._limit)
            return dict.fromkeys((value.key for value in ordered), None)
        except PayloadIsolationError:
            raise
        except Exception:
            self.write_failures += 1
            return dict.fromkeys((value.key for value in values), None)

    async def invalidate(self, keys: Sequence[ResourceKey]) -> None:
        """Drop ``keys``: one ``invalidate_many`` call, or bounded per-key ``invalidate``."""
        if not keys:
            return
        if self._invalidate_many is not None:
            await self._invalidate_many(keys)
            return
        await run_bounded(keys, self.cache.invalidate, self._limit)

    @property
    def coordinates_fetches(self) -> bool:
        """True when the cache leases fetches across processes."""
        return self._leases is not None

    async def lease(self, keys: Sequence[ResourceKey]) -> set[ResourceKey]:
        """Lease ``keys`` for this process; a failing tier grants every lease (fetch locally)."""
        if self._leases is None:
            return set(keys)
        try:
            return set(await self._leases.lease_many(keys))
        except Exception:
            self.read_failures += 1
            return set(keys)

    async def release(self, keys: Sequence[ResourceKey]) -> None:
        """Give leases back; failures are counted (the leases expire on their own)."""
        if self._leases is None or not keys:
            return
        try:
            await self._leases.release_many(keys)
        except Exception:
            self.write_failures += 1

    async def wait_for(
        self,
        keys: Sequence[ResourceKey],
        *,
        wait_seconds: float | None,
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> Mapping[ResourceKey, CacheLookup]:
        """Wait for values another process is fetching; a failing tier returns none."""
        if self._leases is None:
            return {}
        try:
            return await self._leases.wait_for_many(
                keys, wait_seconds=wait_seconds, now=now, policies=policies
            )
        except Exception:
            self.read_failures += 1
            return {}
