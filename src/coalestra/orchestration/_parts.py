"""Building the builder's parts from its settings (one function per part)."""

from __future__ import annotations

from ..cache import ResourcePublisher
from ..concurrency import CapacityController
from ..observability._instrumentation import Instrumentation
from ._cache_access import CacheAccess
from ._config import BuilderSettings
from ._counters import EngineCounters
from ._engine import Engine
from ._gate import SourceGate
from ._results import ValueFactory
from ._sources import SourceChains


def make_capacity(settings: BuilderSettings) -> CapacityController:
    """The builder-wide and per-source limits."""
    capacity = CapacityController(global_limit=settings.max_concurrency)
    for name, limit in settings.source_limits.items():
        capacity.register_source(name, limit)
    return capacity


def make_engine(
    settings: BuilderSettings,
    capacity: CapacityController,
    counters: EngineCounters,
    report: Instrumentation,
) -> Engine:
    """The resolution engine every build and session of the builder shares."""
    engine = Engine(
        sources=settings.sources,
        chains=SourceChains(
            settings.sources,
            enabled=settings.cache_source_support,
            max_entries=settings.support_cache_max_entries,
        ),
        cache=CacheAccess(settings.cache, max_pending_tasks=settings.max_pending_tasks),
        gate=SourceGate(
            capacity=capacity,
            breaker=settings.breaker,
            clock=settings.clock,
            counters=counters,
            report=report,
            tracer=settings.tracer,
        ),
        factory=ValueFactory(
            clock=settings.clock,
            policy_for=settings.policies.resolve,
            observation=settings.observation,
            authority=settings.authority,
            isolator=settings.isolator,
        ),
        isolator=settings.isolator,
        policies=settings.policies,
        clock=settings.clock,
        report=report,
        counters=counters,
        max_pending_tasks=settings.max_pending_tasks,
    )
    if settings.single_flight is not None:
        engine.flights = settings.single_flight
    return engine


def make_publisher(settings: BuilderSettings) -> ResourcePublisher:
    """The publisher over the builder's cache, with the builder's policies."""
    return ResourcePublisher(
        cache=settings.cache,
        clock=settings.clock,
        policy_resolver=settings.policies,
        metrics=settings.metrics,
        events=settings.events,
        observation_policy=settings.observation,
        payload_isolator=settings.isolator,
        authority_resolver=settings.authority,
        max_pending_tasks=settings.max_pending_tasks,
    )
