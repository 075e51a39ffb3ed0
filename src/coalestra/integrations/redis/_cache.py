"""The shared cache tier: :class:`RedisCache`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Mapping
from typing import Any, final

from redis.asyncio import Redis

from ...cache._checks import (
    check_key,
    check_keys,
    check_value,
    check_values,
)
from ...core import (
    CacheLookup,
    CacheWriteResult,
    CacheWriteStatus,
    Clock,
    FreshnessPolicy,
    FreshnessPolicyProvider,
    ResourceKey,
    SnapshotValue,
)
from ...core._lookups import MISS
from ...core._validation import check_bool
from ._config import RedisCacheConfig, make_client
from ._coordination import Coordinator, check_read
from ._fleet import FleetOperations
from ._link import Link, RedisUnavailable
from ._notifier import Notifier
from ._serializers import Serializer
from ._stats import RedisCacheStats, snapshot
from ._store import RedisStore


@final
class RedisCache(FleetOperations):
    """A cache shared by many processes through Redis, with cross-process single-flight.

    Implements ``AsyncCache``, ``AtomicAsyncCache``, ``BatchAsyncCache``,
    ``BatchAtomicAsyncCache``, ``AuthorityAwareCache`` and ``LeasingCache``. Batch reads are one
    ``MGET``; conditional writes are one Lua script that applies the memory cache's rules inside
    Redis (``force``; a higher ``authority_rank`` wins; same rank: newer ``observed_at`` stored,
    older ignored, equal a duplicate unless ``replace_equal``), so racing processes can never
    replace a newer value with an older one. Reads judge freshness by ``observed_at`` under the
    caller's policy and validate derived values' dependency versions.

    Entries expire in Redis once TTL plus stale window have passed since ``observed_at``, under
    the policy ``policy_resolver`` gives for the key: pass the builder's resolver. Without one,
    entries are kept for a day (:data:`DEFAULT_RETENTION`); reads still judge freshness by the
    caller's policy. The same policy decides when a lease is needless (the value is fresh, and
    not yet due for a refresh-ahead), which closes the race of a value written between a miss
    and a lease.

    Failures never fail a build: while Redis is unreachable, reads are misses, writes and
    invalidations are skipped (conditional writes report ``STORED`` with no previous value;
    invalidations are replayed once Redis is back), leases are granted locally and waits return
    at once. A command waits at most ``socket_timeout_seconds`` in all (a free pooled connection
    included; a timed-out command is not retried), so a paused Redis holds a caller that long,
    once: after a failure, Redis is retried every ``reconnect_interval_seconds`` and calls in
    between degrade at once. Failures are counted in :meth:`stats`.

    Entries that cannot be trusted are absent: one that fails to decode, is stored under another
    key, has a timestamp that is not finite or lies more than ``future_tolerance_seconds``
    ahead, or a rank out of range, is read as a miss, deleted (unless rewritten meanwhile) and
    counted; writes replace it. A value the serializer refuses is skipped by the batch writes
    (``set_many``, ``set_many_if_newer``: the builder's path) and counted in ``refused_values``,
    while the other values of the batch are written; ``set`` and ``set_if_newer`` raise instead.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS, or
            ``unix://``; default ``redis://localhost:6379/0``.
        client: an existing ``redis.asyncio.Redis`` instead of ``url`` (not closed by
            :meth:`aclose`; configure its timeouts and retries yourself).
        prefix: starts every Redis name (isolates applications sharing a database).
        serializer: encodes entry bodies; default :class:`JsonSerializer`.
        policy_resolver: the freshness policy per key, for Redis expiry and lease decisions.
        clock: the clock for expiries, lease decisions and waits (default: system clock).
        lease_ttl_seconds: how long a fetch lease lives unless renewed (1.5 s). Its holder renews
            it every third of that while it fetches, so a holder that died or froze is noticed,
            and its keys fetched by a waiter, within this.
        poll_interval_seconds: the first pause between a lease waiter's looks while the event
            subscription is down (0.1 s, doubling up to 1 s); while it is up, waiters sleep
            until a message or the lease's expiry.
        reconnect_interval_seconds: how long to fail fast after Redis could not be reached.
        heartbeat_seconds: silence on the event subscription before it is checked with PING.
        connect_timeout_seconds: the most a new connection may take.
        socket_timeout_seconds: the most one command may take, waiting for a free pooled
            connection included (2 s); then it degrades.
        future_tolerance_seconds: how far ahead of this clock a stored ``observed_at`` may lie
            (clock skew between hosts, 60 s); entries beyond it are refused and replaced.
        max_connections: the connection pool's size, the event listener's connection included.

    Raises:
        TypeError, ValueError: a malformed argument (names it).
    """

    validates_source_authority = True
    """Conditional writes compare ``authority_rank`` before ``observed_at``, inside Redis."""

    validates_dependency_versions = True
    """Reads check derived values' ``dependency_versions`` against Redis, transitively."""

    returns_private_copies = True
    """Every read decodes the stored entry anew: a builder need not copy what it hands out."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        prefix: str = "coalestra",
        serializer: Serializer | None = None,
        policy_resolver: FreshnessPolicyProvider | None = None,
        clock: Clock | None = None,
        lease_ttl_seconds: float = 1.5,
        poll_interval_seconds: float = 0.1,
        reconnect_interval_seconds: float = 1.0,
        heartbeat_seconds: float = 1.0,
        connect_timeout_seconds: float = 2.0,
        socket_timeout_seconds: float = 2.0,
        future_tolerance_seconds: float = 60.0,
        max_connections: int = 32,
    ) -> None:
        config = RedisCacheConfig.make(
            prefix=prefix,
            serializer=serializer,
            policy_resolver=policy_resolver,
            clock=clock,
            lease_ttl_seconds=lease_ttl_seconds,
            poll_interval_seconds=poll_interval_seconds,
            reconnect_interval_seconds=reconnect_interval_seconds,
            heartbeat_seconds=heartbeat_seconds,
            connect_timeout_seconds=connect_timeout_seconds,
            socket_timeout_seconds=socket_timeout_seconds,
            future_tolerance_seconds=future_tolerance_seconds,
            max_connections=max_connections,
        )
        self._owns_client = client is None
        self._client = make_client(url, client, config)
        self._link = Link(
            config.clock, config.reconnect_interval_seconds, config.socket_timeout_seconds
        )
        self._store = RedisStore(self._client, self._link, config)
        self._notifier = Notifier(
            self._client,
            self._store.layout.channel,
            heartbeat=config.heartbeat_seconds,
            reconnect_interval=config.reconnect_interval_seconds,
            connect_timeout=config.connect_timeout_seconds,
        )
        self._coordinator = Coordinator(self._store, self._notifier)
        self._unsent: set[ResourceKey] = set()  # invalidations Redis missed, replayed later
        self._replay: asyncio.Task[None] | None = None
        self._link.on_recovered(self._schedule_replay)

    def __repr__(self) -> str:
        return f"RedisCache(prefix={self._store.layout.prefix!r})"

    @property
    def prefix(self) -> str:
        """The prefix of every Redis name of this cache."""
        return self._store.layout.prefix

    @property
    def client(self) -> Redis:
        """The Redis client in use."""
        return self._client

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> CacheLookup:
        """Look ``key`` up at wall-clock ``now`` under ``policy`` (a miss if Redis is down).

        Raises:
            TypeError, ValueError: an argument is invalid.
        """
        check_key(key)
        if not isinstance(policy, FreshnessPolicy):
            raise TypeError(f"policy must be a FreshnessPolicy, got {type(policy).__name__}")
        return (await self.get_many((key,), now=now, policies={key: policy}))[key]

    async def get_many(
        self,
        keys: Collection[ResourceKey],
        *,
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> Mapping[ResourceKey, CacheLookup]:
        """Look every key up in one round trip (plus one per level of missing dependencies of
        derived values). Entries refused by the serializer are misses (counted as rejected).

        Returns:
            One lookup per distinct key, in the order of ``keys`` (all misses if Redis is down).

        Raises:
            TypeError, ValueError: ``keys``, ``now`` or ``policies`` is invalid.
        """
        wanted = tuple(dict.fromkeys(check_keys(keys)))
        when, checked = check_read(wanted, now, policies)
        try:
            return await self._store.reader.read(wanted, when, checked)
        except RedisUnavailable:
            return self._degraded_read(wanted)

    def _degraded_read(self, keys: tuple[ResourceKey, ...]) -> dict[ResourceKey, CacheLookup]:
        counters = self._store.counters
        counters.degraded_calls += 1
        counters.misses += len(keys)
        return dict.fromkeys(keys, MISS)

    # -- writes --------------------------------------------------------------------------------

    async def set(self, value: SnapshotValue[Any]) -> None:
        """Store ``value`` unconditionally (skipped if Redis is down).

        Raises:
            TypeError: ``value`` is not a SnapshotValue.
            PayloadIsolationError: the serializer refused it (nothing is stored).
        """
        await self._write(
            (check_value(value),), force=True, replace_equal=False, previous=False, strict=True
        )

    async def set_many(self, values: Collection[SnapshotValue[Any]]) -> None:
        """Store every value unconditionally, in one script (skipped if Redis is down). A value
        the serializer refuses is skipped, counted and logged; the others are stored.

        Raises:
            TypeError: ``values`` is not a collection of SnapshotValue.
        """
        await self._write(check_values(values), force=True, replace_equal=False, previous=False)

    async def set_if_newer(
        self, value: SnapshotValue[Any], *, force: bool = False, replace_equal: bool = False
    ) -> CacheWriteResult:
        """Store ``value`` unless Redis holds a revision that wins, decided atomically in Redis.

        Returns:
            The status, the offered ``value`` and the revision held before (``None`` if none,
            unreadable, or Redis is down: then the write is skipped and reported ``STORED``).

        Raises:
            TypeError: an argument has the wrong type.
            PayloadIsolationError: the serializer refused the value (nothing is stored).
            ValueError: its authority rank is beyond +-2**53.
        """
        check_value(value)
        check_bool("force", force)
        check_bool("replace_equal", replace_equal)
        ((status, previous),) = await self._write(
            (value,), force=force, replace_equal=replace_equal, strict=True
        )
        return CacheWriteResult(status, value, previous)

    async def set_many_if_newer(
        self,
        values: Collection[SnapshotValue[Any]],
        *,
        force: bool = False,
        replace_equal: bool = False,
    ) -> Mapping[ResourceKey, CacheWriteResult]:
        """``set_if_newer`` for every value, in order, in one atomic script.

        A later value for the same key is compared with an earlier one of the batch; the
        mapping holds the last result per key. A value that cannot be stored (refused by the
        serializer, or an authority rank beyond +-2**53) is skipped, counted in
        ``refused_values`` and logged, and reported ``STORED`` with no previous revision (as
        while Redis is down: the builder serves it, and a tiered cache keeps it in L1); the
        other values are written.

        Raises:
            TypeError: an argument has the wrong type.
        """
        checked = check_values(values)
        check_bool("force", force)
        check_bool("replace_equal", replace_equal)
        outcome = await self._write(checked, force=force, replace_equal=replace_equal)
        return {
            value.key: CacheWriteResult(status, value, previous)
            for value, (status, previous) in zip(checked, outcome, strict=True)
        }

    async def _write(
        self,
        values: tuple[SnapshotValue[Any], ...],
        *,
        force: bool,
        replace_equal: bool,
        previous: bool = True,
        strict: bool = False,
    ) -> list[tuple[CacheWriteStatus, SnapshotValue[Any] | None]]:
        try:
            return await self._store.write(
                values,
                force=force,
                replace_equal=replace_equal,
                want_previous=previous,
                strict=strict,
            )
        except RedisUnavailable:
            self._store.counters.degraded_calls += 1
            return [(CacheWriteStatus.STORED, None)] * len(values)

    # -- removal -------------------------------------------------------------------------------

    async def invalidate(self, key: ResourceKey) -> None:
        """Drop ``key`` everywhere (Redis, and every tiered cache's L1).

        Raises:
            TypeError: ``key`` is not a ResourceKey.
        """
        await self.invalidate_many((check_key(key),))

    async def invalidate_many(self, keys: Collection[ResourceKey]) -> None:
        """Drop every key, in one script. If Redis is down, the invalidation is kept and
        replayed once Redis answers again (so a value doubted meanwhile is not served later).

        Raises:
            TypeError: ``keys`` is not a collection of ResourceKey (nothing is dropped).
        """
        doomed = self._unsent | set(check_keys(keys))
        try:
            await self._store.invalidate(tuple(doomed))
        except RedisUnavailable:
            self._store.counters.degraded_calls += 1
            self._unsent = doomed
            return
        self._unsent.clear()

    def _schedule_replay(self) -> None:
        if self._unsent and (self._replay is None or self._replay.done()):
            self._replay = asyncio.get_running_loop().create_task(self.invalidate_many(()))

    # -- introspection and lifecycle ------------------------------------------------------------

    async def stats(self) -> RedisCacheStats:
        """The current statistics and health (a cheap read of counters; no Redis call)."""
        return snapshot(self._store.counters, self._link, self._notifier, self._coordinator.held)

    async def aclose(self) -> None:
        """Stop renewing leases (they expire on their own), stop the event listener and close
        the client this cache made. Idempotent."""
        await self._coordinator.aclose()
        await self._notifier.aclose()
        replay, self._replay = self._replay, None
        if replay is not None and not replay.done():
            replay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replay
        if self._owns_client:
            await self._client.aclose()
