"""The Redis operations of the cache, each one round trip (one command or one script).

Every method raises :class:`~._link.RedisUnavailable` when Redis cannot do it; the public caches
decide how to degrade. Values are encoded before any I/O, so a payload the serializer refuses
fails the whole call and writes nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, final

from redis.asyncio import Redis

from ...core import (
    CacheLookup,
    CacheWriteStatus,
    FreshnessPolicy,
    RefreshMode,
    ResourceKey,
    SnapshotValue,
)
from ._config import RedisCacheConfig
from ._entries import encode
from ._layout import KeyLayout, key_name
from ._link import Link
from ._reads import Reader
from ._scripts import Scripts
from ._stats import Counters

_STATUS = {
    b"S": CacheWriteStatus.STORED,
    b"A": CacheWriteStatus.IGNORED_LOWER_AUTHORITY,
    b"O": CacheWriteStatus.IGNORED_OLDER,
    b"D": CacheWriteStatus.IGNORED_DUPLICATE,
}
_MAX_EXPIRY_MS = 100 * 365 * 86400 * 1000  # Redis refuses expiries that overflow its clock
_NEVER = "1e308"  # a threshold no observed_at passes: "never fresh"


def _threshold(now: float, window: float) -> str:
    # An infinite window (FreshnessPolicy accepts inf) must still reach Lua as a plain number.
    return repr(max(now - window, -1e308))


_SCAN_BATCH = 1000

Arg = bytes | str | int | float
"""A script argument."""

WriteOutcome = list[tuple[CacheWriteStatus, SnapshotValue[Any] | None]]
"""Per value, in order: what the write did and the revision it was compared with."""


def _bit(flag: bool) -> str:
    return "1" if flag else "0"


def no_fetch_window(policy: FreshnessPolicy) -> float:
    """How long after ``observed_at`` a value needs no fetch: its TTL, less the refresh-ahead
    margin when it refreshes ahead (a background refresh must still get its lease)."""
    if policy.refresh_mode is RefreshMode.REFRESH_AHEAD:
        return policy.ttl_seconds - policy.refresh_ahead_seconds
    return policy.ttl_seconds


@final
class RedisStore:
    """The Redis side of one cache: reads, atomic writes, invalidation, leases."""

    def __init__(self, client: Redis, link: Link, config: RedisCacheConfig) -> None:
        self.client = client
        self.link = link
        self.config = config
        self.layout = KeyLayout(config.prefix)
        self.counters = Counters()
        self.scripts = Scripts(client)
        self.reader = Reader(
            client, link, self.scripts, self.layout, config.serializer, self.counters
        )
        self._pid = os.getpid()
        self._token = _new_token()

    @property
    def token(self) -> str:
        """This process's lease token and message origin (renewed in a forked child, which
        must not hold its parent's leases)."""
        if os.getpid() != self._pid:
            self._pid, self._token = os.getpid(), _new_token()
        return self._token

    async def read(
        self,
        keys: Sequence[ResourceKey],
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> dict[ResourceKey, CacheLookup]:
        """See :meth:`Reader.read`."""
        return await self.reader.read(keys, now, policies)

    # -- writes -----------------------------------------------------------------------------

    async def write(
        self,
        values: Sequence[SnapshotValue[Any]],
        *,
        force: bool,
        replace_equal: bool,
        want_previous: bool,
    ) -> WriteOutcome:
        """Apply the write rules to every value in one script (in order).

        Raises:
            PayloadIsolationError, ValueError: a value cannot be encoded (nothing is written).
            RedisUnavailable: Redis could not run the script.
        """
        if not values:
            return []
        now = self.config.clock.now()
        layout = self.layout
        keys = [layout.value_key(key_name(value.key)) for value in values]
        args: list[Arg] = [
            _bit(force),
            _bit(replace_equal),
            _bit(want_previous),
            layout.channel,
            self.token,
            len(layout.value_key("")),
        ]
        for value, value_key in zip(values, keys, strict=True):
            args += (
                value.authority_rank,
                repr(float(value.observed_at)),
                self._expiry_ms(value, now),
                encode(value, self.config.serializer, value_key),
            )
        replies = await self.link.call(lambda: self.scripts.write(keys=keys, args=args))
        outcome: WriteOutcome = []
        for value, value_key, (status, previous) in zip(values, keys, replies, strict=True):
            before = None
            if previous is not None:
                before = self.reader.decode_previous(value.key, value_key, previous, now)
            outcome.append((_STATUS[status], before))
        stored = sum(1 for status, _ in outcome if status is CacheWriteStatus.STORED)
        self.counters.sets += stored
        self.counters.ignored_writes += len(outcome) - stored
        return outcome

    def _expiry_ms(self, value: SnapshotValue[Any], now: float) -> int:
        # Ages run from observed_at, so the entry is useless once it is older than max_stale
        # (a total age, possibly infinite); Redis drops it at that moment.
        policy = self.config.policy_resolver.resolve(value.key)
        left = value.observed_at + policy.max_stale_seconds - now
        return max(1, math.ceil(min(float(_MAX_EXPIRY_MS), left * 1000.0)))

    async def invalidate(self, keys: Sequence[ResourceKey]) -> None:
        """Delete the values of ``keys`` and tell every listener.

        Raises:
            RedisUnavailable: Redis could not run the script.
        """
        if not keys:
            return
        layout = self.layout
        names = [layout.value_key(key_name(key)) for key in keys]
        args: list[Arg] = [layout.channel, self.token, len(layout.value_key(""))]
        await self.link.call(lambda: self.scripts.invalidate(keys=names, args=args))
        self.counters.invalidations += len(keys)

    async def clear(self) -> None:
        """Delete every value under the prefix (``SCAN`` + ``UNLINK``), then tell listeners.

        Raises:
            RedisUnavailable: Redis could not be reached.
        """

        async def run() -> None:
            batch: list[bytes] = []
            async for found in self.client.scan_iter(
                match=self.layout.value_pattern, count=_SCAN_BATCH
            ):
                batch.append(found)
                if len(batch) >= _SCAN_BATCH:
                    await self.client.unlink(*batch)
                    batch = []
            if batch:
                await self.client.unlink(*batch)
            await self.client.publish(self.layout.channel, f"c {self.token}\n")

        await self.link.call(run)

    # -- leases -----------------------------------------------------------------------------

    async def lease(self, keys: Sequence[ResourceKey]) -> list[ResourceKey]:
        """Take the fetch lease of every key nobody holds and no value makes needless.

        Raises:
            RedisUnavailable: Redis could not run the script.
        """
        now = self.config.clock.now()
        resolve = self.config.policy_resolver.resolve
        thresholds = [_threshold(now, no_fetch_window(resolve(key))) for key in keys]
        names = [key_name(key) for key in keys]
        layout = self.layout
        script_keys = [layout.lease_key(n) for n in names] + [layout.value_key(n) for n in names]
        args: list[Arg] = [self.token, self._lease_ms(), *thresholds]
        held = await self.link.call(lambda: self.scripts.lease(keys=script_keys, args=args))
        return [keys[int(index) - 1] for index in held]

    async def release(self, keys: Sequence[ResourceKey]) -> None:
        """Delete the leases of ``keys`` that hold this process's token; wake their waiters.

        Raises:
            RedisUnavailable: Redis could not run the script.
        """
        layout = self.layout
        leases = [layout.lease_key(key_name(key)) for key in keys]
        args: list[Arg] = [self.token, layout.channel, len(layout.lease_key(""))]
        await self.link.call(lambda: self.scripts.release(keys=leases, args=args))

    async def poll(
        self,
        keys: Sequence[ResourceKey],
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
        *,
        never_fresh: bool = False,
    ) -> tuple[dict[ResourceKey, CacheLookup], list[ResourceKey], float | None]:
        """One look at keys another process is fetching.

        Returns ``(arrived, taken, wait)``: fresh lookups of values that arrived; keys whose
        lease nobody held (now taken for this process); seconds until the soonest other lease
        expires (``None`` if none is held).

        Raises:
            RedisUnavailable: Redis could not run the script.
        """
        if never_fresh:
            thresholds = [_NEVER] * len(keys)
        else:
            thresholds = [_threshold(now, policies[key].ttl_seconds) for key in keys]
        names = [key_name(key) for key in keys]
        layout = self.layout
        values = [layout.value_key(n) for n in names]
        script_keys = values + [layout.lease_key(n) for n in names]
        args: list[Arg] = [self.token, self._lease_ms(), *thresholds]
        replies = await self.link.call(lambda: self.scripts.poll(keys=script_keys, args=args))
        found, taken, wait = _sort_poll(keys, values, replies)
        arrived = await self._arrived(found, now, policies)
        if len(arrived) < len(found):
            # Fresh by age but refused (an invalid derived value, a rejected entry): nobody is
            # fetching it, so look again treating it as absent, which takes or waits its lease.
            bad = [key for key, _, _ in found if key not in arrived]
            _, more, later = await self.poll(bad, now, policies, never_fresh=True)
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
        lookups = await self.reader.judge(
            keys, [v for _, v, _ in found], [raw for _, _, raw in found], now, policies
        )
        return {key: lookup for key, lookup in lookups.items() if lookup.fresh}

    def _lease_ms(self) -> int:
        return max(1, round(self.config.lease_ttl_seconds * 1000.0))


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


def _new_token() -> str:
    return f"{os.getpid()}-{os.urandom(6).hex()}"
