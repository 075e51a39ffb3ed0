"""A group's fetch coordinated across processes, with a cache tier that leases fetches (Redis):
one process fetches a key while the others wait for its write, so a stampede across processes
still costs one source call per key. Only the lease calls degrade: without them (the tier
failed), this process fetches itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

from .._compat import TaskGroup
from ..core import CacheLookup, FreshnessPolicy, ResourceKey
from ._cache_access import CacheAccess
from ._machinery import GroupResolution


async def coordinate(
    run: GroupResolution, keys: list[ResourceKey], leased: set[ResourceKey]
) -> None:
    """With a shared cache tier: lease ``keys`` in one call, fetch the leased ones at once,
    and meanwhile wait for the keys other processes are fetching, serving them from the
    cache as they arrive. A lease taken over while waiting is fetched at once too, and each
    lease is given back as soon as its value is written: this build never waits while it
    holds a lease it is not using, so two processes cannot each hold what the other waits
    for. Keys still missing when the tier stops making progress (its holder is slow and
    our deadline is near, or the tier failed) are fetched here without a lease."""
    engine, clock = run.engine, run.engine.clock
    async with TaskGroup() as group:

        def fetch(owned: list[ResourceKey]) -> None:
            if owned:
                group.create_task(_fetch_leased(run, owned, leased))

        taken = await _lease(engine.cache, keys)
        leased |= taken
        fetch([key for key in keys if key in taken])
        waiting = [key for key in keys if key not in taken]
        while waiting and not run.ctx.expired(clock):
            arrived = await _wait_for(
                engine.cache,
                waiting,
                wait_seconds=run.ctx.remaining_seconds(clock),
                now=clock.now(),
                policies={key: engine.policy_for(key) for key in waiting},
            )
            for key, lookup in arrived.items():
                if lookup.value is not None and lookup.fresh and key in run.flights:
                    engine.flights.resolve(run.flights[key], lookup.value)
            waiting = [key for key in waiting if not run.flights[key].done]
            taken = await _lease(engine.cache, waiting) if waiting else set()
            leased |= taken
            fetch([key for key in waiting if key in taken])
            if not arrived and not taken:
                break  # no progress: fetch them here rather than spin
            waiting = [key for key in waiting if key not in taken]
        await run.walk([key for key in waiting if not run.flights[key].done], 0)


async def _fetch_leased(
    run: GroupResolution, keys: list[ResourceKey], leased: set[ResourceKey]
) -> None:
    """Fetch keys this process leased, write them, then give their leases back at once
    (waiters elsewhere are woken by the write, or take the lease over after a failure)."""
    await run.walk(keys, 0)  # each priority level is written as it ends
    leased.difference_update(keys)
    await release(run.engine.cache, keys)


async def _lease(access: CacheAccess, keys: Sequence[ResourceKey]) -> set[ResourceKey]:
    """Lease ``keys`` for this process; a failing tier grants every lease (fetch locally)."""
    if access.leases is None:
        return set(keys)
    try:
        return set(await access.leases.lease_many(keys))
    except Exception:  # coordination only: without it, this process fetches itself
        return set(keys)


async def release(access: CacheAccess, keys: Sequence[ResourceKey]) -> None:
    """Give leases back; a failure is ignored (the leases expire on their own)."""
    if access.leases is None or not keys:
        return
    with contextlib.suppress(Exception):
        await access.leases.release_many(keys)


async def _wait_for(
    access: CacheAccess,
    keys: Sequence[ResourceKey],
    *,
    wait_seconds: float | None,
    now: float,
    policies: Mapping[ResourceKey, FreshnessPolicy],
) -> Mapping[ResourceKey, CacheLookup]:
    """Wait for values another process is fetching; a failing tier returns none."""
    if access.leases is None:
        return {}
    try:
        return await access.leases.wait_for_many(
            keys, wait_seconds=wait_seconds, now=now, policies=policies
        )
    except Exception:  # coordination only: fetch here instead
        return {}
