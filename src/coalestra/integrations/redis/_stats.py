"""Statistics of the Redis caches: mutable counters inside, frozen snapshots outside."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import final

from ...cache import CacheStats
from ._link import Link
from ._notifier import Notifier


@final
class Counters:
    """What a :class:`~coalestra.integrations.redis.RedisCache` counts (cumulative)."""

    __slots__ = (
        "degraded_calls",
        "dropped_derived",
        "fresh_hits",
        "ignored_writes",
        "invalidations",
        "lease_takeovers",
        "lease_waits",
        "leases_granted",
        "leases_granted_locally",
        "leases_refused",
        "misses",
        "rejected_entries",
        "sets",
        "stale_hits",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    fresh_hits: int
    stale_hits: int
    misses: int
    sets: int
    ignored_writes: int
    invalidations: int
    rejected_entries: int
    dropped_derived: int
    leases_granted: int
    leases_refused: int
    leases_granted_locally: int
    lease_takeovers: int
    lease_waits: int
    degraded_calls: int


@final
@dataclass(frozen=True, slots=True)
class RedisCacheStats:
    """A point-in-time view of a :class:`~coalestra.integrations.redis.RedisCache`.

    Counters are process-local and cumulative since the cache was made.

    Attributes:
        hits, fresh_hits, stale_hits, misses: read outcomes, as for the memory cache.
        sets: values written (unconditional writes and stored conditional writes).
        ignored_writes: conditional writes that lost to the stored revision.
        invalidations: keys invalidated through this cache.
        rejected_entries: entries read but refused: unsigned or tampered (signed
            serializers), malformed, or of another format. Each was read as a miss.
        dropped_derived: derived values dropped because a dependency changed.
        leases_granted / leases_refused: fetch leases taken / left to another process.
        leases_granted_locally: leases granted without Redis (it was unreachable).
        lease_takeovers: leases taken while waiting, from a holder that released or died.
        lease_waits: calls that waited for another process's fetch.
        available: Redis answered the last command.
        errors: failed commands (connection failures, timeouts, refused commands).
        degraded_calls: operations that degraded (miss, skipped write, local lease).
        outages: times Redis went from reachable to unreachable.
        last_error: the last failure, as ``"Type: message"``, or ``None``.
        subscribed: the event subscription is up (always ``False`` before its first use).
        subscriptions: (re)subscriptions so far; each after the first follows a gap.
    """

    hits: int
    fresh_hits: int
    stale_hits: int
    misses: int
    sets: int
    ignored_writes: int
    invalidations: int
    rejected_entries: int
    dropped_derived: int
    leases_granted: int
    leases_refused: int
    leases_granted_locally: int
    lease_takeovers: int
    lease_waits: int
    available: bool
    errors: int
    degraded_calls: int
    outages: int
    last_error: str | None
    subscribed: bool
    subscriptions: int

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{field.name} must be >= 0, got {value}")


@final
@dataclass(frozen=True, slots=True)
class TieredCacheStats:
    """A point-in-time view of a :class:`~coalestra.integrations.redis.TieredCache`.

    Attributes:
        l1: the in-process tier's statistics.
        l2: the Redis tier's statistics.
        l1_drops: times the whole L1 was dropped (resubscription or Redis recovery).
        remote_invalidations: keys dropped from L1 because another process changed them.
        skipped_fills: L2 results not copied into L1 because the key changed meanwhile.
    """

    l1: CacheStats
    l2: RedisCacheStats
    l1_drops: int
    remote_invalidations: int
    skipped_fills: int


def snapshot(counters: Counters, link: Link, notifier: Notifier) -> RedisCacheStats:
    """The statistics of a cache made of these parts, as of now."""
    return RedisCacheStats(
        hits=counters.fresh_hits + counters.stale_hits,
        fresh_hits=counters.fresh_hits,
        stale_hits=counters.stale_hits,
        misses=counters.misses,
        sets=counters.sets,
        ignored_writes=counters.ignored_writes,
        invalidations=counters.invalidations,
        rejected_entries=counters.rejected_entries,
        dropped_derived=counters.dropped_derived,
        leases_granted=counters.leases_granted,
        leases_refused=counters.leases_refused,
        leases_granted_locally=counters.leases_granted_locally,
        lease_takeovers=counters.lease_takeovers,
        lease_waits=counters.lease_waits,
        available=link.available,
        errors=link.errors + notifier.errors,
        degraded_calls=counters.degraded_calls,
        outages=link.outages,
        last_error=link.last_error,
        subscribed=notifier.subscribed,
        subscriptions=notifier.subscriptions,
    )
