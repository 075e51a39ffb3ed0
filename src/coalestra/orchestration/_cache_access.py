"""How the engine talks to whatever cache it was given.

The cache's capabilities (batch reads and writes, atomic conditional writes, authority and
dependency validation) are read once here. Reads use ``get_many`` when the cache has it, else one
``get`` per key; writes use the first of ``set_many_if_newer``, ``set_many``, ``set_if_newer`` and
``set`` the cache has. Per-key calls run in ``min(max_pending_tasks, n)`` concurrent workers, in
input order. An exception the cache raises is not wrapped or swallowed: it propagates to the
caller (the first failure of per-key calls cancels the calls in flight and starts no more).
Only the cross-process lease calls degrade: without them, this process fetches itself.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, final

from ..cache import AsyncMemoryCache
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
from ..core._isolation import PayloadIsolator, located
from ..core._lookups import MISS
from ..core._protocols import LeasingCache
from ._policy import PolicyResolver

Served = tuple[
    dict[ResourceKey, SnapshotValue[Any]], list[ResourceKey], dict[ResourceKey, FreshnessPolicy]
]
"""A build's first read: fresh hits as served, the keys among them due a refresh-ahead, and
every other key with its policy (to :meth:`CacheAccess.read`)."""

ANY_AGE = FreshnessPolicy(math.inf, math.inf)
"""Dependency checks read whatever revision is held, however old."""


def _method(cache: object, name: str) -> Callable[..., Any] | None:
    method = getattr(cache, name, None)
    return method if callable(method) else None


def _constant_policy(
    policy_for: Callable[[ResourceKey], FreshnessPolicy],
) -> FreshnessPolicy | None:
    """The one policy ``policy_for`` gives every key, when it is known without asking."""
    resolver = getattr(policy_for, "__self__", None)
    return resolver.constant if isinstance(resolver, PolicyResolver) else None


@final
class CacheAccess:
    """The engine's single door to the cache."""

    __slots__ = (
        "_get_many",
        "_invalidate_many",
        "_isolator",
        "_leases",
        "_limit",
        "_memory",
        "_set_if_newer",
        "_set_many",
        "_set_many_if_newer",
        "batch_reads",
        "batch_writes",
        "cache",
        "validates_authority",
        "validates_dependencies",
    )

    def __init__(
        self,
        cache: AsyncCache,
        *,
        max_pending_tasks: int = 8,
        isolator: PayloadIsolator | None = None,
    ) -> None:
        for required in ("get", "set", "invalidate", "clear"):
            if _method(cache, required) is None:
                raise TypeError(f"cache must implement AsyncCache: it has no {required}() method")
        self.cache = cache
        self._get_many = _method(cache, "get_many")
        self._invalidate_many = _method(cache, "invalidate_many")
        # Per-key calls on single-key caches run bounded: neither one by one nor unbounded.
        self._limit = max_pending_tasks
        self._set_many_if_newer = _method(cache, "set_many_if_newer")
        self._set_many = _method(cache, "set_many")
        self._set_if_newer = _method(cache, "set_if_newer")
        # Batch-capable caches (get_many, set_many and invalidate_many): only their batch calls
        # count in the diagnostics' cache_batch_reads / cache_batch_writes.
        batch = all(_method(cache, n) for n in ("get_many", "set_many", "invalidate_many"))
        self.batch_reads = batch and self._get_many is not None
        self.batch_writes = batch and (
            self._set_many_if_newer is not None or self._set_many is not None
        )
        self.validates_authority = getattr(cache, "validates_source_authority", False) is True
        self.validates_dependencies = getattr(cache, "validates_dependency_versions", False) is True
        self._leases: LeasingCache | None = cache if isinstance(cache, LeasingCache) else None
        # The built-in cache serves a build's fresh hits itself, in one synchronous loop (not a
        # subclass: it may override get_many, which that loop does not call).
        self._memory = cache if type(cache) is AsyncMemoryCache else None
        # B-CACHE-11: a payload read from a cache crosses a boundary. The built-in caches hand
        # out private copies themselves (the memory cache copies, Redis decodes anew); any other
        # cache's hits are copied here, unless it declares ``returns_private_copies = True``.
        private = isinstance(cache, AsyncMemoryCache) or (
            getattr(cache, "returns_private_copies", False) is True
        )
        self._isolator = None if private else isolator

    def serve(
        self,
        keys: Sequence[ResourceKey],
        now: float,
        policy_for: Callable[[ResourceKey], FreshnessPolicy],
    ) -> Served:
        """A build's first read of ``keys`` at ``now``: the fresh hits the cache can serve at
        once (each a new value restamped as served, see ``cache._serving.serve``); every other key
        comes back with its policy, for :meth:`read`. Only the built-in cache serves; with any
        other cache every key comes back.

        Raises:
            Exception: whatever the policy resolver or the cache raised.
        """
        constant = _constant_policy(policy_for)
        if self._memory is None:
            if constant is not None:
                return {}, [], dict.fromkeys(keys, constant)
            return {}, [], {key: policy_for(key) for key in keys}
        policies = constant if constant is not None else list(map(policy_for, keys))
        return self._memory._serve(keys, now, policies)

    async def read(
        self,
        keys: Sequence[ResourceKey],
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> Mapping[ResourceKey, CacheLookup]:
        """Look every key up (one batched call when the cache supports it).

        A cache that does not declare ``validates_dependency_versions = True`` gets its derived
        hits checked here (see :meth:`_drop_outdated`).

        Raises:
            Exception: whatever the cache raised, as it is.
        """
        if self._get_many is not None:
            found: Mapping[ResourceKey, CacheLookup] = await self._get_many(
                keys, now=now, policies=policies
            )
        else:
            get = self.cache.get

            async def one(key: ResourceKey) -> CacheLookup:
                return await get(key, now=now, policy=policies[key])

            found = dict(zip(keys, await run_bounded(keys, one, self._limit), strict=True))
        if not self.validates_dependencies:
            found = await self._drop_outdated(found, now)
        if self._isolator is not None:
            return _isolated(found, self._isolator)
        return found

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
                lookup = await self.cache.get(dependency, now=now, policy=ANY_AGE)
                memo[dependency] = lookup.value
            held = memo[dependency]
            if held is None or held.version != version:
                return False
            if held.dependency_versions and not await self._current(held, now, memo, current):
                return False
        current[value.key] = True
        return True

    async def write(
        self, values: Sequence[SnapshotValue[Any]]
    ) -> Mapping[ResourceKey, CacheWriteResult | None]:
        """Store ``values`` with the first write method the cache has; ``None`` results mean
        "stored, no comparison made" (a plain ``set``/``set_many``).

        Raises:
            Exception: whatever the cache raised (``PayloadIsolationError`` included).
        """
        if self._memory is not None:
            # The built-in cache skips the copies of stored values it would hand back: the
            # engine serves its own value and reads only a stored write's status.
            return await self._memory._write_for_build(values)
        if self._set_many_if_newer is not None:
            written: Mapping[ResourceKey, CacheWriteResult] = await self._set_many_if_newer(values)
            return written
        if self._set_many is not None:
            await self._set_many(values)
        elif self._set_if_newer is not None:
            results = await run_bounded(values, self._set_if_newer, self._limit)
            return {value.key: result for value, result in zip(values, results, strict=True)}
        else:
            await run_bounded(values, self.cache.set, self._limit)
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
        except Exception:  # coordination only: without it, this process fetches itself
            return set(keys)

    async def release(self, keys: Sequence[ResourceKey]) -> None:
        """Give leases back; a failure is ignored (the leases expire on their own)."""
        if self._leases is None or not keys:
            return
        with contextlib.suppress(Exception):
            await self._leases.release_many(keys)

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
        except Exception:  # coordination only: fetch here instead
            return {}


def _isolated(
    found: Mapping[ResourceKey, CacheLookup], isolator: PayloadIsolator
) -> dict[ResourceKey, CacheLookup]:
    """``found`` with a private copy of every value's payload (and mutable metadata)."""
    copied: dict[ResourceKey, CacheLookup] = {}
    for key, lookup in found.items():
        value = lookup.value
        if value is not None:
            try:  # the error context is only made on failure: no text per copy otherwise
                clone = isolator.clone_snapshot_value(value, context="")
            except PayloadIsolationError as error:
                raise located(error, f"cache read of {key}") from error.__cause__
            lookup = CacheLookup(clone, lookup.fresh, lookup.usable_stale, lookup.age_seconds)
        copied[key] = lookup
    return copied
