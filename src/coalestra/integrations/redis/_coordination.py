"""Cross-process single-flight: the lease protocol behind ``RedisCache``'s ``LeasingCache``
methods.

* **One atomic step per request.** ``lease_many`` takes the leases of all the keys it is given in
  one script call, with a token new to that request (``"<process token>.<serial>"``). The
  builder fetches what it got at once and waits for the rest meanwhile, giving each lease back
  as soon as its value is written: a build never waits while holding a lease it is not using,
  so no two processes can each hold what the other waits for.
* **Short leases, renewed.** A lease lives ``lease_ttl_seconds`` (1.5 s by default); while its
  holder is alive a keeper task renews every lease it holds every third of that, in one script
  call, comparing tokens (a lease that expired and was taken over is not renewed, and counts as
  lost). A holder that died, or froze, stops renewing, and its waiters take over within a lease
  lifetime.
* **Waiting.** Each look is one poll script (value arrived? lease gone, so take it? else how long
  is left on it). Between looks a waiter sleeps until a write or release message names one of
  its keys, or the lease it waits on would expire; only while the event subscription is down
  does it fall back to polling with a backoff (``poll_interval_seconds``, doubling up to a
  second). A waiter stops waiting after three quarters of its remaining deadline, so that it
  can still fetch for itself in the last quarter: duplicate work is bounded, and a build never
  fails because of a lease.
* **No ghost leases.** A lease request (or a release) that timed out may still be applied by
  Redis later, for example when a paused server resumes. Its token is remembered, and released
  with a compare-and-delete once Redis answers again; until then such a lease dies on its own
  after one lifetime, since nobody renews it.
* **Bad leases.** A lease with no expiry, or not a string, is foreign or corrupt: it is deleted
  and treated as absent by the next script that looks at it.

When Redis is unreachable every lease is granted locally (each process fetches for itself) and
waits return at once: coordination is an optimisation, never a reason for a build to fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Collection, Mapping, Sequence
from typing import final

from ..._compat import timeout
from ...cache._checks import check_keys
from ...core import CacheLookup, FreshnessPolicy, ResourceKey
from ...core._validation import check_float, check_optional_float
from ._layout import key_name
from ._leases import LeaseInfo, LeaseStore
from ._link import RedisUnavailable
from ._notifier import Notifier
from ._store import RedisStore

WAIT_SHARE = 0.75
"""The share of its remaining deadline a waiter may spend waiting; it fetches for itself in the
rest."""
_EXPIRY_MARGIN = 0.002  # look again just after the lease we wait on would expire
_MAX_BACKOFF = 1.0  # the longest pause between polls while pub/sub is down
_MAX_DOUBTFUL = 10_000  # remembered possible ghosts, beyond which the oldest are left to expire


def check_read(
    keys: tuple[ResourceKey, ...], now: object, policies: object
) -> tuple[float, Mapping[ResourceKey, FreshnessPolicy]]:
    """``now`` and ``policies`` of a read or a wait of the (checked) ``keys``.

    Raises:
        TypeError, ValueError: ``now`` is not a finite number, ``policies`` is not a mapping,
            or it has no :class:`FreshnessPolicy` for one of ``keys``.
    """
    when = check_float("now", now, minimum=None)
    if not isinstance(policies, Mapping):
        raise TypeError(f"policies must be a mapping, got {type(policies).__name__}")
    for key in keys:
        if not isinstance(policies.get(key), FreshnessPolicy):
            raise ValueError(f"policies has no FreshnessPolicy for key {key}")
    return when, policies


@final
class Coordinator:
    """Leases and waits of one cache."""

    def __init__(self, store: RedisStore, notifier: Notifier) -> None:
        self._store = store
        self._leases = LeaseStore(store)
        self._notifier = notifier
        self._counters = store.counters
        self._clock = store.config.clock
        self._poll_interval = store.config.poll_interval_seconds
        self._renew_every = store.config.lease_ttl_seconds / 3.0
        self._serial = itertools.count(1)
        self._held: dict[ResourceKey, str] = {}  # our live leases: key -> token
        self._doubtful: dict[str, list[tuple[ResourceKey, str]]] = {}  # possible ghosts
        self._keeper: asyncio.Task[None] | None = None

    def _token(self) -> str:
        return f"{self._store.token}.{next(self._serial)}"

    @property
    def held(self) -> int:
        """How many leases this process holds (and renews) now."""
        return len(self._held)

    # -- taking and giving back ---------------------------------------------------------------

    async def lease_many(self, keys: Collection[ResourceKey]) -> list[ResourceKey]:
        """See ``RedisCache.lease_many``."""
        wanted = tuple(dict.fromkeys(check_keys(keys)))
        # Keys already ours (taken over by a wait) need no Redis call: the keeper renews them.
        mine = [key for key in wanted if key in self._held]
        rest = [key for key in wanted if key not in self._held]
        if not rest:
            return mine
        token = self._token()
        try:
            held, bad = await self._leases.lease(rest, token)
        except RedisUnavailable as error:
            self._doubt(error, [(key, token) for key in rest])
            self._counters.degraded_calls += 1
            self._counters.leases_granted_locally += len(rest)
            return mine + rest
        self._counters.bad_leases += bad
        self._counters.leases_granted += len(held)
        self._counters.leases_refused += len(rest) - len(held)
        self._hold(held, token)
        return mine + held

    async def release_many(self, keys: Collection[ResourceKey]) -> None:
        """See ``RedisCache.release_many``."""
        mine = [(key, self._held.pop(key)) for key in check_keys(keys) if key in self._held]
        if not mine:
            return
        try:
            await self._leases.release(mine)
        except RedisUnavailable as error:
            self._counters.degraded_calls += 1
            self._doubt(error, mine)  # not renewed any more: gone within a lease lifetime

    def _hold(self, keys: Sequence[ResourceKey], token: str) -> None:
        for key in keys:
            self._held[key] = token
        if keys:
            self._keep()

    def _doubt(self, error: RedisUnavailable, leases: list[tuple[ResourceKey, str]]) -> None:
        """Remember leases a failed request may still create (or a failed release leave)."""
        if not error.sent or not leases:
            return
        self._doubtful[leases[0][1]] = leases
        while len(self._doubtful) > _MAX_DOUBTFUL:
            del self._doubtful[next(iter(self._doubtful))]
        self._keep()

    # -- the keeper: renewals and ghost releases ----------------------------------------------

    def _keep(self) -> None:
        loop = asyncio.get_running_loop()
        keeper = self._keeper
        if keeper is None or keeper.done() or keeper.get_loop() is not loop:
            self._keeper = loop.create_task(self._keep_leases())

    async def _keep_leases(self) -> None:
        while self._held or self._doubtful:
            await asyncio.sleep(self._renew_every)
            with contextlib.suppress(RedisUnavailable):
                await self._renew()
            with contextlib.suppress(RedisUnavailable):
                await self._release_doubtful()

    async def _renew(self) -> None:
        leases = list(self._held.items())
        if not leases:
            return
        lost = await self._leases.renew(leases)
        self._counters.lease_renewals += len(leases) - len(lost)
        tokens = dict(leases)
        for key in lost:
            if self._held.get(key) == tokens[key]:  # not released and re-taken meanwhile
                del self._held[key]
                self._counters.leases_lost += 1

    async def _release_doubtful(self) -> None:
        batch = list(self._doubtful.items())
        if not batch:
            return
        released = await self._leases.release([lease for _, leases in batch for lease in leases])
        for token, _ in batch:
            self._doubtful.pop(token, None)
        self._counters.ghost_releases += released

    async def aclose(self) -> None:
        """Stop renewing (the leases then expire on their own)."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None and not keeper.done():
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    # -- inspection ----------------------------------------------------------------------------

    async def leases(self) -> list[LeaseInfo]:
        """See ``RedisCache.leases``."""
        return await self._leases.leases()

    async def clear_leases(self, keys: Collection[ResourceKey] | None) -> int:
        """See ``RedisCache.clear_leases``."""
        chosen = None if keys is None else tuple(dict.fromkeys(check_keys(keys)))
        for key in chosen if chosen is not None else tuple(self._held):
            self._held.pop(key, None)
        return await self._leases.drop_leases(chosen)

    # -- waiting -------------------------------------------------------------------------------

    async def wait_for_many(
        self,
        keys: Collection[ResourceKey],
        *,
        wait_seconds: float | None,
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> dict[ResourceKey, CacheLookup]:
        """See ``RedisCache.wait_for_many``."""
        pending = tuple(dict.fromkeys(check_keys(keys)))
        limit = check_optional_float("wait_seconds", wait_seconds)
        now, checked = check_read(pending, now, policies)
        if not pending:
            return {}
        self._counters.lease_waits += 1
        await self._notifier.start()  # so that write and release messages wake this wait
        names = [key_name(key) for key in pending]
        event = self._notifier.waiters.register(names)
        budget = None if limit is None else limit * WAIT_SHARE
        try:
            return await self._wait(pending, budget, now, checked, event)
        finally:
            self._notifier.waiters.unregister(names, event)

    async def _wait(
        self,
        keys: tuple[ResourceKey, ...],
        budget: float | None,
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
        event: asyncio.Event,
    ) -> dict[ResourceKey, CacheLookup]:
        clock = self._clock
        started = clock.monotonic()
        backoff = self._poll_interval
        while True:
            event.clear()  # before the poll: news arriving during it must not be lost
            elapsed = clock.monotonic() - started
            token = self._token()
            try:
                arrived, taken, lease_left = await self._leases.poll(
                    keys, now + elapsed, policies, token
                )
            except RedisUnavailable as error:
                self._doubt(error, [(key, token) for key in keys])
                self._counters.degraded_calls += 1
                return {}  # the caller leases again, which is granted locally now
            if arrived or taken:
                self._counters.lease_takeovers += len(taken)
                self._hold(taken, token)
                return arrived
            pause, backoff = self._pause(lease_left, backoff)
            if budget is not None:
                left = budget - (clock.monotonic() - started)
                if left <= 0.0:
                    self._counters.lease_waits_abandoned += 1
                    return {}
                pause = min(pause, left)
            with contextlib.suppress(TimeoutError):
                async with timeout(pause):
                    await event.wait()

    def _pause(self, lease_left: float | None, backoff: float) -> tuple[float, float]:
        """How long to sleep before the next look (unless woken), and the next backoff."""
        expiry = None if lease_left is None else lease_left + _EXPIRY_MARGIN
        if self._notifier.subscribed and expiry is not None:
            return expiry, backoff  # messages wake us; the expiry is when a takeover is due
        pause = backoff if expiry is None else min(backoff, expiry)
        return pause, min(backoff * 2.0, max(_MAX_BACKOFF, self._poll_interval))
