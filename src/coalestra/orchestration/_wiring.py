"""The builder's parts, made once from its checked options: :class:`BuilderParts`.

:class:`~._builder.SnapshotBuilder` checks its options (:class:`~._options.BuilderOptions`)
and hands them here; everything its builds, sessions, publications, health and shutdown use
is made here, once, in dependency order: clock, sources, cache, policies, copies, sinks,
capacity, then the engine (:class:`Engine`) and the publisher that share them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import final

from ..cache import AsyncMemoryCache, ResourcePublisher
from ..concurrency import CapacityController
from ..core import (
    AsyncCache,
    AuthorityPolicyResolver,
    Clock,
    EventSink,
    FreshnessPolicyProvider,
    MetricsSink,
    ObservationPolicy,
    PayloadIsolator,
    Source,
    SystemClock,
)
from ..core._copy_runner import PayloadCopyRunner
from ..observability import NullEventSink, NullMetrics
from ..observability._buffering import ObservabilityBuffers
from ..observability._instrumentation import Instrumentation
from ..observability._tracing import NullTracer, Tracer
from ..resilience import CircuitBreaker, ResiliencePolicyResolver
from ._assembly import lookup_and_claim as _lookup_and_claim
from ._assembly import resolve as _resolve
from ._batching import BatchCollector
from ._cache_access import CacheAccess
from ._copy_jobs import BuilderCopies
from ._counters import EngineCounters
from ._engine import start as _start
from ._flights import SingleFlight
from ._gate import SourceGate
from ._notfound import NotFoundMemory
from ._options import BuilderOptions
from ._payloads import SourceCopies, ValueFactory
from ._policy import PolicyResolver
from ._resolvers import (
    authority_provider,
    check_authority_cache,
    freshness_provider,
    resilience_provider,
)
from ._source_tables import check_limits, check_named_sources
from ._sources import RegisteredSource, SourceChains, register_sources
from ._transport import SourceTimeoutSummary, TransportGuard, check_source_timeouts


@final
class Engine:
    """The engine: the parts every build and session of one builder share (sources, cache
    access, gate, single-flight table, limits). What it does lives where each step is read:
    steps 2-3 of a build in :mod:`._assembly`, a group's resolution in :mod:`._engine`,
    background refreshes and shutdown in :mod:`._background`."""

    def __init__(
        self,
        *,
        sources: tuple[RegisteredSource, ...],
        chains: SourceChains,
        cache: CacheAccess,
        gate: SourceGate,
        factory: ValueFactory,
        isolator: PayloadIsolator,
        copies: SourceCopies,
        policies: FreshnessPolicyProvider,
        clock: Clock,
        report: Instrumentation,
        counters: EngineCounters,
        max_pending_tasks: int,
        batch_window_seconds: float | None = None,
    ) -> None:
        self.sources = sources
        self.source_order = {source.name: source.index for source in sources}
        self.chains = chains
        self.cache = cache
        self.gate = gate
        self.factory = factory
        self.isolator = isolator
        self.copies = copies  # copies off the loop, in the builder's copy runner
        self.policy_for = policies.resolve
        # Every key's policy when no rule picks another: no per-key resolution then.
        self.constant_policy = policies.constant if isinstance(policies, PolicyResolver) else None
        self.clock = clock
        self.report = report
        self.counters = counters
        self.max_pending_tasks = max_pending_tasks
        self.flights = SingleFlight()
        self.active_workers = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.refresh_tasks: set[asyncio.Task[None]] = set()
        self.closed = False  # set by shutdown(): no background refresh starts after it
        self.not_found = NotFoundMemory(None, clock)  # the builder sets its TTL (opt-in)
        self.batches = BatchCollector(gate, clock, counters, self.tasks, batch_window_seconds)

    # For the session and derivations, which hold the engine: steps 2-3, and the start of the
    # task that resolves the keys a build owns.
    resolve = _resolve
    lookup_and_claim = _lookup_and_claim
    start = _start


@final
class BuilderParts:
    """Everything one builder is made of, wired from its options."""

    __slots__ = (
        "authority",
        "breaker",
        "cache",
        "capacity",
        "clock",
        "copies",
        "counters",
        "engine",
        "events",
        "given_events",
        "given_metrics",
        "isolator",
        "max_pending_tasks",
        "metrics",
        "observability",
        "observation",
        "policies",
        "publisher",
        "report",
        "resilience",
        "source_timeouts",
        "sources",
        "tracer",
    )

    def __init__(self, sources: Iterable[Source], options: BuilderOptions) -> None:
        self.clock: Clock = SystemClock() if options.clock is None else options.clock
        self.resilience: ResiliencePolicyResolver = resilience_provider(options)
        registered = register_sources(
            sources, self.resilience, options.default_source_timeout_seconds
        )
        check_named_sources("source_resilience", options.source_resilience, registered)
        self.source_timeouts: SourceTimeoutSummary = check_source_timeouts(
            registered,
            require=options.require_source_timeout_declarations,
            allow_unsafe=options.allow_unsafe_blocking_sources,
        )
        self.sources: tuple[RegisteredSource, ...] = registered
        self.authority = authority_provider(options.authority_policy, options.authority_resolver)
        limits = check_limits(options.source_concurrency, registered)
        self.cache: AsyncCache = _default_cache(options) if options.cache is None else options.cache
        rules = self.authority if self.authority.has_rules else None
        ranked = check_authority_cache(rules, self.cache)
        self.policies: FreshnessPolicyProvider = freshness_provider(
            options.default_policy, options.policy_resolver
        )
        given_breaker = options.circuit_breaker
        self.breaker = CircuitBreaker(clock=self.clock) if given_breaker is None else given_breaker
        given_observation = options.observation_policy
        self.observation = ObservationPolicy() if given_observation is None else given_observation
        pending = options.max_pending_tasks
        self.max_pending_tasks: int = options.max_concurrency if pending is None else pending
        self.isolator = PayloadIsolator(options.payload_copier)
        self.tracer: Tracer = NullTracer() if options.tracer is None else options.tracer
        self._observe(options)
        self.counters = EngineCounters()
        self.capacity = CapacityController(global_limit=options.max_concurrency)
        for name, limit in limits.items():
            self.capacity.register_source(name, limit)
        runner = self._copy_runner(options)
        self.engine = self._make_engine(options, ranked)
        self.publisher = self._make_publisher(options, ranked, runner)

    def _observe(self, options: BuilderOptions) -> None:
        # The sinks as given: what ``manage_lifecycle`` closes. Every part reports to
        # ``metrics``/``events``: the same sinks, or the builder's buffers around them.
        self.given_metrics: MetricsSink = (
            NullMetrics() if options.metrics is None else options.metrics
        )
        self.given_events: EventSink = NullEventSink() if options.events is None else options.events
        self.observability = ObservabilityBuffers(
            self.given_metrics,
            self.given_events,
            mode=options.buffer_observability,
            max_pending=options.observability_max_pending,
            overflow=options.observability_overflow,
            drain=options.observability_drain_on_shutdown,
        )
        self.metrics: MetricsSink = self.observability.metrics
        self.events: EventSink = self.observability.events
        self.report = Instrumentation(self.metrics, self.events)

    def _copy_runner(self, options: BuilderOptions) -> PayloadCopyRunner:
        """The builder's payload-copy runner (shared with its publisher)."""
        given = options.run_payload_copies_in_thread
        runner = PayloadCopyRunner(
            "builder",
            run_in_thread=self.isolator.uses_default_copier if given is None else given,
            max_concurrency=options.max_copy_concurrency,
            clock=self.clock,
        )
        self.copies = BuilderCopies(runner, self.cache, owns_cache=options.cache is None)
        return runner

    def _make_engine(
        self, options: BuilderOptions, ranked: AuthorityPolicyResolver | None
    ) -> Engine:
        """The resolution engine every build and session of this builder shares."""
        clock = self.clock
        copies = SourceCopies(
            self.isolator,
            self.copies.components["builder"],
            self.counters,
            offload_all=options.run_payload_copies_in_thread is True,
        )
        engine = Engine(
            sources=self.sources,
            chains=SourceChains(
                self.sources,
                enabled=options.cache_source_support,
                max_entries=options.source_support_cache_max_entries,
            ),
            cache=CacheAccess(
                self.cache, max_pending_tasks=self.max_pending_tasks, isolator=self.isolator
            ),
            gate=self._make_gate(options),
            factory=ValueFactory(
                clock=clock,
                policy_for=self.policies.resolve,
                observation=self.observation,
                authority=ranked,
                isolator=self.isolator,
                report=self.report,
                copies=copies,
            ),
            isolator=self.isolator,
            copies=copies,
            policies=self.policies,
            clock=clock,
            report=self.report,
            counters=self.counters,
            max_pending_tasks=self.max_pending_tasks,
            batch_window_seconds=options.batch_window_seconds,
        )
        if options.single_flight is not None:
            engine.flights = options.single_flight
        engine.not_found = NotFoundMemory(options.not_found_ttl_seconds, clock)
        return engine

    def _make_gate(self, options: BuilderOptions) -> SourceGate:
        """The gate every source call passes: capacity, circuits, retries, timeouts."""
        return SourceGate(
            capacity=self.capacity,
            breaker=self.breaker,
            clock=self.clock,
            counters=self.counters,
            report=self.report,
            tracer=self.tracer,
            transport=TransportGuard(
                clock=self.clock,
                counters=self.counters,
                report=self.report,
                transport_grace=options.source_transport_timeout_grace_seconds,
                dispatch_grace=options.source_deadline_dispatch_grace_seconds,
            ),
        )

    def _make_publisher(
        self,
        options: BuilderOptions,
        ranked: AuthorityPolicyResolver | None,
        runner: PayloadCopyRunner,
    ) -> ResourcePublisher:
        publisher = ResourcePublisher(
            cache=self.cache,
            clock=self.clock,
            policy_resolver=self.policies,
            metrics=self.metrics,
            events=self.events,
            observation_policy=self.observation,
            payload_isolator=self.isolator,
            authority_resolver=ranked,
            max_pending_tasks=self.max_pending_tasks,
            run_payload_copies_in_thread=options.run_payload_copies_in_thread,
            max_copy_concurrency=options.max_copy_concurrency,
        )
        publisher._share_copy_runner(runner)  # its aclose() does not stop the builder's
        return publisher


def _default_cache(options: BuilderOptions) -> AsyncMemoryCache:
    """The cache when none is given; the ``cache_*`` copy options configure it."""
    return AsyncMemoryCache(
        payload_copier=options.payload_copier,
        run_payload_copies_in_thread=options.cache_run_payload_copies_in_thread,
        max_copy_concurrency=options.cache_max_copy_concurrency,
    )
