"""Cross-process single-flight: the lease protocol behind ``RedisCache``'s ``LeasingCache``
methods.

A builder leases the keys it is about to fetch (``SET NX PX`` with this process's token, inside
one script for the whole batch). Keys leased elsewhere are waited for: each wait is one poll
script (value arrived? lease gone, so take it? else how long is left on it), then a sleep until
a write or release message names one of the keys, the soonest lease expiry, or the polling
interval, whichever comes first. A crashed owner's lease expires and the next poll takes it
over, so the waiter fetches instead. The owner releases with a compare-and-delete, so a lease
that expired and was taken over is never deleted by its former holder.

When Redis is unreachable every lease is granted locally (each process fetches for itself) and
waits return at once: coordination is an optimisation, never a reason for a build to fail.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Mapping
from typing import final

from ...cache._checks import check_keys
from ...core import CacheLookup, FreshnessPolicy, ResourceKey
from ...core._validation import check_float, check_optional_float
from ._layout import key_name
from ._link import RedisUnavailable
from ._notifier import Notifier
from ._store import RedisStore

_MIN_PAUSE = 0.001  # a lease about to expire must not make the wait spin


def _check_policies(
    keys: tuple[ResourceKey, ...], policies: object
) -> Mapping[ResourceKey, FreshnessPolicy]:
    if not isinstance(policies, Mapping):
        raise TypeError(f"policies must be a mapping, got {type(policies).__name__}")
    for key in keys:
        if not isinstance(policies.get(key), FreshnessPolicy):
            raise ValueError(f"policies has no FreshnessPolicy for key {key}")
    return policies


@final
class Coordinator:
    """Leases and waits of one cache."""

    def __init__(self, store: RedisStore, notifier: Notifier) -> None:
        self._store = store
        self._notifier = notifier
        self._counters = store.counters
        self._clock = store.config.clock
        self._poll_interval = store.config.poll_interval_seconds

    async def lease_many(self, keys: Collection[ResourceKey]) -> list[ResourceKey]:
        """See ``RedisCache.lease_many``."""
        wanted = check_keys(keys)
        if not wanted:
            return []
        try:
            held = await self._store.lease(wanted)
        except RedisUnavailable:
            self._counters.degraded_calls += 1
            self._counters.leases_granted_locally += len(wanted)
            return list(wanted)
        self._counters.leases_granted += len(held)
        self._counters.leases_refused += len(wanted) - len(held)
        return held

    async def release_many(self, keys: Collection[ResourceKey]) -> None:
        """See ``RedisCache.release_many``."""
        held = check_keys(keys)
        if not held:
            return
        try:
            await self._store.release(held)
        except RedisUnavailable:
            self._counters.degraded_calls += 1  # the leases expire on their own

    async def wait_for_many(
        self,
        keys: Collection[ResourceKey],
        *,
        wait_seconds: float | None,
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> dict[ResourceKey, CacheLookup]:
        """See ``RedisCache.wait_for_many``."""
        pending = check_keys(keys)
        limit = check_optional_float("wait_seconds", wait_seconds)
        now = check_float("now", now, minimum=None)
        checked = _check_policies(pending, policies)
        if not pending:
            return {}
        self._counters.lease_waits += 1
        await self._notifier.start()  # so that write and release messages wake this wait
        names = [key_name(key) for key in pending]
        event = self._notifier.waiters.register(names)
        try:
            return await self._wait(pending, limit, now, checked, event)
        finally:
            self._notifier.waiters.unregister(names, event)

    async def _wait(
        self,
        keys: tuple[ResourceKey, ...],
        limit: float | None,
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
        event: asyncio.Event,
    ) -> dict[ResourceKey, CacheLookup]:
        clock = self._clock
        started = clock.monotonic()
        while True:
            event.clear()  # before the poll: news arriving during it must not be lost
            elapsed = clock.monotonic() - started
            try:
                arrived, taken, lease_left = await self._store.poll(keys, now + elapsed, policies)
            except RedisUnavailable:
                self._counters.degraded_calls += 1
                return {}  # the caller leases again, which is granted locally now
            if arrived or taken:
                self._counters.lease_takeovers += len(taken)
                return arrived
            pause = self._poll_interval
            if lease_left is not None:  # wake when the lease expires, to take it over at once
                pause = max(_MIN_PAUSE, min(pause, lease_left))
            if limit is not None:
                left = limit - (clock.monotonic() - started)
                if left <= 0.0:
                    return {}
                pause = min(pause, left)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await event.wait()
