"""The one place acquisition facts become metrics and events.

The engine reports typed facts (a build finished, a source call returned, ...) to
:class:`Instrumentation`; nothing else in the library calls a sink. That keeps three promises in
one module:

* **Labels stay low-cardinality.** Metric labels are only resource types (``resource_namespace``,
  ``resource_name``), configured source names and small enumerations (outcome, status, state,
  scope, reason); never a subject, a qualifier or ``str(key)``. Full identity goes to events as
  ``resource="market:price:BTCUSDT?venue=spot"``.
* **Sinks never fail a build.** Every sink call goes through :meth:`Instrumentation._safely`,
  which counts and swallows ``Exception`` (``CancelledError`` is a ``BaseException`` and passes).
* **Observability costs nothing when off and little when on.** With the null sinks every method
  returns after one or two attribute tests; per build the work is O(resource types), not O(keys).

Each metric always carries the same label names, as Prometheus-style exporters require:

======================================= ====================================================
metric                                  labels
======================================= ====================================================
coalestra_builds_total                  outcome
coalestra_build_duration_seconds        outcome
coalestra_cache_hits_total              resource_namespace, resource_name
coalestra_cache_misses_total            resource_namespace, resource_name
coalestra_cache_stale_total             resource_namespace, resource_name
coalestra_source_calls_total            source, outcome, resource_namespace, resource_name
coalestra_source_call_duration_seconds  source, outcome
coalestra_retries_total                 source
coalestra_circuit_transitions_total     source, scope, state
coalestra_singleflight_joins_total      (none)
coalestra_capacity_wait_seconds         source
coalestra_refreshes_total               outcome, resource_namespace, resource_name
coalestra_publications_total            source, status, resource_namespace, resource_name
coalestra_invalidations_total           resource_namespace, resource_name
======================================= ====================================================

``*`` (:data:`ANY`) stands for "several resource types" (a batch call) or "builder-wide".
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from enum import Enum
from operator import attrgetter
from typing import Any, Final, TypeAlias, final

from ..core._keys import ResourceKey
from ..core._protocols import EventSink, MetricsSink
from ..core._validation import ReadOnlyDict
from ._sinks import NullEventSink, NullMetrics

KeyType: TypeAlias = tuple[str, str]
"""A resource type: ``(namespace, name)`` of a key."""

# Metric names: counters end in _total, durations in _seconds.
BUILDS_TOTAL: Final = "coalestra_builds_total"
BUILD_DURATION_SECONDS: Final = "coalestra_build_duration_seconds"
CACHE_HITS_TOTAL: Final = "coalestra_cache_hits_total"
CACHE_MISSES_TOTAL: Final = "coalestra_cache_misses_total"
CACHE_STALE_TOTAL: Final = "coalestra_cache_stale_total"
SOURCE_CALLS_TOTAL: Final = "coalestra_source_calls_total"
SOURCE_CALL_DURATION_SECONDS: Final = "coalestra_source_call_duration_seconds"
RETRIES_TOTAL: Final = "coalestra_retries_total"
CIRCUIT_TRANSITIONS_TOTAL: Final = "coalestra_circuit_transitions_total"
SINGLEFLIGHT_JOINS_TOTAL: Final = "coalestra_singleflight_joins_total"
CAPACITY_WAIT_SECONDS: Final = "coalestra_capacity_wait_seconds"
REFRESHES_TOTAL: Final = "coalestra_refreshes_total"
PUBLICATIONS_TOTAL: Final = "coalestra_publications_total"
INVALIDATIONS_TOTAL: Final = "coalestra_invalidations_total"

# Label names: the complete list; nothing else ever becomes a label.
LABEL_NAMESPACE: Final = "resource_namespace"
LABEL_NAME: Final = "resource_name"
LABEL_SOURCE: Final = "source"
LABEL_OUTCOME: Final = "outcome"
LABEL_STATUS: Final = "status"
LABEL_STATE: Final = "state"
LABEL_SCOPE: Final = "scope"
LABEL_REASON: Final = "reason"
ALLOWED_LABELS: Final = frozenset(
    {
        LABEL_NAMESPACE,
        LABEL_NAME,
        LABEL_SOURCE,
        LABEL_OUTCOME,
        LABEL_STATUS,
        LABEL_STATE,
        LABEL_SCOPE,
        LABEL_REASON,
    }
)
ANY: Final = "*"
"""Label value for "several resource types" (batch calls) or "builder-wide" (capacity)."""

# Event types.
EVENT_BUILD_STARTED: Final = "build_started"
EVENT_BUILD_FINISHED: Final = "build_finished"
EVENT_SOURCE_CALL: Final = "source_call"
EVENT_RETRY: Final = "retry_scheduled"
EVENT_CIRCUIT_TRANSITION: Final = "circuit_transition"
EVENT_REFRESH: Final = "refresh"
EVENT_PUBLICATION: Final = "resource_published"
EVENT_INVALIDATION: Final = "resource_invalidated"

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


def _type_labels(key_type: KeyType | None) -> dict[str, str]:
    """The resource-type labels; ``None`` (several types) becomes :data:`ANY`."""
    namespace, name = (ANY, ANY) if key_type is None else key_type
    return {LABEL_NAMESPACE: namespace, LABEL_NAME: name}


def _text(value: object) -> str:
    """A label value as plain text: enums by value (``"open"``, not ``"CircuitState.OPEN"``)."""
    if isinstance(value, Enum):
        value = value.value
    return value if type(value) is str else str(value)


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
        "_events_on",
        "_increment",
        "_metrics_on",
        "_observe",
        "_sink_failures",
        "_type_counts",
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
        self._metrics_on = not isinstance(metrics, NullMetrics)
        self._events_on = not isinstance(events, NullEventSink)
        self._sink_failures = 0
        # id(tuple) -> (the tuple itself, its counts). Holding the tuple keeps its id unique.
        self._type_counts: dict[int, tuple[tuple[ResourceKey, ...], Mapping[KeyType, int]]] = {}

    @property
    def enabled(self) -> bool:
        """False when both sinks are the null ones: the engine may skip gathering facts."""
        return self._metrics_on or self._events_on

    @property
    def sink_failures(self) -> int:
        """How many sink calls raised (and were swallowed)."""
        return self._sink_failures

    def _safely(self, call: Callable[..., None], /, *args: Any, **kwargs: Any) -> None:
        """The one guard around every sink call: a raising sink never fails a build."""
        try:
            call(*args, **kwargs)
        except Exception:
            self._sink_failures += 1
            if self._sink_failures == 1:  # once: a broken sink must not flood the log
                _log.warning("an observability sink raised; counting, not raising", exc_info=True)

    def count_by_type(self, keys: Collection[ResourceKey]) -> Mapping[KeyType, int]:
        """Count ``keys`` per resource type ``(namespace, name)``, for :meth:`cache_lookups`.

        This is the one O(keys) step of reporting a build, so call it only when
        :attr:`enabled`. Keys are counted as given: pass distinct keys. Results for a ``tuple``
        are remembered by identity (tuples and keys are immutable), so a build loop that passes
        the same request tuple pays O(1); count the usually few misses and stale keys separately
        and subtract them to get the hits.
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

    def build_started(self, snapshot_id: str, key_count: int) -> None:
        """A build of ``key_count`` keys began (event only)."""
        if self._events_on:
            self._safely(
                self._emit, EVENT_BUILD_STARTED, snapshot_id=snapshot_id, key_count=key_count
            )

    def build_finished(
        self,
        snapshot_id: str,
        duration_s: float,
        requested: int,
        resolved: int,
        failed: int,
        outcome: str,
    ) -> None:
        """A build ended with ``outcome`` (e.g. ``"complete"``, ``"partial"``, ``"failed"``)."""
        if not (self._metrics_on or self._events_on):
            return
        label = _text(outcome)
        if self._metrics_on:
            self._safely(self._increment, BUILDS_TOTAL, 1, outcome=label)
            self._safely(self._observe, BUILD_DURATION_SECONDS, duration_s, outcome=label)
        if self._events_on:
            self._safely(
                self._emit,
                EVENT_BUILD_FINISHED,
                snapshot_id=snapshot_id,
                duration_s=duration_s,
                requested=requested,
                resolved=resolved,
                failed=failed,
                outcome=label,
            )

    def cache_lookups(
        self,
        hits_by_type: Mapping[KeyType, int],
        misses_by_type: Mapping[KeyType, int],
        stale_by_type: Mapping[KeyType, int],
    ) -> None:
        """One build's cache read, as counts per resource type (see :meth:`count_by_type`).

        Report once per build; zero counts are skipped. Metrics only: per-key events would make
        a warm build O(keys).
        """
        if self._metrics_on:
            self._count_types(CACHE_HITS_TOTAL, hits_by_type)
            self._count_types(CACHE_MISSES_TOTAL, misses_by_type)
            self._count_types(CACHE_STALE_TOTAL, stale_by_type)

    def _count_types(self, metric: str, counts: Mapping[KeyType, int]) -> None:
        for (namespace, name), count in counts.items():
            if count:
                self._safely(
                    self._increment, metric, count, resource_namespace=namespace, resource_name=name
                )

    def source_call(
        self,
        source: str,
        key_type: KeyType | None,
        outcome: str,
        duration_s: float,
        key_count: int,
        attempt: int,
        *,
        resource: ResourceKey | None = None,
    ) -> None:
        """One call (one attempt) to ``source`` returned with ``outcome``.

        Args:
            source: the configured source name.
            key_type: the resource type served, or ``None`` for a batch of several types.
            outcome: e.g. ``"success"``, ``"error"``, ``"timeout"``, ``"circuit_open"``.
            duration_s: how long the call took.
            key_count: keys in the call (1 for single sources).
            attempt: 1 for the first attempt, 2 for the first retry, ...
            resource: the key of a single-key call, for the event only.
        """
        if not (self._metrics_on or self._events_on):
            return
        labels = {
            LABEL_SOURCE: source,
            LABEL_OUTCOME: _text(outcome),
        }
        type_labels = _type_labels(key_type)
        if self._metrics_on:
            self._safely(self._increment, SOURCE_CALLS_TOTAL, 1, **labels, **type_labels)
            self._safely(self._observe, SOURCE_CALL_DURATION_SECONDS, duration_s, **labels)
        if self._events_on:
            details: dict[str, Any] = {"resource": str(resource)} if resource is not None else {}
            self._safely(
                self._emit,
                EVENT_SOURCE_CALL,
                duration_s=duration_s,
                key_count=key_count,
                attempt=attempt,
                **labels,
                **type_labels,
                **details,
            )

    def retry(self, source: str, attempt: int, delay_s: float) -> None:
        """``source`` will be retried after ``delay_s``; ``attempt`` is the attempt about to run."""
        if self._metrics_on:
            self._safely(self._increment, RETRIES_TOTAL, 1, source=source)
        if self._events_on:
            self._safely(self._emit, EVENT_RETRY, source=source, attempt=attempt, delay_s=delay_s)

    def circuit_transition(
        self, source: str, scope: str, state: str, *, discriminator: str = ""
    ) -> None:
        """A circuit of ``source`` with ``scope`` moved to ``state``.

        ``discriminator`` (the namespace, subject or key the circuit covers) may be
        high-cardinality, so it goes to the event only.
        """
        if not (self._metrics_on or self._events_on):
            return
        scope_label, state_label = _text(scope), _text(state)
        if self._metrics_on:
            self._safely(
                self._increment,
                CIRCUIT_TRANSITIONS_TOTAL,
                1,
                source=source,
                scope=scope_label,
                state=state_label,
            )
        if self._events_on:
            self._safely(
                self._emit,
                EVENT_CIRCUIT_TRANSITION,
                source=source,
                scope=scope_label,
                state=state_label,
                discriminator=discriminator,
            )

    def single_flight_joined(self, count: int) -> None:
        """A build joined ``count`` flights owned by other builds (report once per build)."""
        if self._metrics_on and count:
            self._safely(self._increment, SINGLEFLIGHT_JOINS_TOTAL, count)

    def capacity_wait(self, source: str | None, waited_s: float) -> None:
        """A call waited ``waited_s`` for a capacity slot of ``source`` (``None``: builder-wide)."""
        if self._metrics_on:
            label = ANY if source is None else source
            self._safely(self._observe, CAPACITY_WAIT_SECONDS, waited_s, source=label)

    def refresh(self, outcome: str, key: ResourceKey | None = None) -> None:
        """A background refresh was ``"scheduled"``, ``"completed"`` or ``"failed"``."""
        if not (self._metrics_on or self._events_on):
            return
        label = _text(outcome)
        namespace, name = (ANY, ANY) if key is None else (key.namespace, key.name)
        if self._metrics_on:
            self._safely(
                self._increment,
                REFRESHES_TOTAL,
                1,
                outcome=label,
                resource_namespace=namespace,
                resource_name=name,
            )
        if self._events_on:
            payload: dict[str, Any] = {"resource": str(key)} if key is not None else {}
            self._safely(self._emit, EVENT_REFRESH, outcome=label, **payload)

    def publication(
        self, key: ResourceKey, source: str, status: str, *, observed_at: float | None = None
    ) -> None:
        """A value for ``key`` (observed at ``observed_at``) was pushed by ``source`` and ended
        with ``status``."""
        if not (self._metrics_on or self._events_on):
            return
        label = _text(status)
        if self._metrics_on:
            self._safely(
                self._increment,
                PUBLICATIONS_TOTAL,
                1,
                source=source,
                status=label,
                resource_namespace=key.namespace,
                resource_name=key.name,
            )
        if self._events_on:
            self._safely(
                self._emit,
                EVENT_PUBLICATION,
                resource=str(key),
                source=source,
                status=label,
                **({} if observed_at is None else {"observed_at": observed_at}),
            )

    def invalidation(self, key: ResourceKey, reason: str) -> None:
        """``key`` was invalidated. ``reason`` is the caller's free text (``"stream-gap"``), so
        it goes to the event only: as a metric label it would make series unbounded."""
        if self._metrics_on:
            self._safely(
                self._increment,
                INVALIDATIONS_TOTAL,
                1,
                resource_namespace=key.namespace,
                resource_name=key.name,
            )
        if self._events_on:
            self._safely(self._emit, EVENT_INVALIDATION, resource=str(key), reason=_text(reason))

    def __repr__(self) -> str:
        return f"Instrumentation(enabled={self.enabled}, sink_failures={self._sink_failures})"
