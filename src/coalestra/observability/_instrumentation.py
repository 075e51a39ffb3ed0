"""The one place acquisition facts become metrics and events.

The engine reports typed facts (a build finished, a source call returned, ...) to
:class:`Instrumentation`; nothing else in the library calls a sink. That keeps three promises in
one module:

* **Names are the published ones.** Metric names, label keys, event names and payload keys are
  those of coalestra 0.5.7 (the tables below), so dashboards and alerts carry over.
* **Labels stay low-cardinality.** Metric labels are only resource types (``resource_namespace``,
  ``resource_name``), configured source names and small enumerations; never a subject, a
  qualifier or ``str(key)``. Full identity goes to events as ``resource="market:price:BTC"``.
* **Sinks never fail a build.** Every sink call goes through :meth:`Instrumentation._safely`,
  which counts and swallows ``Exception`` (``CancelledError`` is a ``BaseException`` and passes).
* **Observability costs nothing when off and little when on.** With the null sinks every method
  returns after one or two attribute tests; with metrics only, a warm build's work is
  O(resource types), not O(keys). Per-key events are made only when an event sink listens.

The names themselves are declared once, in :mod:`._names`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, final

from ..core._keys import ResourceKey
from ..core._values import SnapshotValue
from . import _names as names
from ._build_facts import BuildFacts
from ._names import KeyType
from ._sinkcalls import count_types

_PUBLISH_TOTAL = names.RESOURCE_PUBLISH_TOTAL
_PUBLISHED = names.EVENT_PUBLISHED
_PUBLISH_IGNORED = names.EVENT_PUBLISH_IGNORED


@final
class Instrumentation(BuildFacts):
    """Turns the engine's typed facts into metrics and events, safely and cheaply.

    The facts of whole builds and sessions are :class:`~._build_facts.BuildFacts`; the
    per-resource ones (cache, sources, refreshes, publications) are here.

    Args:
        metrics: the metrics sink (checked once, here).
        events: the event sink (checked once, here).

    Raises:
        TypeError: a sink does not implement its protocol.
    """

    __slots__ = ()

    # -- the cache ----------------------------------------------------------------------------

    def cache_accesses(self, status: str, counts: Mapping[KeyType, int]) -> None:
        """Keys of one build read from the cache with ``status``, counted per resource type
        (see :meth:`count_by_type`). Report once per build and status."""
        if self.metrics_on:
            self._count_types(names.CACHE_ACCESS_TOTAL, counts, status=status)

    def cache_hits(self, hits: Iterable[ResourceKey], swr: Collection[ResourceKey] = ()) -> None:
        """One ``cache_hit`` event per key of ``hits``, in order: its ``freshness`` is
        ``stale_while_revalidate`` for the keys in ``swr``, ``fresh`` for the others."""
        if not self.events_on:
            return
        emit, event, fresh = self._emit, names.EVENT_CACHE_HIT, names.FRESH
        if swr:
            swr_keys, stale = set(swr), names.STALE_WHILE_REVALIDATE
            for key in hits:  # per key: the guard is inlined, not a call
                try:
                    emit(event, resource=str(key), freshness=stale if key in swr_keys else fresh)
                except Exception:
                    self._failed()
            return
        for key in hits:  # every hit fresh (a warm build): the leanest loop
            try:  # str(key) as the key keeps it once rendered: ~20 ns less than a call
                text = key._text
            except AttributeError:  # not rendered yet
                text = str(key)
            try:
                emit(event, resource=text, freshness=fresh)
            except Exception:
                self._failed()

    def cache_bypassed(self, keys: Collection[ResourceKey]) -> None:
        """A forced session revalidation skipped the cache for ``keys``."""
        if self.metrics_on:
            self._count_types(
                names.CACHE_ACCESS_TOTAL, count_types(keys), status=names.REVALIDATION_BYPASS
            )
        if self.events_on:
            for key in keys:
                self._safely(
                    self._emit,
                    names.EVENT_CACHE_BYPASSED,
                    resource=str(key),
                    reason="session_revalidation",
                )

    def stale_fallback(self, key: ResourceKey, error_type: str) -> None:
        """Every source failed for ``key``; a stale value was served instead."""
        self._count_resource(names.CACHE_ACCESS_TOTAL, key, status=names.STALE_FALLBACK)
        self._event(names.EVENT_STALE_FALLBACK, resource=str(key), error_type=error_type)

    def single_flight_joined(self, keys: Collection[ResourceKey]) -> None:
        """A build joined flights another build owns for ``keys``."""
        if self.metrics_on and keys:
            self._count_types(names.SINGLEFLIGHT_JOIN_TOTAL, count_types(keys))

    # -- sources ------------------------------------------------------------------------------

    def fetched(self, source: str, status: str, count: int = 1) -> None:
        """``count`` keys came back from ``source`` with ``status``."""
        self._count(names.SOURCE_FETCH_TOTAL, count, status=status, source=source)

    def resolved(
        self,
        key: ResourceKey,
        source: str,
        *,
        latency_ms: float,
        attempts: int,
        source_kind: str,
        authority_rank: int,
    ) -> None:
        """``source`` produced the value of ``key`` (event only: see :meth:`fetched`)."""
        self._event(
            names.EVENT_RESOLVED,
            resource=str(key),
            source=source,
            latency_ms=latency_ms,
            attempts=attempts,
            source_kind=source_kind,
            authority_rank=authority_rank,
        )

    def resolved_values(
        self, source: str, source_kind: str, values: Collection[SnapshotValue[Any]]
    ) -> None:
        """``source`` (of ``source_kind``) produced ``values`` in one call: counted as fetched
        with status ``"success"`` and, for an event sink, one :meth:`resolved` each."""
        self.fetched(source, "success", len(values))
        if self.events_on:
            for value in values:
                self.resolved(
                    value.key,
                    source,
                    latency_ms=value.latency_ms,
                    attempts=value.attempts,
                    source_kind=source_kind,
                    authority_rank=value.authority_rank,
                )

    def source_failed(self, key: ResourceKey, source: str, error: BaseException) -> None:
        """``source`` failed for ``key`` (event only: see :meth:`fetched`)."""
        self._event(
            names.EVENT_SOURCE_FAILED,
            resource=str(key),
            source=source,
            error_type=type(error).__name__,
            error=str(error),
        )

    def payload_rejected(self, key: ResourceKey, source: str, error: BaseException) -> None:
        """A payload of ``source`` for ``key`` was refused (e.g. its ``observed_at``)."""
        self._event(
            names.EVENT_PAYLOAD_REJECTED, resource=str(key), source=source, error=str(error)
        )

    def circuit_open(self, source: str, key: ResourceKey, error: BaseException) -> None:
        """An open circuit kept ``key`` from ``source`` (event only: see :meth:`fetched`)."""
        self._event(names.EVENT_CIRCUIT_OPEN, source=source, resource=str(key), error=str(error))

    def fetch_latency(self, source: str, latency_ms: float) -> None:
        """One call (one attempt) to ``source`` took ``latency_ms``."""
        if self.metrics_on:
            self._safely(self._observe, names.SOURCE_FETCH_LATENCY_MS, latency_ms, source=source)

    def batch_call(self, source: str, status: str, size: int) -> None:
        """One batch call (one attempt) of ``size`` keys to ``source`` ended with ``status``."""
        if self.metrics_on:
            self._safely(
                self._increment, names.SOURCE_BATCH_CALL_TOTAL, 1, status=status, source=source
            )
            self._safely(self._observe, names.SOURCE_BATCH_SIZE, float(size), source=source)

    def capacity_wait(self, source: str, waited_ms: float) -> None:
        """A call to ``source`` waited ``waited_ms`` for a capacity slot."""
        if self.metrics_on:
            self._safely(self._observe, names.SOURCE_CAPACITY_WAIT_MS, waited_ms, source=source)

    def capacity_timeout(self, source: str, reason: str) -> None:
        """A call to ``source`` got no capacity slot (``queue_timeout`` or
        ``snapshot_deadline``)."""
        self._count(names.SOURCE_CAPACITY_TIMEOUT_TOTAL, source=source, reason=reason)

    # -- declared transport timeouts (protected blocking sources only) -----------------------

    def dispatch_under_deadline_pressure(
        self,
        source: str,
        resource: str,
        transport: float,
        budget: float,
        grace: float,
        gap: float,
    ) -> None:
        """A call was started although its transport timeout exceeds the time left before the
        deadline by ``gap`` (less than the dispatch ``grace``)."""
        self._event(
            names.EVENT_DISPATCH_UNDER_DEADLINE_PRESSURE,
            source=source,
            resource=resource,
            transport_timeout_seconds=transport,
            available_budget_seconds=budget,
            deadline_dispatch_grace_seconds=grace,
            gap_seconds=gap,
        )

    def transport_budget_rejected(
        self, source: str, reason: str, resource: str, transport: float, budget: float
    ) -> None:
        """A call was not started: its transport timeout does not fit in ``budget``."""
        self._count(names.TRANSPORT_BUDGET_REJECTION_TOTAL, source=source, reason=reason)
        self._event(
            names.EVENT_TRANSPORT_BUDGET_REJECTED,
            source=source,
            resource=resource,
            transport_timeout_seconds=transport,
            available_budget_seconds=budget,
        )

    def transport_timeout_violated(
        self,
        source: str,
        outcome: str,
        resource: str,
        transport: float,
        elapsed: float,
        grace: float,
    ) -> None:
        """A call overran its declared transport timeout (``outcome``: ``completed_late``,
        ``failed_late`` or ``coalestra_timeout``)."""
        self._count(names.TRANSPORT_TIMEOUT_VIOLATION_TOTAL, source=source, outcome=outcome)
        self._event(
            names.EVENT_TRANSPORT_TIMEOUT_VIOLATED,
            source=source,
            resource=resource,
            outcome=outcome,
            declared_transport_timeout_seconds=transport,
            observed_elapsed_seconds=elapsed,
            grace_seconds=grace,
        )

    # -- background refreshes -----------------------------------------------------------------

    def refresh_scheduled(self, key: ResourceKey, reason: str, snapshot_id: str) -> None:
        """A background refresh of ``key`` was started (``reason``: the refresh mode)."""
        self._count_resource(names.RESOURCE_REFRESH_TOTAL, key, status="scheduled")
        self._event(
            names.EVENT_REFRESH_SCHEDULED, resource=str(key), reason=reason, snapshot_id=snapshot_id
        )

    def refresh_completed(self, key: ResourceKey, source: str, reason: str) -> None:
        """A background refresh of ``key`` stored a new value from ``source``."""
        self._count_resource(names.RESOURCE_REFRESH_TOTAL, key, status="success")
        self._event(names.EVENT_REFRESH_COMPLETED, resource=str(key), source=source, reason=reason)

    def refresh_failed(self, key: ResourceKey, reason: str, error: BaseException) -> None:
        """A background refresh of ``key`` failed."""
        self._count_resource(names.RESOURCE_REFRESH_TOTAL, key, status="failure")
        self._event(
            names.EVENT_REFRESH_FAILED,
            resource=str(key),
            reason=reason,
            error_type=type(error).__name__,
            error=str(error),
        )

    def refresh_cancelled(self, key: ResourceKey) -> None:
        """A background refresh of ``key`` was cancelled (metric only)."""
        self._count_resource(names.RESOURCE_REFRESH_TOTAL, key, status="cancelled")

    # -- the publisher ------------------------------------------------------------------------

    def published(self, candidate: Any, previous: Any | None, status: str, forced: bool) -> None:
        """A pushed value (``candidate``, a SnapshotValue) ended with ``status``; ``previous``
        is the value the cache held. Once per publication, so the sinks are called directly
        (not through ``_safely``: one call and one keyword dict less each)."""
        key = candidate.key
        if self.metrics_on:
            try:
                self._increment(
                    _PUBLISH_TOTAL,
                    1,
                    status=status,
                    source=candidate.source,
                    resource_namespace=key.namespace,
                    resource_name=key.name,
                )
            except Exception:
                self._failed()
        if not self.events_on:
            return
        try:
            if status == "published":
                self._emit(
                    _PUBLISHED,
                    resource=str(key),
                    source=candidate.source,
                    observed_at=candidate.observed_at,
                    replaced=previous is not None,
                    forced=forced,
                    authority_rank=candidate.authority_rank,
                )
                return
            self._emit(
                _PUBLISH_IGNORED,
                resource=str(key),
                source=candidate.source,
                status=status,
                observed_at=candidate.observed_at,
                cached_observed_at=None if previous is None else previous.observed_at,
                candidate_authority_rank=candidate.authority_rank,
                cached_authority_rank=None if previous is None else previous.authority_rank,
            )
        except Exception:
            self._failed()

    def published_many(
        self, outcomes: Iterable[tuple[Any, Any | None, str]], *, forced: bool
    ) -> None:
        """:meth:`published` for each ``(candidate, previous, status)`` of one call, in order."""
        one = self.published
        for candidate, previous, status in outcomes:
            one(candidate, previous, status, forced)

    def invalidation(self, key: ResourceKey, reason: str) -> None:
        """``key`` was invalidated. ``reason`` is the caller's free text (``"stream-gap"``), so
        it goes to the event only: as a metric label it would make series unbounded."""
        self._count_resource(names.RESOURCE_INVALIDATION_TOTAL, key)
        self._event(names.EVENT_INVALIDATED, resource=str(key), reason=reason)

    def __repr__(self) -> str:
        return f"Instrumentation(enabled={self.enabled}, sink_failures={self._sink_failures})"
