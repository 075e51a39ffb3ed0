"""Fetch leases in Redis: take, renew, give back, list, drop, and poll for values that arrive.

Each method is one round trip (one script, or a scan) and raises :class:`~._link.RedisUnavailable`
when Redis cannot do it; :class:`~._coordination.Coordinator` decides what that means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, final

from ...core import CacheLookup, FreshnessPolicy, RefreshMode, ResourceKey
from ._layout import key_from_name, key_name
from ._store import Arg, RedisStore, threshold

_NEVER = "1e308"  # a threshold no observed_at passes: "never fresh"

Held = Sequence[tuple[ResourceKey, str]]
"""Leases as ``(key, token it was taken with)``."""


class LeaseInfo(NamedTuple):
    """A fetch lease found in Redis."""

    key: ResourceKey
    holder: str | None
    """The token of the lease: ``"<pid>-<random>.<serial>"`` of the process holding it."""
    seconds_left: float | None
    """Until it expires unless renewed (``None``: it has no expiry, and is treated as absent)."""


def no_fetch_window(policy: FreshnessPolicy) -> float:
    """How long after ``observed_at`` a value needs no fetch: its TTL, less the refresh-ahead
    margin when it refreshes ahead (a background refresh must still get its lease)."""
    if policy.refresh_mode is RefreshMode.REFRESH_AHEAD:
        return policy.ttl_seconds - policy.refresh_ahead_seconds
    return policy.ttl_seconds


@final
class LeaseStore:
    """The lease operations of one :class:`~._store.RedisStore`."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._config = store.config
        self._layout = store.layout
        self._link = store.link
        self._scripts = store.scripts
        self._reader = store.reader
        self._counters = store.counters

    async def lease(self, keys: Sequence[ResourceKey], token: str) -> tuple[list[ResourceKey], int]:
        """Take, with ``token``, the fetch lease of every key nobody holds and no value makes
        needless; return the keys leased and how many bad leases (no expiry) were replaced.

        Raises:
            RedisUnavailable: Redis could not run the script.
        """
        now = self._config.clock.now()
        resolve = self._config.policy_resolver.resolve
        thresholds = [threshold(now, no_fetch_window(resolve(key))) for key in keys]
        names = [key_name(key) for key in keys]
        layout = self._layout
        script_keys = [layout.lease_key(n) for n in names] + [layout.value_key(n) for n in names]
        args: list[Arg] = [token, self.lease_ms, repr(self._store.bound(now)), *thresholds]
        held, bad = await self._link.call(lambda: self._scripts.lease(keys=script_keys, args=args))
        return [keys[int(index) - 1] for index in held], int(bad)

    async def renew(self, leases: Held) -> list[ResourceKey]:
        """Extend every lease still holding its token; return the keys of the others (lost).

        Raises:
            RedisUnavailable: Redis could not run the script.
        """
        names = [self._layout.lease_key(key_name(key)) for key, _ in leases]
        args: list[Arg] = [self.lease_ms, *(token for _, token in leases)]
        lost = await self._link.call(lambda: self._scripts.renew(keys=names, args=args))
        return [leases[int(index) - 1][0] for index in lost]

    async def release(self, leases: Held) -> int:
        """Delete every lease still holding its token and wake its waiters; return how many.

        Raises:
            RedisUnavailable: Redis could not run the script.
        """
        layout = self._layout
        names = [layout.lease_key(key_name(key)) for key, _ in leases]
        args: list[Arg] = [layout.channel, self._store.token, len(layout.lease_key(""))]
        args += (token for _, token in leases)
        released = await self._link.call(lambda: self._scripts.release(keys=names, args=args))
        return int(released)

    async def leases(self) -> list[LeaseInfo]:
        """Every fetch lease under the prefix, whoever holds it.

        Raises:
            RedisUnavailable: Redis could not be reached.
        """
        start = len(self._layout.lease_key(""))
        found: list[LeaseInfo] = []

        async def run() -> None:
            async for batch in self._store.scan(self._layout.lease_key("*")):
                replies = await self._scripts.lease_info(keys=batch)
                for name, (holder, left) in zip(batch, replies, strict=True):
                    try:
                        key = key_from_name(name[start:].decode())
                    except ValueError:
                        continue
                    if int(left) == -2:
                        continue  # expired meanwhile
                    seconds = None if int(left) < 0 else int(left) / 1000.0
                    found.append(LeaseInfo(key, holder.decode() if holder else None, seconds))

        await self._link.call(run, bounded=False)
        return found

    async def drop_leases(self, keys: Sequence[ResourceKey] | None) -> int:
        """Delete the leases of ``keys`` (all under the prefix if ``None``), whoever holds them,
        and wake their waiters; return how many existed.

        Raises:
            RedisUnavailable: Redis could not be reached.
        """
        layout = self._layout
        args: list[Arg] = [layout.channel, self._store.token, len(layout.lease_key(""))]
        dropped = 0

        async def drop(names: Sequence[str | bytes]) -> None:
            nonlocal dropped
            dropped += int(await self._scripts.drop_leases(keys=names, args=args))

        async def run() -> None:
            if keys is not None:
                await drop([layout.lease_key(key_name(key)) for key in keys])
                return
            async for batch in self._store.scan(layout.lease_key("*")):
                await drop(batch)

        await self._link.call(run, bounded=keys is not None)
        return dropped

    async def poll(
        self,
        keys: Sequence[ResourceKey],
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
        token: str,
        *,
        never_fresh: bool = False,
    ) -> tuple[dict[ResourceKey, CacheLookup], list[ResourceKey], float | None]:
        """One look at keys another process is fetching.

        Returns ``(arrived, taken, wait)``: fresh lookups of values that arrived; keys whose
        lease nobody held (now taken for this process with ``token``); seconds until the
        soonest other lease expires (``None`` if none is held).

        Raises:
            RedisUnavailable: Redis could not run the script.
        """
        if never_fresh:
            thresholds = [_NEVER] * len(keys)
        else:
            thresholds = [threshold(now, policies[key].ttl_seconds) for key in keys]
        names = [key_name(key) for key in keys]
        layout = self._layout
        values = [layout.value_key(n) for n in names]
        script_keys = values + [layout.lease_key(n) for n in names]
        args: list[Arg] = [token, self.lease_ms, repr(self._store.bound(now)), *thresholds]
        replies, bad = await self._link.call(
            lambda: self._scripts.poll(keys=script_keys, args=args)
        )
        self._counters.bad_leases += int(bad)
        found, taken, wait = _sort_poll(keys, values, replies)
        arrived = await self._arrived(found, now, policies)
        if len(arrived) < len(found) and not never_fresh:
            # Fresh by age but refused (and dropped: a corrupt or foreign entry, an invalid
            # derived value): nobody is fetching it, so look again treating it as absent,
            # which takes or waits its lease. Never more than once: that look finds no value.
            bad_keys = [key for key, _, _ in found if key not in arrived]
            _, more, later = await self.poll(bad_keys, now, policies, token, never_fresh=True)
            taken += more
            wait = _sooner(wait, later)
        return arrived, taken, wait

    async def _arrived(
        self,
        found: Found,
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> dict[ResourceKey, CacheLookup]:
        if not found:
            return {}
        keys = [key for key, _, _ in found]
        lookups = await self._reader.judge(
            keys, [v for _, v, _ in found], [raw for _, _, raw in found], now, policies
        )
        return {key: lookup for key, lookup in lookups.items() if lookup.fresh}

    @property
    def lease_ms(self) -> int:
        """How long a lease lives unless renewed, in milliseconds."""
        return max(1, round(self._config.lease_ttl_seconds * 1000.0))


Found = list[tuple[ResourceKey, str, bytes]]
"""Entries a poll found fresh by age: key, Redis key, raw entry."""


def _sort_poll(
    keys: Sequence[ResourceKey], value_keys: Sequence[str], replies: Sequence[Any]
) -> tuple[Found, list[ResourceKey], float | None]:
    """Split the poll script's replies (see ``_scripts.POLL``) into arrived entries, taken
    leases, and the seconds left on the soonest-expiring lease held elsewhere."""
    found: Found = []
    taken: list[ResourceKey] = []
    wait: float | None = None
    for key, value_key, reply in zip(keys, value_keys, replies, strict=True):
        if reply[0] == b"v":
            found.append((key, value_key, reply[1]))
        elif reply[0] == b"t":
            taken.append(key)
        else:
            wait = _sooner(wait, max(0.0, int(reply[1]) / 1000.0))
    return found, taken, wait


def _sooner(first: float | None, second: float | None) -> float | None:
    if first is None:
        return second
    return first if second is None else min(first, second)
