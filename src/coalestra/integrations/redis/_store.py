"""The Redis operations of the cache, each one round trip (one command or one script).

Every method raises :class:`~._link.RedisUnavailable` when Redis cannot do it; the public caches
decide how to degrade. Values are encoded before any I/O, so a payload the serializer refuses
fails the whole call and writes nothing.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, NamedTuple, final

from redis.asyncio import Redis

from ...core import (
    CacheLookup,
    CacheWriteStatus,
    FreshnessPolicy,
    PayloadIsolationError,
    RefreshMode,
    ResourceKey,
    SnapshotValue,
)
from ._config import RedisCacheConfig
from ._entries import encode
from ._layout import KeyLayout, key_from_name, key_name
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

_log = logging.getLogger("coalestra.integrations.redis")

Arg = bytes | str | int | float
"""A script argument."""

Held = Sequence[tuple[ResourceKey, str]]
"""Leases as ``(key, token it was taken with)``."""


class LeaseInfo(NamedTuple):
    """A fetch lease found in Redis."""

    key: ResourceKey
    holder: str | None
    """The token of the lease: ``"<pid>-<random>.<serial>"`` of the process holding it."""
    seconds_left: float | None
    """Until it expires unless renewed (``None``: it has no expiry, and is treated as absent)."""


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
            client,
            link,
            self.scripts,
            self.layout,
            config.serializer,
            self.counters,
            config.future_tolerance_seconds,
        )
        self._pid = os.getpid()
        self._token = _new_token()
        self._refused_kinds: set[str] = set()

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
        strict: bool,
        again: bool = True,
    ) -> WriteOutcome:
        """Apply the write rules to every value in one script (in order).

        A value that cannot be encoded is refused on its own: with ``strict`` the call raises
        before any I/O; otherwise it is skipped (counted in ``refused_values``, logged, reported
        ``STORED`` with no previous revision, as a write skipped while Redis is down is) and the
        other values are written.

        Raises:
            PayloadIsolationError, ValueError: ``strict`` and a value cannot be encoded.
            RedisUnavailable: Redis could not run the script.
        """
        if not values:
            return []
        now = self.config.clock.now()
        layout = self.layout
        encoded = self._encode_all(values, strict)
        writing = [i for i, entry in enumerate(encoded) if entry is not None]
        keys = [layout.value_key(key_name(values[i].key)) for i in writing]
        args: list[Arg] = [
            _bit(force),
            _bit(replace_equal),
            _bit(want_previous),
            layout.channel,
            self.token,
            len(layout.value_key("")),
            repr(self.bound(now)),
        ]
        for i in writing:
            value = values[i]
            args += (
                value.authority_rank,
                repr(float(value.observed_at)),
                self._expiry_ms(value, now),
                encoded[i] or b"",
            )
        replies: list[Any] = []
        if writing:
            replies = await self.link.call(lambda: self.scripts.write(keys=keys, args=args))
        outcome: WriteOutcome = [(CacheWriteStatus.STORED, None)] * len(values)
        blocked: list[tuple[int, str, bytes]] = []  # refused by an entry nobody can read
        for i, value_key, (status, previous) in zip(writing, keys, replies, strict=True):
            before = None
            if previous:
                before = self.reader.decode_previous(values[i].key, value_key, previous, now)
                if before is None and status != b"S":
                    blocked.append((i, value_key, previous))
            outcome[i] = (_STATUS[status], before)
        stored = sum(1 for _, reply in zip(writing, replies, strict=True) if reply[0] == b"S")
        self.counters.sets += stored
        self.counters.ignored_writes += len(writing) - stored - len(blocked)
        if blocked and again:
            await self._write_over(values, blocked, outcome, force, replace_equal, strict)
        return outcome

    async def _write_over(
        self,
        values: Sequence[SnapshotValue[Any]],
        blocked: list[tuple[int, str, bytes]],
        outcome: WriteOutcome,
        force: bool,
        replace_equal: bool,
        strict: bool,
    ) -> None:
        """A bad entry (say a forged top rank over an unreadable body) is an absent one: drop
        it and write again, once, instead of letting it refuse every write."""
        await self.reader.drop_bad([(value_key, raw) for _, value_key, raw in blocked])
        again = await self.write(
            [values[i] for i, _, _ in blocked],
            force=force,
            replace_equal=replace_equal,
            want_previous=True,
            strict=strict,
            again=False,
        )
        for (i, _, _), result in zip(blocked, again, strict=True):
            outcome[i] = result

    def _encode_all(self, values: Sequence[SnapshotValue[Any]], strict: bool) -> list[bytes | None]:
        """Each value's entry bytes, or ``None`` for a value refused (when not ``strict``)."""
        layout, serializer = self.layout, self.config.serializer
        entries: list[bytes | None] = []
        for value in values:
            try:
                entries.append(encode(value, serializer, layout.value_key(key_name(value.key))))
            except (PayloadIsolationError, ValueError) as error:
                if strict:
                    raise
                self._refused(value, error)
                entries.append(None)
        return entries

    def _refused(self, value: SnapshotValue[Any], error: Exception) -> None:
        counters = self.counters
        counters.refused_values += 1
        kind = type(value.value).__name__
        if kind not in self._refused_kinds:  # once per payload type: no flood of logs
            self._refused_kinds.add(kind)
            _log.warning(
                "coalestra: not caching %s in Redis (served and kept in process): %s",
                value.key,
                error,
            )

    def bound(self, now: float) -> float:
        """The latest ``observed_at`` an entry may have at ``now`` (later ones are absurd)."""
        return now + self.config.future_tolerance_seconds

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
        """Delete every value and lease under the prefix (``SCAN`` + ``UNLINK``), then tell
        listeners (which wakes every waiter).

        Raises:
            RedisUnavailable: Redis could not be reached.
        """

        async def run() -> None:
            async for batch in self._scan(self.layout.any_pattern):
                await self.client.unlink(*batch)
            await self.client.publish(self.layout.channel, f"c {self.token}\n")

        await self.link.call(run, bounded=False)

    async def _scan(self, pattern: str) -> AsyncIterator[list[bytes]]:
        """The Redis keys matching ``pattern``, in batches."""
        batch: list[bytes] = []
        async for found in self.client.scan_iter(match=pattern, count=_SCAN_BATCH):
            batch.append(found)
            if len(batch) >= _SCAN_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    async def invalidate_matching(
        self, pattern: str, predicate: Callable[[ResourceKey], bool]
    ) -> list[ResourceKey]:
        """Delete (and announce) every value whose key matches the glob ``pattern`` (of key
        names) and ``predicate``; return their keys.

        Raises:
            RedisUnavailable: Redis could not be reached.
            Exception: whatever ``predicate`` raises (the keys matched so far are dropped).
        """
        start = len(self.layout.value_key(""))
        dropped: list[ResourceKey] = []

        async def run() -> None:
            async for batch in self._scan(self.layout.value_key(pattern)):
                keys: list[ResourceKey] = []
                for found in batch:
                    try:
                        keys.append(key_from_name(found[start:].decode()))
                    except ValueError:
                        continue  # not a key name of ours
                doomed = list(dict.fromkeys(k for k in keys if predicate(k)))
                if doomed:
                    await self.invalidate(doomed)
                    dropped.extend(doomed)

        await self.link.call(run, bounded=False)
        return dropped

    # -- leases -----------------------------------------------------------------------------

    async def lease(self, keys: Sequence[ResourceKey], token: str) -> tuple[list[ResourceKey], int]:
        """Take, with ``token``, the fetch lease of every key nobody holds and no value makes
        needless; return the keys leased and how many bad leases (no expiry) were replaced.

        Raises:
            RedisUnavailable: Redis could not run the script.
        """
        now = self.config.clock.now()
        resolve = self.config.policy_resolver.resolve
        thresholds = [_threshold(now, no_fetch_window(resolve(key))) for key in keys]
        names = [key_name(key) for key in keys]
        layout = self.layout
        script_keys = [layout.lease_key(n) for n in names] + [layout.value_key(n) for n in names]
        args: list[Arg] = [token, self.lease_ms, repr(self.bound(now)), *thresholds]
        held, bad = await self.link.call(lambda: self.scripts.lease(keys=script_keys, args=args))
        return [keys[int(index) - 1] for index in held], int(bad)

    async def renew(self, leases: Held) -> list[ResourceKey]:
        """Extend every lease still holding its token; return the keys of the others (lost).

        Raises:
            RedisUnavailable: Redis could not run the script.
        """
        names = [self.layout.lease_key(key_name(key)) for key, _ in leases]
        args: list[Arg] = [self.lease_ms, *(token for _, token in leases)]
        lost = await self.link.call(lambda: self.scripts.renew(keys=names, args=args))
        return [leases[int(index) - 1][0] for index in lost]

    async def release(self, leases: Held) -> int:
        """Delete every lease still holding its token and wake its waiters; return how many.

        Raises:
            RedisUnavailable: Redis could not run the script.
        """
        layout = self.layout
        names = [layout.lease_key(key_name(key)) for key, _ in leases]
        args: list[Arg] = [layout.channel, self.token, len(layout.lease_key(""))]
        args += (token for _, token in leases)
        released = await self.link.call(lambda: self.scripts.release(keys=names, args=args))
        return int(released)

    async def leases(self) -> list[LeaseInfo]:
        """Every fetch lease under the prefix, whoever holds it.

        Raises:
            RedisUnavailable: Redis could not be reached.
        """
        start = len(self.layout.lease_key(""))
        found: list[LeaseInfo] = []

        async def run() -> None:
            async for batch in self._scan(self.layout.lease_key("*")):
                replies = await self.scripts.lease_info(keys=batch)
                for name, (holder, left) in zip(batch, replies, strict=True):
                    try:
                        key = key_from_name(name[start:].decode())
                    except ValueError:
                        continue
                    if int(left) == -2:
                        continue  # expired meanwhile
                    seconds = None if int(left) < 0 else int(left) / 1000.0
                    found.append(LeaseInfo(key, holder.decode() if holder else None, seconds))

        await self.link.call(run, bounded=False)
        return found

    async def drop_leases(self, keys: Sequence[ResourceKey] | None) -> int:
        """Delete the leases of ``keys`` (all under the prefix if ``None``), whoever holds them,
        and wake their waiters; return how many existed.

        Raises:
            RedisUnavailable: Redis could not be reached.
        """
        layout = self.layout
        args: list[Arg] = [layout.channel, self.token, len(layout.lease_key(""))]
        dropped = 0

        async def drop(names: Sequence[str | bytes]) -> None:
            nonlocal dropped
            dropped += int(await self.scripts.drop_leases(keys=names, args=args))

        async def run() -> None:
            if keys is not None:
                await drop([layout.lease_key(key_name(key)) for key in keys])
                return
            async for batch in self._scan(layout.lease_key("*")):
                await drop(batch)

        await self.link.call(run, bounded=keys is not None)
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
            thresholds = [_threshold(now, policies[key].ttl_seconds) for key in keys]
        names = [key_name(key) for key in keys]
        layout = self.layout
        values = [layout.value_key(n) for n in names]
        script_keys = values + [layout.lease_key(n) for n in names]
        args: list[Arg] = [token, self.lease_ms, repr(self.bound(now)), *thresholds]
        replies, bad = await self.link.call(lambda: self.scripts.poll(keys=script_keys, args=args))
        self.counters.bad_leases += int(bad)
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
        lookups = await self.reader.judge(
            keys, [v for _, v, _ in found], [raw for _, _, raw in found], now, policies
        )
        return {key: lookup for key, lookup in lookups.items() if lookup.fresh}

    @property
    def lease_ms(self) -> int:
        """How long a lease lives unless renewed, in milliseconds."""
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
