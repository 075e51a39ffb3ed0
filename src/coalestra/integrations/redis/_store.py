"""The Redis operations of the cache, each one round trip (one command or one script).

Every method raises :class:`~._link.RedisUnavailable` when Redis cannot do it; the public caches
decide how to degrade. Values are encoded before any I/O, so a payload the serializer refuses
fails the whole call and writes nothing.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, final

from redis.asyncio import Redis

from ...core import (
    CacheWriteStatus,
    PayloadIsolationError,
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


def threshold(now: float, window: float) -> str:
    # An infinite window (FreshnessPolicy accepts inf) must still reach Lua as a plain number.
    return repr(max(now - window, -1e308))


_SCAN_BATCH = 1000

_log = logging.getLogger("coalestra.integrations.redis")

Arg = bytes | str | int | float
"""A script argument."""

WriteOutcome = list[tuple[CacheWriteStatus, SnapshotValue[Any] | None]]
"""Per value, in order: what the write did and the revision it was compared with."""


def _bit(flag: bool) -> str:
    return "1" if flag else "0"


@final
class RedisStore:
    """The Redis side of one cache: reads, atomic writes, invalidation (leases: :mod:`._leases`)."""

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
        args = self._write_args(values, encoded, writing, now, force, replace_equal, want_previous)
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

    def _write_args(
        self,
        values: Sequence[SnapshotValue[Any]],
        encoded: Sequence[bytes | None],
        writing: Sequence[int],
        now: float,
        force: bool,
        replace_equal: bool,
        want_previous: bool,
    ) -> list[Arg]:
        """The write script's arguments: the flags, the layout and the bound, then four per
        value written (rank, observed_at, expiry, bytes)."""
        layout = self.layout
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
        return args

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
            async for batch in self.scan(self.layout.any_pattern):
                await self.client.unlink(*batch)
            await self.client.publish(self.layout.channel, f"c {self.token}\n")

        await self.link.call(run, bounded=False)

    async def scan(self, pattern: str) -> AsyncIterator[list[bytes]]:
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
            async for batch in self.scan(self.layout.value_key(pattern)):
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


def _new_token() -> str:
    return f"{os.getpid()}-{os.urandom(6).hex()}"
