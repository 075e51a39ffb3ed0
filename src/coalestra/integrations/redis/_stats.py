"""Statistics of the Redis caches: mutable counters inside, frozen snapshots outside."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import final

from ...cache import CacheStats
from ._link import Link
from ._notifier import Notifier


@final
@dataclass(slots=True)
class Counters:
    """What a :class:`~coalestra.integrations.redis.RedisCache` counts (cumulative); each is
    the :class:`RedisCacheStats` field of the same name."""

    fresh_hits: int = 0
    stale_hits: int = 0
    misses: int = 0
    sets: int = 0
    ignored_writes: int = 0
    invalidations: int = 0
    rejected_entries: int = 0
    dropped_derived: int = 0
    leases_granted: int = 0
    leases_refused: int = 0
    leases_granted_locally: int = 0
    lease_takeovers: int = 0
    lease_waits: int = 0
    degraded_calls: int = 0
    bad_leases: int = 0
    dropped_bad_entries: int = 0
    ghost_releases: int = 0
    lease_renewals: int = 0
    lease_waits_abandoned: int = 0
    leases_lost: int = 0
    refused_values: int = 0


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
        rejected_entries: entries read but refused (decode refusals): unsigned or tampered
            (signed serializers), malformed, stored under another key, of another format, or
            with a timestamp that is not finite or lies beyond ``future_tolerance_seconds``.
            Each was read as a miss.
        dropped_bad_entries: refused entries deleted from Redis, so the next write replaces
            them.
        refused_values: values not written because the serializer refused them (each was
            still served, and kept in a tiered cache's L1); the first of each payload type is
            logged with the reason.
        dropped_derived: derived values dropped because a dependency changed.
        leases_granted / leases_refused: fetch leases taken / left to another process.
        leases_granted_locally: leases granted without Redis (it was unreachable).
        leases_held: leases this process holds (and renews) right now.
        lease_renewals: lease renewals that succeeded (one per lease per renewal).
        leases_lost: leases found expired or taken over at renewal (the holder was too slow).
        lease_takeovers: leases taken while waiting, from a holder that released or died.
        lease_waits: calls that waited for another process's fetch.
        lease_waits_abandoned: waits that gave up to leave the caller time to fetch itself.
        ghost_releases: leases deleted after Redis applied a request this process had given
            up on (a timed-out lease request, or release).
        bad_leases: leases without expiry (foreign or corrupt) deleted and treated as absent.
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
    dropped_bad_entries: int = 0
    refused_values: int = 0
    leases_held: int = 0
    lease_renewals: int = 0
    leases_lost: int = 0
    lease_waits_abandoned: int = 0
    ghost_releases: int = 0
    bad_leases: int = 0

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


def snapshot(counters: Counters, link: Link, notifier: Notifier, held: int) -> RedisCacheStats:
    """The statistics of a cache made of these parts, as of now."""
    return RedisCacheStats(
        hits=counters.fresh_hits + counters.stale_hits,
        available=link.available,
        errors=link.errors + notifier.errors,
        outages=link.outages,
        last_error=link.last_error,
        subscribed=notifier.subscribed,
        subscriptions=notifier.subscriptions,
        leases_held=held,
        **asdict(counters),
    )
