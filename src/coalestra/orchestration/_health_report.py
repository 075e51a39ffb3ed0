"""A builder's health: :func:`builder_health` assembles ``BuilderHealth`` from its parts."""

from __future__ import annotations

from ..core import BuilderHealth
from ._transport import timeout_health
from ._wiring import BuilderParts


async def builder_health(parts: BuilderParts, *, closed: bool) -> BuilderHealth:
    """An aggregated, immutable view of the builder's state; calls no source."""
    engine, counters = parts.engine, parts.counters
    stats = getattr(parts.cache, "stats", None)
    return BuilderHealth(
        closed=closed,
        background_refreshes=len(engine.refresh_tasks),
        singleflight_in_flight=len(engine.flights),
        source_support_cache_entries=len(engine.chains),
        capacity=parts.capacity.snapshot_now(),
        cache=await stats() if callable(stats) else None,
        circuits=await parts.breaker.snapshot(),
        active_dispatch_workers=engine.active_workers,
        waiting_for_capacity=parts.capacity.waiting_total(),
        queue_timeout_count=counters.queue_timeouts,
        source_timeout_count=counters.source_timeouts,
        deadline_exceeded_count=counters.deadline_exceeded,
        revalidation_attempt_count=counters.revalidation_attempts,
        revalidation_failure_count=counters.revalidation_failures,
        **parts.observability.health_fields(),
        **timeout_health(parts.source_timeouts, counters),
        **parts.copies.health(),
    )
