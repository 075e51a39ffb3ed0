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

import logging
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any, Final, final

from ..core._keys import ResourceKey
from ..core._protocols import EventSink, MetricsSink
from ..core._validation import ReadOnlyDict
from ._names import (
    ACCEPTANCE_TOTAL,
    ACCEPTANCE_VIOLATION_TOTAL,
    CACHE_ACCESS_TOTAL,
    CONSISTENCY_TOTAL,
    EVENT_ACCEPTANCE_FAILED,
    EVENT_CACHE_BYPASSED,
    EVENT_CACHE_HIT,
    EVENT_CIRCUIT_OPEN,
    EVENT_CONSISTENCY_FAILED,
    EVENT_INVALIDATED,
    EVENT_PAYLOAD_REJECTED,
    EVENT_PUBLISH_IGNORED,
    EVENT_PUBLISHED,
    EVENT_REFRESH_COMPLETED,
    EVENT_REFRESH_FAILED,
    EVENT_REFRESH_SCHEDULED,
    EVENT_RESOLVED,
    EVENT_SESSION_RESOLVED,
    EVENT_SESSION_REVALIDATED,
    EVENT_SNAPSHOT_BUILT,
    EVENT_SOURCE_FAILED,
    EVENT_STALE_FALLBACK,
    EVENT_TRY_REQUEST_RESOLVED,
    RESOURCE_INVALIDATION_TOTAL,
    RESOURCE_PUBLISH_TOTAL,
    RESOURCE_REFRESH_TOTAL,
    REVALIDATION_BYPASS,
    SESSION_RESOLVE_TOTAL,
    SESSION_REVALIDATE_TOTAL,
    SINGLEFLIGHT_JOIN_TOTAL,
    SNAPSHOT_BUILD_TOTAL,
    SOURCE_BATCH_CALL_TOTAL,
    SOURCE_BATCH_SIZE,
    SOURCE_CAPACITY_TIMEOUT_TOTAL,
    SOURCE_CAPACITY_WAIT_MS,
    SOURCE_FETCH_LATENCY_MS,
    SOURCE_FETCH_TOTAL,
    STALE_FALLBACK,
    TRY_REQUEST_TOTAL,
    KeyType,
)
from ._sinks import NullEventSink, NullMetrics

_log = logging.getLogger("coalestra.observability")
_key_type_of = attrgetter("namespace", "name")
_namespace_of = attrgetter("namespace")
_name_of = attrgetter("name")
_TYPE_COUNT_MEMO_SIZE: Final = 16


def key_type(key: ResourceKey) -> KeyType:
    """Return the resource type ``(namespace, name)`` of ``key``: what metrics may name."""
    return key.namespace, key.name


def _count_types(keys: Collection[ResourceKey]) -> dict[KeyType, int]:
    """Count ``keys`` per resource type with the loops in C.

    Counting names and namespaces separately avoids building a tuple per key (about 40% faster);
    when the keys span several namespaces the pairs are counted directly.
    """
    namespaces = set(map(_namespace_of, keys))
    if len(namespaces) == 1:
        (namespace,) = namespaces
        return {(namespace, name): count for name, count in Counter(map(_name_of, keys)).items()}
    return dict(Counter(map(_key_type_of, keys)))


def _status(failed: bool) -> str:
    return "error" if failed else "success"


