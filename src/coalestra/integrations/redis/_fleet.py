"""What a Redis cache does for the whole fleet of processes sharing it, rather than for one value:
cross-process single-flight (leases and waits), and administration (fleet-wide clears and
invalidations, lease listing and clearing). Administrative operations fail loudly rather than
degrade while Redis is unreachable: an explicit administrative act is never silently skipped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TypeVar

from ...core import CacheLookup, FreshnessPolicy, ResourceKey
from ...core._validation import check_callable, check_str
from ._coordination import Coordinator
from ._layout import escape, glob_escape
from ._leases import LeaseInfo
from ._link import RedisUnavailable
from ._store import RedisStore

T = TypeVar("T")


class LeaseOperations:
    """Cross-process single-flight and lease administration, through one :class:`Coordinator`:
    of :class:`~._cache.RedisCache`, and of a :class:`~._tiered.TieredCache`, which uses its
    L2's coordinator as it is."""

    _coordinator: Coordinator

    async def _admin(self, what: str, operation: Awaitable[T]) -> T:
        """Run an administrative operation, which fails loudly rather than degrade."""
        try:
            return await operation
        except RedisUnavailable as error:
            raise RuntimeError(f"Redis cache {what} failed: {error}") from error

    async def leases(self) -> tuple[LeaseInfo, ...]:
        """Every fetch lease under this prefix now, whoever holds it (a ``SCAN``): its key, its
        holder's token (``"<pid>-<random>.<serial>"``) and the seconds it has left unless
        renewed (``None``: no expiry, a foreign or corrupt lease that is treated as absent).

        Raises:
            RuntimeError: Redis could not be reached.
        """
        return tuple(await self._admin("lease listing", self._coordinator.leases()))

    async def clear_leases(self, keys: Collection[ResourceKey] | None = None) -> int:
        """Delete the fetch leases of ``keys`` (every lease under this prefix if ``None``),
        whoever holds them; their waiters wake and fetch for themselves.

        Returns:
            How many leases existed.

        Raises:
            TypeError: ``keys`` is not a collection of ResourceKey.
            RuntimeError: Redis could not be reached.
        """
        return await self._admin("lease clearing", self._coordinator.clear_leases(keys))

    # -- cross-process single-flight -----------------------------------------------------------

    async def lease_many(self, keys: Collection[ResourceKey]) -> Collection[ResourceKey]:
        """Take the fetch lease of each key nobody else holds, all in one script call with a
        token new to this call; return the keys now held.

        A key whose stored value needs no fetch (fresh under ``policy_resolver``, not due for a
        refresh-ahead) is not leased: the caller waits for it and gets it at once. A lease this
        process already holds is returned as held. Held leases are renewed every third of
        ``lease_ttl_seconds`` until :meth:`release_many` (or :meth:`aclose`): fetch the keys at
        once, and release them as soon as they are written. Redis down: every key is granted
        (fetch locally); a request that timed out is released once Redis answers again.

        Raises:
            TypeError: ``keys`` is not a collection of ResourceKey.
        """
        return await self._coordinator.lease_many(keys)

    async def release_many(self, keys: Collection[ResourceKey]) -> None:
        """Give back this process's leases of ``keys`` (others' are left alone) and wake the
        processes waiting for them.

        Raises:
            TypeError: ``keys`` is not a collection of ResourceKey.
        """
        await self._coordinator.release_many(keys)

    async def wait_for_many(
        self,
        keys: Collection[ResourceKey],
        *,
        wait_seconds: float | None,
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> Mapping[ResourceKey, CacheLookup]:
        """Wait for keys other processes are fetching.

        Returns as soon as a fresh value of one of them arrived, or a lease of one of them was
        released or expired (that lease is then taken for this process, so the caller's next
        ``lease_many`` gets it), or three quarters of ``wait_seconds`` passed (the caller keeps
        the rest to fetch for itself; ``None``: no limit, the wait ends when a holder writes,
        gives up or stops renewing). Woken by write and release messages and at the expiry of
        the lease it waits on; polls (from ``poll_interval_seconds``, doubling up to 1 s) only
        while the event subscription is down.

        Returns:
            Fresh lookups of the keys whose values arrived (empty if none, or Redis is down).

        Raises:
            TypeError, ValueError: an argument is invalid.
        """
        return await self._coordinator.wait_for_many(
            keys, wait_seconds=wait_seconds, now=now, policies=policies
        )


class FleetOperations(LeaseOperations):
    """The fleet-wide operations of :class:`~._cache.RedisCache` (its base class)."""

    _store: RedisStore

    async def clear(self) -> None:
        """Drop every value and every fetch lease under this cache's prefix, and every L1
        (their waiters wake, and fetch for themselves).

        Raises:
            RuntimeError: Redis could not be reached (a clear is an explicit administrative
                act: it is not silently skipped).
        """
        await self._admin("clear", self._store.clear())

    async def invalidate_matching(
        self, predicate: Callable[[ResourceKey], bool]
    ) -> tuple[ResourceKey, ...]:
        """Drop, fleet-wide, every key stored under this prefix for which ``predicate(key)`` is
        true (a ``SCAN`` of the prefix; each batch of matches is one invalidation, announced to
        every tiered cache's L1).

        Returns:
            The keys dropped.

        Raises:
            TypeError: ``predicate`` is not callable.
            RuntimeError: Redis could not be reached (keys matched before are dropped).
            Exception: whatever ``predicate`` raises (keys matched before are dropped).
        """
        check_callable("predicate", predicate)
        dropped = await self._admin("invalidation", self._store.invalidate_matching("*", predicate))
        return tuple(dropped)

    async def invalidate_namespace(
        self, namespace: str, *, name: str | None = None, subject: str | None = None
    ) -> tuple[ResourceKey, ...]:
        """Drop, fleet-wide, every key in ``namespace`` (narrowed to ``name`` and/or ``subject``
        if given), as :meth:`invalidate_matching` does. Parts are compared as stored: pass them
        normalized the way your keys are.

        Returns:
            The keys dropped.

        Raises:
            TypeError, ValueError: ``namespace`` or ``name`` is not a non-empty string, or
                ``subject`` is not a string.
            RuntimeError: Redis could not be reached.
        """
        check_str("namespace", namespace)
        if name is not None:
            check_str("name", name)
        if subject is not None:
            check_str("subject", subject, allow_empty=True)

        def matches(key: ResourceKey) -> bool:
            return (
                key.namespace == namespace
                and (name is None or key.name == name)
                and (subject is None or key.subject == subject)
            )

        pattern = glob_escape(escape(namespace)) + ":*"
        dropped = await self._admin(
            "invalidation", self._store.invalidate_matching(pattern, matches)
        )
        return tuple(dropped)
