"""The interfaces users plug in: caches, sources, and observability sinks.

The builder checks a plug-in against these once, when it is registered, and keeps what it learned
in an internal adapter; nothing on the hot path probes attributes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

from ._keys import ResourceKey
from ._lookups import CacheLookup, CacheWriteResult
from ._policies import FreshnessPolicy
from ._values import FetchContext, SnapshotValue, SourcePayload

if TYPE_CHECKING:
    from ._snapshot import Snapshot


@runtime_checkable
class AsyncCache(Protocol):
    """The minimal cache: read one key, write one value, invalidate, clear."""

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> CacheLookup:
        """Look ``key`` up, judging freshness at wall-clock ``now`` under ``policy``."""
        ...

    async def set(self, value: SnapshotValue[Any]) -> None:
        """Store ``value`` unconditionally."""
        ...

    async def invalidate(self, key: ResourceKey) -> None:
        """Drop ``key``."""
        ...

    async def clear(self) -> None:
        """Drop everything."""
        ...


@runtime_checkable
class AtomicAsyncCache(AsyncCache, Protocol):
    """A cache that can compare-and-write: monotonic by ``observed_at`` (and authority)."""

    async def set_if_newer(
        self, value: SnapshotValue[Any], *, force: bool = False, replace_equal: bool = False
    ) -> CacheWriteResult:
        """Store ``value`` unless the cache holds a newer (or higher-authority) revision."""
        ...


@runtime_checkable
class BatchAsyncCache(Protocol):
    """A cache that reads, writes and invalidates many keys in one operation."""

    async def get_many(
        self,
        keys: Collection[ResourceKey],
        *,
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> Mapping[ResourceKey, CacheLookup]:
        """Look up every key of ``keys`` (each under its policy in ``policies``)."""
        ...

    async def set_many(self, values: Collection[SnapshotValue[Any]]) -> None:
        """Store every value unconditionally."""
        ...

    async def invalidate_many(self, keys: Collection[ResourceKey]) -> None:
        """Drop every key of ``keys``."""
        ...


@runtime_checkable
class BatchAtomicAsyncCache(BatchAsyncCache, Protocol):
    """A batch cache with an atomic conditional batch write."""

    async def set_many_if_newer(
        self,
        values: Collection[SnapshotValue[Any]],
        *,
        force: bool = False,
        replace_equal: bool = False,
    ) -> Mapping[ResourceKey, CacheWriteResult]:
        """``set_if_newer`` for every value, atomically as one operation."""
        ...


@runtime_checkable
class AuthorityAwareCache(Protocol):
    """A cache whose conditional writes compare ``SnapshotValue.authority_rank`` before
    ``observed_at``. Declare ``validates_source_authority = True``; the builder refuses authority
    rules with a cache that does not."""

    @property
    def validates_source_authority(self) -> bool:
        """True when conditional writes honour authority ranks."""
        ...


@runtime_checkable
class SourceBase(Protocol):
    """What every source has: a unique ``name``, a ``priority`` (higher is tried first) and a
    ``supports(key)`` test."""

    @property
    def name(self) -> str:
        """The source's unique, stable name (used in metrics labels and provenance)."""
        ...

    @property
    def priority(self) -> int:
        """Higher priorities are tried first."""
        ...

    def supports(self, key: ResourceKey) -> bool:
        """True when this source can serve ``key``."""
        ...


@runtime_checkable
class SnapshotSource(SourceBase, Protocol):
    """A source that fetches one key per call."""

    async def fetch(self, key: ResourceKey, context: FetchContext) -> SourcePayload[Any]:
        """Fetch ``key``."""
        ...


@runtime_checkable
class BatchSnapshotSource(SourceBase, Protocol):
    """A source that fetches many keys per call; it may omit keys it cannot serve."""

    async def fetch_many(
        self, keys: Collection[ResourceKey], context: FetchContext
    ) -> Mapping[ResourceKey, SourcePayload[Any]]:
        """Fetch ``keys``; keys missing from the result fall through to lower priorities."""
        ...


@runtime_checkable
class DerivedSource(SourceBase, Protocol):
    """A source that computes a key from a snapshot of other keys."""

    def dependencies(self, key: ResourceKey) -> Collection[ResourceKey]:
        """The keys ``key`` is computed from."""
        ...

    async def derive(
        self, key: ResourceKey, dependencies: Snapshot, context: FetchContext
    ) -> SourcePayload[Any]:
        """Compute ``key`` from the resolved ``dependencies``."""
        ...


Source: TypeAlias = SnapshotSource | BatchSnapshotSource | DerivedSource
"""Any of the three source kinds."""


@runtime_checkable
class BatchSizedSource(Protocol):
    """A batch source that caps how many keys one call may receive."""

    @property
    def max_batch_size(self) -> int | None:
        """The most keys per call, or ``None`` for no cap."""
        ...


@runtime_checkable
class ConcurrencyLimitedSource(Protocol):
    """A source that declares how many of its calls may run at once."""

    @property
    def max_concurrency(self) -> int | None:
        """The most concurrent calls, or ``None`` for only the builder-wide limit."""
        ...


@runtime_checkable
class ResilienceConfiguredSource(Protocol):
    """A source that declares its own retry and circuit-breaker policy."""

    @property
    def resilience_policy(self) -> object | None:
        """The source's :class:`~coalestra.resilience.SourceResiliencePolicy`, or ``None`` for
        the builder's (typed ``object`` here: ``core`` imports nothing else of the library;
        the builder checks the type when it registers the source)."""
        ...


@runtime_checkable
class EventSink(Protocol):
    """Receives structured events (full resource identity is allowed here)."""

    def emit(self, event_type: str, **payload: Any) -> None:
        """Record one event; must not block."""
        ...


@runtime_checkable
class MetricsSink(Protocol):
    """Receives counters and observations with low-cardinality labels."""

    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        """Add ``value`` to a counter."""
        ...

    def observe(self, metric: str, value: float, **labels: str) -> None:
        """Record one observation (a latency, a size)."""
        ...


@runtime_checkable
class LeasingCache(Protocol):
    """A shared cache that can coordinate fetches between processes (e.g. a Redis tier).

    Before a builder calls sources for keys it owns locally, it leases them; keys another
    process holds leases for are waited on instead, and served from the cache when their values
    arrive. A lease held by a process that died expires, and a waiter takes it over. Every
    method may fail: the builder then simply fetches the keys itself.
    """

    async def lease_many(self, keys: Collection[ResourceKey]) -> Collection[ResourceKey]:
        """Try to take the fetch lease of each key; return the keys this process now holds."""
        ...

    async def release_many(self, keys: Collection[ResourceKey]) -> None:
        """Give back leases this process holds (after writing the values, or on failure)."""
        ...

    async def wait_for_many(
        self,
        keys: Collection[ResourceKey],
        *,
        wait_seconds: float | None,
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> Mapping[ResourceKey, CacheLookup]:
        """Wait until each key has a fresh value or its lease is gone, or ``wait_seconds`` pass;
        return lookups of the keys whose fresh values arrived (the rest may be leased again)."""
        ...