@final
class Instrumentation:
    """Turns the engine's typed facts into metrics and events, safely and cheaply.

    Args:
        metrics: the metrics sink (checked once, here).
        events: the event sink (checked once, here).

    Raises:
        TypeError: a sink does not implement its protocol.
    """

    __slots__ = (
        "_emit",
        "_increment",
        "_observe",
        "_sink_failures",
        "_type_counts",
        "events_on",
        "metrics_on",
    )

    def __init__(self, metrics: MetricsSink, events: EventSink) -> None:
        if not isinstance(metrics, MetricsSink):
            raise TypeError(f"metrics must implement MetricsSink, got {type(metrics).__name__}")
        if not isinstance(events, EventSink):
            raise TypeError(f"events must implement EventSink, got {type(events).__name__}")
        self._increment = metrics.increment
        self._observe = metrics.observe
        self._emit = events.emit
        # The null sinks are final, so these tests are exact; they make a disabled call free.
        self.metrics_on = not isinstance(metrics, NullMetrics)
        self.events_on = not isinstance(events, NullEventSink)
        self._sink_failures = 0
        # id(tuple) -> (the tuple itself, its counts). Holding the tuple keeps its id unique.
        self._type_counts: dict[int, tuple[tuple[ResourceKey, ...], Mapping[KeyType, int]]] = {}

    @property
    def enabled(self) -> bool:
        """False when both sinks are the null ones: the engine may skip gathering facts."""
        return self.metrics_on or self.events_on

    @property
    def sink_failures(self) -> int:
        """How many sink calls raised (and were swallowed)."""
        return self._sink_failures

    def _safely(self, call: Callable[..., None], /, *args: Any, **kwargs: Any) -> None:
        """The one guard around every sink call: a raising sink never fails a build."""
        try:
            call(*args, **kwargs)
        except Exception:
            self._failed()

    def _failed(self) -> None:
        """Count a sink call that raised; call it from the ``except`` block."""
        self._sink_failures += 1
        if self._sink_failures == 1:  # once: a broken sink must not flood the log
            _log.warning("an observability sink raised; counting, not raising", exc_info=True)

    def _count(self, metric: str, value: int = 1, **labels: str) -> None:
        if self.metrics_on and value:
            self._safely(self._increment, metric, value, **labels)

    def _event(self, event_type: str, **payload: Any) -> None:
        if self.events_on:
            self._safely(self._emit, event_type, **payload)

    def _count_resource(self, metric: str, key: ResourceKey, **labels: str) -> None:
        if self.metrics_on:
            self._safely(
                self._increment,
                metric,
                1,
                **labels,
                resource_namespace=key.namespace,
                resource_name=key.name,
            )

    def _count_types(self, metric: str, counts: Mapping[KeyType, int], **labels: str) -> None:
        for (namespace, name), count in counts.items():
            if count:
                self._safely(
                    self._increment,
                    metric,
                    count,
                    **labels,
                    resource_namespace=namespace,
                    resource_name=name,
                )

    def count_by_type(self, keys: Collection[ResourceKey]) -> Mapping[KeyType, int]:
        """Count ``keys`` per resource type ``(namespace, name)``.

        This is the one O(keys) step of reporting a warm build, so call it only when
        :attr:`metrics_on`. Keys are counted as given: pass distinct keys. Results for a
        ``tuple`` are remembered by identity (tuples and keys are immutable), so a build loop
        that passes the same request tuple pays O(1).
        """
        if type(keys) is not tuple:
            return _count_types(keys)
        memo = self._type_counts.get(id(keys))
        if memo is not None and memo[0] is keys:
            return memo[1]
        counts: Mapping[KeyType, int] = ReadOnlyDict(_count_types(keys))
        if len(self._type_counts) >= _TYPE_COUNT_MEMO_SIZE:
            del self._type_counts[next(iter(self._type_counts))]  # the oldest entry
        self._type_counts[id(keys)] = (keys, counts)
        return counts

    # -- builds and sessions ------------------------------------------------------------------

    def build_finished(
        self, snapshot: Any, *, build_failed: bool, strict: bool, resources: int
    ) -> None:
        """A build ended; ``build_failed``: it raised (a required key failed, or consistency)."""
        if self.metrics_on:
            status = _status(build_failed)
            self._safely(self._increment, SNAPSHOT_BUILD_TOTAL, 1, status=status)
            self._safely(self._increment, SESSION_RESOLVE_TOTAL, 1, status=status)
        if self.events_on:
            self._safely(
                self._emit,
                EVENT_SNAPSHOT_BUILT,
                snapshot_id=snapshot.snapshot_id,
                resources=resources,
                resolved=len(snapshot.resources),
                failed=len(snapshot.errors),
                build_failed=build_failed,
                strict=strict,
                diagnostics=snapshot.diagnostics,
            )

    def session_resolved(
        self,
        snapshot: Any,
        *,
        requested: int,
        stage_failed: bool,
        strict: bool,
        retry_errors: bool,
    ) -> None:
        """A session stage (``resolve`` / ``resolve_request``) ended."""
        self._count(SESSION_RESOLVE_TOTAL, status=_status(stage_failed))
        self._event(
            EVENT_SESSION_RESOLVED,
            snapshot_id=snapshot.snapshot_id,
            requested=requested,
            resolved=len(snapshot.resources),
            failed=len(snapshot.errors),
            total_resources=len(snapshot.resources) + len(snapshot.errors),
            strict=strict,
            retry_errors=retry_errors,
        )

    def session_revalidated(
        self,
        snapshot_id: str,
        *,
        requested: int,
        affected: int,
        refreshed: int,
        failed: int,
        committed: bool,
        strict: bool,
        force_refresh: bool,
        consistency_failed: bool,
        acceptance_failed: bool | None = None,
    ) -> None:
        """A session revalidation ended, committed or not. ``acceptance_failed`` is reported
        only for a revalidation with an acceptance policy (the 0.5.7 payload stays exact)."""
        extra = {} if acceptance_failed is None else {"acceptance_failed": acceptance_failed}
        self._count(SESSION_REVALIDATE_TOTAL, status=_status(not committed))
        self._event(
            EVENT_SESSION_REVALIDATED,
            snapshot_id=snapshot_id,
            requested=requested,
            affected=affected,
            refreshed=refreshed,
            failed=failed,
            committed=committed,
            retained_previous=not committed,
            strict=strict,
            force_refresh=force_refresh,
            consistency_failed=consistency_failed,
            **extra,
        )

    def consistency_failed(self, snapshot_id: str, error: Any) -> None:
        """A :class:`~coalestra.SnapshotConsistencyError` was raised."""
        self._count(CONSISTENCY_TOTAL, status="error", rule="observation_skew")
        self._event(
            EVENT_CONSISTENCY_FAILED,
            snapshot_id=snapshot_id,
            resources=tuple(str(key) for key in error.keys),
            oldest_resource=str(error.oldest_key),
            newest_resource=str(error.newest_key),
            observation_skew_ms=error.observation_skew_seconds * 1000.0,
            max_observation_skew_ms=error.max_observation_skew_seconds * 1000.0,
        )

    def acceptance_evaluated(self, snapshot_id: str, violations: Sequence[Any]) -> None:
        """An acceptance policy was evaluated; ``violations`` empty means accepted."""
        if not violations:
            self._count(ACCEPTANCE_TOTAL, status="success")
            return
        self._count(ACCEPTANCE_TOTAL, status="error")
        reasons = sorted({violation.reason.value for violation in violations})
        for reason in reasons:
            self._count(ACCEPTANCE_VIOLATION_TOTAL, reason=reason)
        self._event(
            EVENT_ACCEPTANCE_FAILED,
            snapshot_id=snapshot_id,
            violations=len(violations),
            reasons=",".join(reasons),
        )

    def try_request_resolved(self, result: Any) -> None:
        """A non-throwing request build ended with ``result`` (a SnapshotResult)."""
        state = result.state.value
        self._count(TRY_REQUEST_TOTAL, status=state)
        snapshot = result.snapshot
        self._event(
            EVENT_TRY_REQUEST_RESOLVED,
            snapshot_id=None if snapshot is None else snapshot.snapshot_id,
            state=state,
            reason=result.reason,
            allowed_actions=result.allowed_actions,
        )

    # -- the cache ----------------------------------------------------------------------------

    def cache_accesses(self, status: str, counts: Mapping[KeyType, int]) -> None:
        """Keys of one build read from the cache with ``status``, counted per resource type
        (see :meth:`count_by_type`). Report once per build and status."""
        if self.metrics_on:
            self._count_types(CACHE_ACCESS_TOTAL, counts, status=status)

    def cache_hits(self, hits: Iterable[tuple[ResourceKey, str]]) -> None:
        """One ``cache_hit`` event per key served from the cache, with its freshness."""
        if self.events_on:
            emit = self._emit
            for key, freshness in hits:  # per key: the guard is inlined, not a call
                try:
                    emit(EVENT_CACHE_HIT, resource=str(key), freshness=freshness)
                except Exception:
                    self._failed()

    def cache_bypassed(self, keys: Collection[ResourceKey]) -> None:
        """A forced session revalidation skipped the cache for ``keys``."""
        if self.metrics_on:
            self._count_types(CACHE_ACCESS_TOTAL, _count_types(keys), status=REVALIDATION_BYPASS)
        if self.events_on:
            for key in keys:
                self._safely(
                    self._emit,
                    EVENT_CACHE_BYPASSED,
                    resource=str(key),
                    reason="session_revalidation",
                )

    def stale_fallback(self, key: ResourceKey, error_type: str) -> None:
        """Every source failed for ``key``; a stale value was served instead."""
        self._count_resource(CACHE_ACCESS_TOTAL, key, status=STALE_FALLBACK)
        self._event(EVENT_STALE_FALLBACK, resource=str(key), error_type=error_type)

    def single_flight_joined(self, keys: Collection[ResourceKey]) -> None:
        """A build joined flights another build owns for ``keys``."""
        if self.metrics_on and keys:
            self._count_types(SINGLEFLIGHT_JOIN_TOTAL, _count_types(keys))

    # -- sources ------------------------------------------------------------------------------

    def fetched(self, source: str, status: str, count: int = 1) -> None:
        """``count`` keys came back from ``source`` with ``status``."""
        self._count(SOURCE_FETCH_TOTAL, count, status=status, source=source)

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
            EVENT_RESOLVED,
            resource=str(key),
            source=source,
            latency_ms=latency_ms,
            attempts=attempts,
            source_kind=source_kind,
            authority_rank=authority_rank,
        )

    def source_failed(self, key: ResourceKey, source: str, error: BaseException) -> None:
        """``source`` failed for ``key`` (event only: see :meth:`fetched`)."""
        self._event(
            EVENT_SOURCE_FAILED,
            resource=str(key),
            source=source,
            error_type=type(error).__name__,
            error=str(error),
        )

    def payload_rejected(self, key: ResourceKey, source: str, error: BaseException) -> None:
        """A payload of ``source`` for ``key`` was refused (e.g. its ``observed_at``)."""
        self._event(EVENT_PAYLOAD_REJECTED, resource=str(key), source=source, error=str(error))

    def circuit_open(self, source: str, key: ResourceKey, error: BaseException) -> None:
        """An open circuit kept ``key`` from ``source`` (event only: see :meth:`fetched`)."""
        self._event(EVENT_CIRCUIT_OPEN, source=source, resource=str(key), error=str(error))

    def fetch_latency(self, source: str, latency_ms: float) -> None:
        """One call (one attempt) to ``source`` took ``latency_ms``."""
        if self.metrics_on:
            self._safely(self._observe, SOURCE_FETCH_LATENCY_MS, latency_ms, source=source)

    def batch_call(self, source: str, status: str, size: int) -> None:
        """One batch call (one attempt) of ``size`` keys to ``source`` ended with ``status``."""
        if self.metrics_on:
            self._safely(self._increment, SOURCE_BATCH_CALL_TOTAL, 1, status=status, source=source)
            self._safely(self._observe, SOURCE_BATCH_SIZE, float(size), source=source)

    def capacity_wait(self, source: str, waited_ms: float) -> None:
        """A call to ``source`` waited ``waited_ms`` for a capacity slot."""
        if self.metrics_on:
            self._safely(self._observe, SOURCE_CAPACITY_WAIT_MS, waited_ms, source=source)

    def capacity_timeout(self, source: str, reason: str) -> None:
        """A call to ``source`` got no capacity slot (``queue_timeout`` or
        ``snapshot_deadline``)."""
        self._count(SOURCE_CAPACITY_TIMEOUT_TOTAL, source=source, reason=reason)

    # -- background refreshes -----------------------------------------------------------------

    def refresh_scheduled(self, key: ResourceKey, reason: str, snapshot_id: str) -> None:
        """A background refresh of ``key`` was started (``reason``: the refresh mode)."""
        self._count_resource(RESOURCE_REFRESH_TOTAL, key, status="scheduled")
        self._event(
            EVENT_REFRESH_SCHEDULED, resource=str(key), reason=reason, snapshot_id=snapshot_id
        )

    def refresh_completed(self, key: ResourceKey, source: str, reason: str) -> None:
        """A background refresh of ``key`` stored a new value from ``source``."""
        self._count_resource(RESOURCE_REFRESH_TOTAL, key, status="success")
        self._event(EVENT_REFRESH_COMPLETED, resource=str(key), source=source, reason=reason)

    def refresh_failed(self, key: ResourceKey, reason: str, error: BaseException) -> None:
        """A background refresh of ``key`` failed."""
        self._count_resource(RESOURCE_REFRESH_TOTAL, key, status="failure")
        self._event(
            EVENT_REFRESH_FAILED,
            resource=str(key),
            reason=reason,
            error_type=type(error).__name__,
            error=str(error),
        )

    def refresh_cancelled(self, key: ResourceKey) -> None:
        """A background refresh of ``key`` was cancelled (metric only)."""
        self._count_resource(RESOURCE_REFRESH_TOTAL, key, status="cancelled")

    # -- the publisher ------------------------------------------------------------------------

    def published(
        self,
        candidate: Any,
        previous: Any | None,
        *,
        status: str,
        forced: bool,
    ) -> None:
        """A pushed value (``candidate``, a SnapshotValue) ended with ``status``; ``previous``
        is the value the cache held. Once per publication, so the sinks are called directly
        (not through ``_safely``: one call and one keyword dict less each)."""
        key = candidate.key
        if self.metrics_on:
            try:
                self._increment(
                    RESOURCE_PUBLISH_TOTAL,
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
                    EVENT_PUBLISHED,
                    resource=str(key),
                    source=candidate.source,
                    observed_at=candidate.observed_at,
                    replaced=previous is not None,
                    forced=forced,
                    authority_rank=candidate.authority_rank,
                )
                return
            self._emit(
                EVENT_PUBLISH_IGNORED,
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

    def invalidation(self, key: ResourceKey, reason: str) -> None:
        """``key`` was invalidated. ``reason`` is the caller's free text (``"stream-gap"``), so
        it goes to the event only: as a metric label it would make series unbounded."""
        self._count_resource(RESOURCE_INVALIDATION_TOTAL, key)
        self._event(EVENT_INVALIDATED, resource=str(key), reason=reason)

    def __repr__(self) -> str:
        return f"Instrumentation(enabled={self.enabled}, sink_failures={self._sink_failures})"
