"""The builder's read-only attributes: :class:`BuilderAttributes`, a base of
:class:`~._builder.SnapshotBuilder` holding its properties (the options read back, and the
parts every build shares), so the builder's own module holds what it does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..cache import ResourcePublisher
from ..concurrency import CapacityController
from ..core import (
    AsyncCache,
    AuthorityPolicyResolver,
    Clock,
    EventSink,
    MetricsSink,
    ObservationPolicy,
    PayloadIsolator,
    Source,
)
from ..observability import BufferOverflowPolicy
from ..resilience import CircuitBreaker, ResiliencePolicyResolver, RetryPolicy
from ._copy_jobs import CopyShutdown
from ._flights import SingleFlight
from ._policy import PolicyResolver

if TYPE_CHECKING:
    from ._assembly import Builds
    from ._options import BuilderOptions
    from ._wiring import BuilderParts, Engine


class BuilderAttributes(CopyShutdown):
    """The properties of :class:`~._builder.SnapshotBuilder` (see there)."""

    if TYPE_CHECKING:
        _builds: Builds
        _engine: Engine
        _options: BuilderOptions
        _parts: BuilderParts

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has begun."""
        return self._builds.closed

    @property
    def capacity(self) -> CapacityController:
        """The capacity controller shared by every build, session and background refresh.

        Built from ``max_concurrency`` (its ``"__global__"`` limit), ``source_concurrency`` and
        each source's own ``max_concurrency`` (an explicit ``source_concurrency`` entry wins).
        """
        return self._parts.capacity

    @property
    def publisher(self) -> ResourcePublisher:
        """Publishes pushed events into this builder's cache (monotonic by default)."""
        return self._parts.publisher

    @property
    def cache(self) -> AsyncCache:
        """The cache shared by builds, sessions and the publisher."""
        return self._parts.cache

    @property
    def clock(self) -> Clock:
        """The clock every TTL, deadline and backoff of this builder reads."""
        return self._parts.clock

    @property
    def policy_resolver(self) -> PolicyResolver:
        """Each key's freshness policy (built from ``default_policy`` when none was given)."""
        return self._parts.policies  # type: ignore[return-value]  # duck-typed resolvers

    @property
    def authority_resolver(self) -> AuthorityPolicyResolver:
        """Which source's revision may replace which (no rules: every source ranks 0)."""
        return self._parts.authority

    @property
    def single_flight(self) -> SingleFlight:
        """The table of keys being resolved right now, shared by every build and session."""
        return self._engine.flights

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy of sources no other policy covers (default ``RetryPolicy()``)."""
        given = self._options.retry_policy
        return self._parts.resilience.default.retry if given is None else given

    @property
    def circuit_breaker(self) -> CircuitBreaker:
        """The circuits of every source (default: one on this builder's clock)."""
        return self._parts.breaker

    @property
    def resilience_resolver(self) -> ResiliencePolicyResolver:
        """Each source's retry and circuit policy."""
        return self._parts.resilience

    @property
    def metrics(self) -> MetricsSink:
        """The metrics sink (a null sink by default); the builder's buffer around the given
        sink when ``buffer_observability`` chose to buffer it."""
        return self._parts.metrics

    @property
    def events(self) -> EventSink:
        """The event sink (a null sink by default); the builder's buffer around the given
        sink when ``buffer_observability`` chose to buffer it."""
        return self._parts.events

    @property
    def buffer_observability(self) -> bool | str | None:
        """The ``buffer_observability`` choice, as given (``None``: sinks called directly)."""
        return self._options.buffer_observability

    @property
    def observability_max_pending(self) -> int:
        """The bound of the buffers the builder makes around its sinks."""
        return self._options.observability_max_pending

    @property
    def observability_overflow(self) -> BufferOverflowPolicy:
        """What the builder's buffers do with a record when full."""
        return self._options.observability_overflow

    @property
    def observability_shutdown_timeout_seconds(self) -> float:
        """How long :meth:`aclose` lets the builder's buffers deliver, by default."""
        return self._options.observability_shutdown_timeout_seconds

    @property
    def observability_drain_on_shutdown(self) -> bool:
        """True when :meth:`aclose` delivers queued records (False: discards them)."""
        return self._options.observability_drain_on_shutdown

    @property
    def observation_policy(self) -> ObservationPolicy:
        """How ``observed_at`` stamps in the future are treated."""
        return self._parts.observation

    @property
    def cache_source_support(self) -> bool:
        """True when ``supports()`` answers are cached."""
        return self._options.cache_source_support

    @property
    def source_support_cache_max_entries(self) -> int | None:
        """The most keys whose ``supports()`` answers are kept (``None``: no limit)."""
        return self._options.source_support_cache_max_entries

    @property
    def manage_lifecycle(self) -> bool:
        """True when :meth:`aclose` also closes the sinks and the cache."""
        return self._options.manage_lifecycle

    @property
    def close_timeout_seconds(self) -> float | None:
        """How long :meth:`aclose` waits for background refreshes before cancelling them
        (``None``: as long as they take)."""
        return self._options.close_timeout_seconds

    @property
    def default_source_timeout_seconds(self) -> float | None:
        """The call timeout of sources that declare none (``None``: unbounded)."""
        return self._options.default_source_timeout_seconds

    @property
    def batch_window_seconds(self) -> float | None:
        """How long batch calls gather keys from concurrent builds (``None``: they do not),
        for batch sources that do not set their own."""
        return self._options.batch_window_seconds

    @property
    def require_source_timeout_declarations(self) -> bool | None:
        """``True`` when sources must declare ``blocking_io``; ``None`` (the default) or
        ``False``: undeclared sources are accepted."""
        return self._options.require_source_timeout_declarations

    @property
    def allow_unsafe_blocking_sources(self) -> bool:
        """True when blocking sources that are not protected are accepted."""
        return self._options.allow_unsafe_blocking_sources

    @property
    def source_transport_timeout_grace_seconds(self) -> float:
        """How late a protected source's call may end before it counts as a violation."""
        return self._options.source_transport_timeout_grace_seconds

    @property
    def source_deadline_dispatch_grace_seconds(self) -> float:
        """How far a transport timeout may exceed the time left before the deadline with the
        call still started."""
        return self._options.source_deadline_dispatch_grace_seconds

    @property
    def max_concurrency(self) -> int:
        """Source calls running at once across all builds, sessions and refreshes."""
        return self._options.max_concurrency

    @property
    def max_pending_tasks(self) -> int:
        """Workers per dispatch (default: ``max_concurrency``)."""
        return self._parts.max_pending_tasks

    @property
    def sources(self) -> tuple[Source, ...]:
        """The sources as given, highest priority first."""
        return tuple(entry.origin for entry in self._parts.sources)  # type: ignore[misc]

    @property
    def payload_isolator(self) -> PayloadIsolator:
        """The isolator (``payload_copier``) copying payloads at this builder's boundaries."""
        return self._parts.isolator

    @property
    def not_found_ttl_seconds(self) -> float | None:
        """How long a not-found key is remembered (``None``: never)."""
        return self._engine.not_found.ttl_seconds
