"""The public entry point: :class:`SnapshotBuilder`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar, final, overload

from ..concurrency import CapacitySnapshot
from ..core import (
    AsyncCache,
    AuthorityPolicyResolver,
    BuilderHealth,
    Clock,
    DiagnosticsCollector,
    EventSink,
    FetchContext,
    FreshnessPolicy,
    MetricsSink,
    ObservationPolicy,
    PayloadCopier,
    RequestDegradationPolicy,
    ResourceKey,
    Snapshot,
    SnapshotBuildError,
    SnapshotRequest,
    SnapshotResult,
    SnapshotValue,
    Source,
    SourceAuthorityPolicy,
)
from ..observability import BufferOverflowPolicy
from ..observability._tracing import Tracer
from ..resilience import (
    CircuitBreaker,
    ResiliencePolicyResolver,
    RetryPolicy,
    SourceResiliencePolicy,
)
from ._assembly import (
    Builds,
    requested_keys,
)
from ._cache_access import BuildView
from ._flights import SingleFlight
from ._health_report import builder_health
from ._options import (
    BuilderOptions,
    options_help,
)
from ._policy import PolicyResolver
from ._session import SnapshotSession
from ._shutdown import BuilderLifecycle, BuilderShutdown
from ._trying import check_max_concurrent, check_try_arguments
from ._wiring import BuilderParts

T = TypeVar("T")
_NOT_OPTIONS = frozenset({"self", "sources", "given"})


@final
class SnapshotBuilder(BuilderLifecycle):
    """Builds consistent snapshots of many resources from prioritized sources.

    One long-lived builder serves every build and session of an application: its cache,
    single-flight table, circuits and capacity limits are shared by all of them.

    Args:
        sources: the sources (single, batch and derived); tried by descending ``priority``.
        {options}

    Raises:
        TypeError, ValueError: a malformed source, duplicate source names, unknown names in
            ``source_concurrency`` or ``source_resilience``, limits below 1, conflicting
            arguments, or authority rules with a cache that cannot validate them.
    """

    def __init__(
        self,
        sources: Iterable[Source],
        *,
        default_policy: FreshnessPolicy | None = None,
        policy_resolver: PolicyResolver | None = None,
        authority_policy: SourceAuthorityPolicy | None = None,
        authority_resolver: AuthorityPolicyResolver | None = None,
        cache: AsyncCache | None = None,
        single_flight: SingleFlight | None = None,
        retry_policy: RetryPolicy | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        default_resilience: SourceResiliencePolicy | None = None,
        source_resilience: Mapping[str, SourceResiliencePolicy] | None = None,
        resilience_resolver: ResiliencePolicyResolver | None = None,
        clock: Clock | None = None,
        metrics: MetricsSink | None = None,
        events: EventSink | None = None,
        max_concurrency: int = 8,
        max_pending_tasks: int | None = None,
        source_concurrency: Mapping[str, int] | None = None,
        observation_policy: ObservationPolicy | None = None,
        cache_source_support: bool = True,
        source_support_cache_max_entries: int | None = 100000,
        manage_lifecycle: bool = False,
        payload_copier: PayloadCopier | None = None,
        run_payload_copies_in_thread: bool | None = None,
        max_copy_concurrency: int = 4,
        copy_shutdown_timeout_seconds: float = 5.0,
        cache_run_payload_copies_in_thread: bool | None = None,
        cache_max_copy_concurrency: int = 4,
        tracer: Tracer | None = None,
        not_found_ttl_seconds: float | None = None,
        close_timeout_seconds: float | None = None,
        default_source_timeout_seconds: float | None = None,
        batch_window_seconds: float | None = None,
        buffer_observability: bool | str | None = None,
        observability_max_pending: int = 10000,
        observability_overflow: BufferOverflowPolicy = BufferOverflowPolicy.DROP_OLDEST,
        observability_shutdown_timeout_seconds: float = 5.0,
        observability_drain_on_shutdown: bool = True,
        require_source_timeout_declarations: bool | None = None,
        allow_unsafe_blocking_sources: bool = False,
        source_transport_timeout_grace_seconds: float = 0.05,
        source_deadline_dispatch_grace_seconds: float = 0.0,
    ) -> None:
        given = locals()  # the keyword options: every parameter but ``self`` and ``sources``
        options = BuilderOptions(**{k: v for k, v in given.items() if k not in _NOT_OPTIONS})
        self._options = options
        self._parts = parts = BuilderParts(sources, options)
        self._engine, self._copies = parts.engine, parts.copies
        self._shutdown = BuilderShutdown(parts, options)
        self._builds = Builds(parts.engine, parts.clock, parts.report, parts.tracer)

    # -- building ---------------------------------------------------------------------------

    async def build(
        self,
        keys: Iterable[ResourceKey],
        *,
        strict: bool = True,
        deadline_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        snapshot_id: str | None = None,
    ) -> Snapshot:
        """Resolve ``keys`` into a snapshot.

        Args:
            keys: the resources (duplicates are resolved once).
            strict: raise :class:`SnapshotBuildError` when any key fails (``False``: failed keys
                are only listed in ``snapshot.errors``).
            deadline_seconds: an absolute budget for the whole build; every wait ends by it.
            metadata: handed to sources in ``FetchContext.metadata``.
            snapshot_id: the snapshot's id (default: a new unique id).

        Raises:
            SnapshotBuildError: with ``strict=True``, a key failed; ``error.snapshot`` holds
                everything that resolved.
            RuntimeError: the builder is closed ("SnapshotBuilder is closed").
            TypeError, ValueError: bad arguments (raised before any source is called).
        """
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
        ordered = requested_keys(keys)
        return await self._builds.run(
            ordered,
            ordered if strict else (),
            (),
            None,
            deadline_seconds,
            metadata,
            snapshot_id,
            strict=strict,
        )

    @overload
    async def get(
        self,
        key: ResourceKey,
        *,
        expected_type: type[T],
        deadline_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> T: ...
    @overload
    async def get(
        self,
        key: ResourceKey,
        *,
        expected_type: None = None,
        deadline_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any: ...

    async def get(
        self,
        key: ResourceKey,
        *,
        expected_type: type[T] | None = None,
        deadline_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> T | Any:
        """Resolve one key and return its payload: ``build([key]).value(key)`` in one call.

        It is a strict one-key build (same cache, single-flight, retries, circuits, events and
        metrics), so a failing key counts as a failed build in the metrics.

        Args:
            key: the resource.
            expected_type: when given, the payload must be an instance of it.
            deadline_seconds / metadata: as for :meth:`build`.

        Raises:
            ResourceResolutionError: no source could resolve ``key`` (the same object as
                ``snapshot.errors[key]`` of the equivalent build; a not-found key raises its
                :class:`ResourceNotFoundError` subclass). A derived key can raise
                :class:`DependencyResolutionError` or :class:`DependencyCycleError` instead.
                Never :class:`SnapshotBuildError`: the key's own error is raised.
            TypeError: ``key`` is not a ResourceKey, or the payload is not ``expected_type``.
            SessionClosedError, ValueError: as for :meth:`build`.
        """
        if not isinstance(key, ResourceKey):
            raise TypeError(f"key must be a ResourceKey, got {type(key).__name__}")
        keys = (key,)
        try:
            snapshot = await self._builds.run(
                keys, keys, (), None, deadline_seconds, metadata, None, strict=True
            )
        except SnapshotBuildError as error:
            failure = error.errors[key]
        else:
            return snapshot.value(key, expected_type)
        # Raised outside the except block, so the key's error is not chained to the build error
        # that carried it (the caller asked for one key, not for a snapshot).
        raise failure

    async def build_request(
        self,
        request: SnapshotRequest,
        *,
        deadline_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        snapshot_id: str | None = None,
    ) -> Snapshot:
        """Resolve a :class:`SnapshotRequest`: only required failures raise.

        Raises:
            SnapshotBuildError: a required key failed (with the partial snapshot).
            SnapshotConsistencyError: the request's consistency policy was violated.
            RuntimeError, TypeError, ValueError: as for :meth:`build`.
        """
        if not isinstance(request, SnapshotRequest):
            raise TypeError(f"request must be a SnapshotRequest, got {type(request).__name__}")
        return await self._builds.run(
            request.keys,
            request.required,
            request.optional,
            request.consistency_policy,
            deadline_seconds,
            metadata,
            snapshot_id,
            strict=True,
            acceptance=request.acceptance_policy,
        )

    def new_context(
        self,
        deadline_seconds: float | None,
        metadata: Mapping[str, Any] | None,
        snapshot_id: str | None,
    ) -> FetchContext:
        """One build's (or session's) context: an absolute deadline read once from the clock.

        Raises:
            RuntimeError: the builder is closed ("SnapshotBuilder is closed").
            TypeError, ValueError: a non-positive/NaN deadline, bad metadata or snapshot id.
        """
        return self._builds.new_context(deadline_seconds, metadata, snapshot_id)

    async def resolve_keys(
        self,
        keys: Sequence[ResourceKey],
        ctx: FetchContext,
        diag: DiagnosticsCollector,
        *,
        force_refresh: bool = False,
        view: BuildView | None = None,
    ) -> tuple[dict[ResourceKey, SnapshotValue[Any]], dict[ResourceKey, Exception]]:
        """Resolve ``keys`` under ``ctx`` into private values and per-key errors (internal:
        shared by builds and sessions). ``view``: the caller's reading (a session stage's,
        seeded with its pinned values, which derivations then take as their dependencies).

        Raises:
            Exception: whatever the cache raised, as it is.
        """
        return await self._builds.resolve_keys(
            keys, ctx, diag, force_refresh=force_refresh, view=view
        )

    async def try_build_request(
        self,
        request: SnapshotRequest,
        *,
        deadline_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        snapshot_id: str | None = None,
        degradation_policy: RequestDegradationPolicy | None = None,
    ) -> SnapshotResult:
        """Resolve ``request`` in a session of its own (closed afterwards) without raising for
        what went wrong: see :meth:`SnapshotSession.try_resolve_request`.

        Raises:
            TypeError, ValueError: bad arguments. RuntimeError: the builder is closed.
        """
        request, policy = check_try_arguments(request, degradation_policy)
        session = self.session(
            deadline_seconds=deadline_seconds, metadata=metadata, snapshot_id=snapshot_id
        )
        try:
            return await session.try_resolve_request(request, degradation_policy=policy)
        finally:
            await session.close()

    async def try_build_requests(
        self,
        requests: Iterable[SnapshotRequest],
        *,
        deadline_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        snapshot_id_prefix: str | None = None,
        degradation_policy: RequestDegradationPolicy | None = None,
        max_concurrent: int | None = None,
    ) -> tuple[SnapshotResult, ...]:
        """:meth:`try_build_request` for every request, at most ``max_concurrent`` at once
        (default: ``min(len(requests), max_concurrency)``); results in input order, snapshot
        ids ``"<snapshot_id_prefix>:<index>"`` when a prefix is given.

        Raises:
            TypeError: a request is not a SnapshotRequest, ``max_concurrent`` is not an int.
            ValueError: ``max_concurrent`` < 1.
        """
        limit = check_max_concurrent(max_concurrent)
        items = tuple(check_try_arguments(request, degradation_policy)[0] for request in requests)
        if not items:
            return ()
        gate = asyncio.Semaphore(limit or min(len(items), self.max_concurrency))

        async def one(index: int, request: SnapshotRequest) -> SnapshotResult:
            async with gate:
                return await self.try_build_request(
                    request,
                    deadline_seconds=deadline_seconds,
                    metadata=metadata,
                    snapshot_id=(
                        None if snapshot_id_prefix is None else f"{snapshot_id_prefix}:{index}"
                    ),
                    degradation_policy=degradation_policy,
                )

        return tuple(await asyncio.gather(*(one(i, r) for i, r in enumerate(items))))

    def session(
        self,
        *,
        deadline_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        snapshot_id: str | None = None,
    ) -> SnapshotSession:
        """Start a multi-stage session: one id, creation time, deadline and pinned values.

        Raises:
            RuntimeError: the builder is closed ("SnapshotBuilder is closed").
            TypeError, ValueError: bad deadline, metadata or snapshot id.
        """
        context = self.new_context(deadline_seconds, metadata, snapshot_id)
        return SnapshotSession(engine=self._engine, context=context)

    # -- lifecycle and introspection ---------------------------------------------------------

    def forget_not_found(self, keys: Iterable[ResourceKey] | None = None) -> None:
        """Forget that ``keys`` (every key, when ``None``) were not found: their next build asks
        the sources again (after creating a resource, say)."""
        if keys is not None:
            keys = requested_keys(keys)
        self._engine.not_found.forget(keys)

    def clear_source_support_cache(self) -> None:
        """Forget cached ``supports()`` answers (after changing what a source supports)."""
        self._engine.chains.clear()

    async def capacity_snapshot(self) -> dict[str, CapacitySnapshot]:
        """Current capacity use: ``"__global__"`` plus one entry per limited source."""
        return await self._parts.capacity.snapshot()

    async def health_snapshot(self) -> BuilderHealth:
        """An aggregated, immutable view of the builder's state; calls no source."""
        return await builder_health(self._parts, closed=self._builds.closed)


SnapshotBuilder.__doc__ = (SnapshotBuilder.__doc__ or "").replace("{options}", options_help())
