"""A process-local L1 in front of the shared Redis L2: :class:`TieredCache`."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, final

from ...cache import AsyncMemoryCache
from ...cache._checks import check_key, check_keys, check_value, check_values
from ...core import (
    CacheLookup,
    CacheWriteResult,
    CacheWriteStatus,
    FreshnessPolicy,
    PayloadCopier,
    ResourceKey,
    SnapshotValue,
)
from ...core._validation import check_bool
from ._cache import RedisCache
from ._fleet import LeaseOperations
from ._follower import L1Follower
from ._link import RedisUnavailable
from ._stats import TieredCacheStats


@final
class TieredCache(LeaseOperations):
    """An in-process :class:`~coalestra.cache.AsyncMemoryCache` (L1) in front of a
    :class:`RedisCache` (L2), kept in step through Redis pub/sub.

    Reads try L1 first (no network: an L1 hit costs what a memory-cache hit costs); L1 misses
    are read from L2 in one round trip and copied into L1. Writes are decided by L2 (atomically,
    across processes) and L1 then mirrors L2's outcome. Every write or invalidation in L2
    publishes the changed keys; each other process's L1 drops them on receipt.

    How far L1 may lag behind L2: while the event subscription is up, by the message's delivery
    time (well under a millisecond on a LAN) — and a read or write that raced with a change
    never copies the superseded value into L1 (see :class:`TouchLog`). A subscription that
    breaks is noticed at once if the connection drops, within ``2 * heartbeat_seconds`` if it
    goes silent; it is retried every ``reconnect_interval_seconds``, and the whole L1 is dropped
    on every (re)subscription and whenever Redis becomes reachable again, since messages may
    have been missed. While Redis is unreachable, L1 keeps serving what it holds (degraded
    mode) and writes go to L1 only.

    L2's lease methods (cross-process single-flight) are used as they are.

    Args:
        redis: the L2; the tiered cache owns it from now on (:meth:`aclose` closes it).
        l1_max_entries: the L1's LRU bound.
        payload_copier / run_payload_copies_in_thread: the L1's payload isolation settings
            (see :class:`~coalestra.cache.AsyncMemoryCache`).

    Raises:
        TypeError, ValueError: a malformed argument.
    """

    validates_source_authority = True
    """Conditional writes are decided by L2, which compares ``authority_rank`` first."""

    validates_dependency_versions = True
    """Both tiers check derived values' ``dependency_versions`` on every read."""

    returns_private_copies = True
    """Hits come from the L1 memory cache (which copies) or are decoded anew from Redis."""

    def __init__(
        self,
        redis: RedisCache,
        *,
        l1_max_entries: int | None = 10000,
        payload_copier: PayloadCopier | None = None,
        run_payload_copies_in_thread: bool | None = None,
    ) -> None:
        if not isinstance(redis, RedisCache):
            raise TypeError(f"redis must be a RedisCache, got {type(redis).__name__}")
        self._l2 = redis
        self._coordinator = redis._coordinator  # L2's leases, as they are
        self._l1 = AsyncMemoryCache(
            max_entries=l1_max_entries,
            payload_copier=payload_copier,
            run_payload_copies_in_thread=run_payload_copies_in_thread,
        )
        self._follower = L1Follower(self._l1, redis)
        self._log = self._follower.log
        self._skipped = 0

    def __repr__(self) -> str:
        return f"TieredCache({self._l2!r})"

    @property
    def l2(self) -> RedisCache:
        """The Redis tier."""
        return self._l2

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> CacheLookup:
        """Look ``key`` up: L1, then L2 (see :meth:`get_many`)."""
        check_key(key)
        return (await self.get_many((key,), now=now, policies={key: policy}))[key]

    async def get_many(
        self,
        keys: Collection[ResourceKey],
        *,
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> Mapping[ResourceKey, CacheLookup]:
        """Look every key up in L1; read L1's misses from L2 in one round trip and keep them.

        Raises:
            TypeError, ValueError: ``keys``, ``now`` or ``policies`` is invalid.
            PayloadIsolationError: an L1 payload could not be copied.
        """
        if not self._follower.ready:
            await self._follower.prepare()
        found = await self._l1.get_many(keys, now=now, policies=policies)
        # A plain loop, no list: the all-hit path is the hot one and must cost next to nothing.
        for lookup in found.values():
            if lookup.value is None:
                return await self._read_through(found, now, policies)
        return found

    async def _read_through(
        self,
        found: Mapping[ResourceKey, CacheLookup],
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> Mapping[ResourceKey, CacheLookup]:
        """Read L1's misses from L2 (one round trip) and keep what came back in L1."""
        missing = [key for key, lookup in found.items() if lookup.value is None]
        start = self._log.begin()
        try:
            fetched = await self._l2.get_many(missing, now=now, policies=policies)
            results = dict(found)
            results.update(fetched)
            await self._fill(_values(fetched.values()), start)
        finally:
            self._log.end(start)
        return results

    async def _fill(self, values: Sequence[SnapshotValue[Any]], since: int) -> None:
        """Copy L2 values into L1, except for keys that changed after ``since``."""
        log = self._log
        keep = [value for value in values if log.unchanged(value.key, since)]
        self._skipped += len(values) - len(keep)
        if not keep:
            return
        await self._l1.set_many_if_newer(keep, force=True)  # mirror L2 as it is
        # The copy may have awaited a worker thread: a change that came meanwhile wins.
        late = [value.key for value in keep if not log.unchanged(value.key, since)]
        if late:
            await self._l1.invalidate_many(late)

    # -- writes --------------------------------------------------------------------------------

    async def set(self, value: SnapshotValue[Any]) -> None:
        """Store ``value`` unconditionally in L2 and L1.

        Raises:
            TypeError: ``value`` is not a SnapshotValue.
            PayloadIsolationError: the serializer refused it, or it cannot be copied (nothing
                is stored).
        """
        await self._write((check_value(value),), force=True, replace_equal=False, strict=True)

    async def set_many(self, values: Collection[SnapshotValue[Any]]) -> None:
        """Store every value unconditionally in L2 (one script), then in L1. A value the
        serializer refuses is kept in L1 only (counted in L2's ``refused_values``).

        Raises:
            TypeError: ``values`` is not a collection of SnapshotValue.
            PayloadIsolationError: a value cannot be copied; nothing is stored.
        """
        await self.set_many_if_newer(check_values(values), force=True)

    async def set_if_newer(
        self, value: SnapshotValue[Any], *, force: bool = False, replace_equal: bool = False
    ) -> CacheWriteResult:
        """``set_if_newer`` decided atomically by L2; L1 then holds L2's winner.

        Raises:
            TypeError: an argument has the wrong type.
            PayloadIsolationError: the serializer refused the value, or it cannot be copied.
            ValueError: its authority rank is beyond +-2**53.
        """
        check_bool("force", force)
        check_bool("replace_equal", replace_equal)
        results = await self._write(
            (check_value(value),), force=force, replace_equal=replace_equal, strict=True
        )
        return results[value.key]

    async def set_many_if_newer(
        self,
        values: Collection[SnapshotValue[Any]],
        *,
        force: bool = False,
        replace_equal: bool = False,
    ) -> Mapping[ResourceKey, CacheWriteResult]:
        """Conditional writes decided by L2 in one script; L1 mirrors each key's winner. With
        Redis unreachable, L1 decides alone (degraded mode).

        A value L2 cannot store (refused by the serializer, or a rank beyond +-2**53) is kept
        in L1 only, and counted in L2's ``refused_values``; the others are written to both.

        Raises:
            TypeError: an argument has the wrong type.
            PayloadIsolationError: a value cannot be copied into L1.
        """
        checked = check_values(values)
        check_bool("force", force)
        check_bool("replace_equal", replace_equal)
        return await self._write(checked, force=force, replace_equal=replace_equal)

    async def _write(
        self,
        checked: tuple[SnapshotValue[Any], ...],
        *,
        force: bool,
        replace_equal: bool,
        strict: bool = False,
    ) -> Mapping[ResourceKey, CacheWriteResult]:
        if not self._follower.ready:
            await self._follower.prepare()
        start = self._log.begin()
        try:
            try:
                outcome = await self._l2._store.write(
                    checked,
                    force=force,
                    replace_equal=replace_equal,
                    want_previous=True,
                    strict=strict,
                )
            except RedisUnavailable:
                self._l2._store.counters.degraded_calls += 1
                return await self._l1.set_many_if_newer(
                    checked, force=force, replace_equal=replace_equal
                )
            results = {
                value.key: CacheWriteResult(status, value, previous)
                for value, (status, previous) in zip(checked, outcome, strict=True)
            }
            await self._mirror(checked, outcome, start)
        finally:
            self._log.end(start)
        return results

    async def _mirror(
        self,
        values: Sequence[SnapshotValue[Any]],
        outcome: Sequence[tuple[CacheWriteStatus, SnapshotValue[Any] | None]],
        start: int,
    ) -> None:
        """Make L1 hold what L2 holds after a write (for keys nobody changed meanwhile)."""
        log = self._log
        winners: list[SnapshotValue[Any]] = []
        unknown: list[ResourceKey] = []
        for value, (status, previous) in zip(values, outcome, strict=True):
            winner = value if status is CacheWriteStatus.STORED else previous
            if winner is None:
                unknown.append(value.key)  # L2 kept a revision we could not read
            elif log.unchanged(value.key, start):
                winners.append(winner)
        since = log.touch(value.key for value in values)  # older in-flight fills must not win
        if unknown:
            await self._l1.invalidate_many(unknown)
        await self._fill(winners, since)

    # -- removal -------------------------------------------------------------------------------

    async def invalidate(self, key: ResourceKey) -> None:
        """Drop ``key`` from L1, from L2 and from every other process's L1."""
        await self.invalidate_many((check_key(key),))

    async def invalidate_many(self, keys: Collection[ResourceKey]) -> None:
        """Drop every key from L1, L2 and every other L1 (replayed in L2 if Redis is down).

        Raises:
            TypeError: ``keys`` is not a collection of ResourceKey.
        """
        doomed = check_keys(keys)
        self._log.touch(doomed)
        await self._l1.invalidate_many(doomed)
        await self._l2.invalidate_many(doomed)

    async def clear(self) -> None:
        """Drop everything from L1, L2 and every other L1.

        Raises:
            RuntimeError: Redis could not be reached (L1 is dropped anyway).
        """
        await self._follower.drop_l1()
        await self._l2.clear()

    async def invalidate_matching(
        self, predicate: Callable[[ResourceKey], bool]
    ) -> tuple[ResourceKey, ...]:
        """Drop every key for which ``predicate(key)`` is true from L1, from L2 and from every
        other process's L1 (see :meth:`RedisCache.invalidate_matching`).

        Returns:
            The keys dropped from either tier.

        Raises:
            TypeError: ``predicate`` is not callable.
            RuntimeError: Redis could not be reached (L1 is dropped anyway).
            Exception: whatever ``predicate`` raises.
        """
        local = await self._l1.invalidate_matching(predicate)
        self._log.touch(local)
        shared = await self._l2.invalidate_matching(predicate)
        return await self._forget(local, shared)

    async def invalidate_namespace(
        self, namespace: str, *, name: str | None = None, subject: str | None = None
    ) -> tuple[ResourceKey, ...]:
        """Drop every key in ``namespace`` (narrowed to ``name`` and/or ``subject``) from L1,
        L2 and every other process's L1 (see :meth:`RedisCache.invalidate_namespace`).

        Returns:
            The keys dropped from either tier.

        Raises:
            TypeError, ValueError: a malformed part.
            RuntimeError: Redis could not be reached (L1 is dropped anyway).
        """
        local = await self._l1.invalidate_namespace(namespace, name=name, subject=subject)
        self._log.touch(local)
        shared = await self._l2.invalidate_namespace(namespace, name=name, subject=subject)
        return await self._forget(local, shared)

    async def _forget(
        self, local: tuple[ResourceKey, ...], shared: tuple[ResourceKey, ...]
    ) -> tuple[ResourceKey, ...]:
        """L2 dropped ``shared``: make sure L1 holds none of them (a fill may have raced)."""
        self._log.touch(shared)
        await self._l1.invalidate_many(shared)
        return tuple(dict.fromkeys(local + shared))

    # -- introspection and lifecycle ------------------------------------------------------------

    async def stats(self) -> TieredCacheStats:
        """Statistics of both tiers and of their synchronisation (no Redis call)."""
        return TieredCacheStats(
            l1=await self._l1.stats(),
            l2=await self._l2.stats(),
            l1_drops=self._follower.drops,
            remote_invalidations=self._follower.remote,
            skipped_fills=self._skipped,
        )

    async def aclose(self) -> None:
        """Close the Redis tier (its listener and client). Idempotent."""
        await self._l2.aclose()


def _values(lookups: Iterable[CacheLookup]) -> list[SnapshotValue[Any]]:
    return [lookup.value for lookup in lookups if lookup.value is not None]
