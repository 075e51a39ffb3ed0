"""A :class:`~coalestra.core.MetricsSink` that records into Prometheus counters and histograms."""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections.abc import Callable, Iterable
from enum import Enum
from itertools import pairwise
from typing import TypeVar, final

from prometheus_client import CollectorRegistry, Counter, Histogram

from ._names import (
    DEFAULT_BUCKETS,
    FAILURES_METRIC,
    check_namespace,
    check_registry,
    help_text,
    prometheus_name,
)

_log = logging.getLogger("coalestra.integrations.prometheus")

_Key = tuple[object, ...]
_M = TypeVar("_M", Counter, Histogram)


class _Kind(Enum):
    COUNTER = "counter"
    HISTOGRAM = "histogram"


class _LabelSetError(ValueError):
    """A metric was used with label names other than those of its first use (internal)."""


@final
class _Family:
    """One Prometheus metric and what it was created with."""

    __slots__ = ("kind", "label_names", "metric")

    def __init__(self, kind: _Kind, label_names: tuple[str, ...], metric: Counter | Histogram):
        self.kind = kind
        self.label_names = label_names
        self.metric = metric


@final
class _Families:
    """The metrics created on one registry, shared by every sink reporting into it.

    Sharing is what lets two builders of one process use ``PrometheusMetricsSink()`` on the
    default registry: the second would otherwise collide with the first's metric names. Their
    series then add up, as process-level Prometheus metrics do.
    """

    __slots__ = ("by_name", "lock")

    def __init__(self) -> None:
        self.by_name: dict[str, _Family] = {}
        self.lock = threading.Lock()

    def get(
        self,
        name: str,
        kind: _Kind,
        label_names: tuple[str, ...],
        create: Callable[[], Counter | Histogram],
    ) -> _Family:
        """The family ``name``, created on first use; raise if ``kind`` or labels differ."""
        with self.lock:
            family = self.by_name.get(name)
            if family is None:
                family = self.by_name[name] = _Family(kind, label_names, create())
        if family.kind is not kind:
            raise _LabelSetError(f"{name} is a {family.kind.value}, not a {kind.value}")
        if sorted(family.label_names) != sorted(label_names):
            raise _LabelSetError(
                f"{name} was first used with labels {list(family.label_names)}, "
                f"now with {list(label_names)}"
            )
        return family


_SHARED: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def _families_of(registry: CollectorRegistry) -> _Families:
    with _SHARED_LOCK:
        families = _SHARED.get(registry)
        if families is None:
            families = _SHARED[registry] = _Families()
        return families


def _check_buckets(buckets: Iterable[float] | None) -> tuple[float, ...] | None:
    """Validate histogram bounds now, so a bad value fails the constructor, not every observe."""
    if buckets is None:
        return None
    if isinstance(buckets, str | bytes):
        raise TypeError("buckets must be a sequence of numbers")
    bounds = tuple(buckets)
    if not bounds or any(isinstance(b, bool) or not isinstance(b, int | float) for b in bounds):
        raise TypeError("buckets must be a non-empty sequence of numbers")
    if any(math.isnan(b) for b in bounds) or any(a >= b for a, b in pairwise(bounds)):
        raise ValueError(f"buckets must be strictly increasing numbers, got {bounds!r}")
    return tuple(float(b) for b in bounds)


@final
class PrometheusMetricsSink:
    """Records the builder's metrics as Prometheus counters (``increment``) and histograms
    (``observe``), with the same low-cardinality labels the engine gives.

    Names: each metric name gets the ``namespace`` prefix (so the default exposes
    ``coalestra_snapshot_build_total``, ``coalestra_source_fetch_latency_ms``, ...). Each metric
    is created on first use with the label names of that call. A later call with other label
    names (or using a counter as a histogram) is not recorded: it is counted in
    ``<namespace>_metrics_sink_failures_total`` and :attr:`failures`, and logged once per metric.
    The sink never raises from ``increment``/``observe``. It is thread-safe, so it can sit
    behind a :class:`~coalestra.observability.BufferedMetricsSink`.

    Sinks on the same registry share its metrics: two builders may each use
    ``PrometheusMetricsSink()`` on the default registry; their figures add up (the first sink's
    ``buckets`` apply).

    Args:
        registry: where the metrics are registered (default: ``prometheus_client.REGISTRY``).
        namespace: the metric name prefix replacing ``coalestra`` (``""``: none).
        buckets: histogram bucket upper bounds for every observation (default: per metric, in
            its own unit: milliseconds for ``*_ms``, keys for ``source_batch_size``).

    Raises:
        TypeError: ``registry`` is not a ``CollectorRegistry``, or a bad ``namespace``/``buckets``
            type.
        ValueError: ``namespace`` is not a valid metric prefix, ``buckets`` are not strictly
            increasing, or the registry already holds ``<namespace>_metrics_sink_failures_total``
            registered by something else.
    """

    __slots__ = (
        "_buckets",
        "_counters",
        "_failure_counter",
        "_failures",
        "_families",
        "_histograms",
        "_lock",
        "_logged",
        "_namespace",
        "_registry",
    )

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        namespace: str = "coalestra",
        *,
        buckets: Iterable[float] | None = None,
    ) -> None:
        self._registry = check_registry(registry)
        self._namespace = check_namespace(namespace)
        self._buckets = _check_buckets(buckets)
        self._families = _families_of(self._registry)
        self._counters: dict[_Key, Counter] = {}
        self._histograms: dict[_Key, Histogram] = {}
        self._failures = 0
        self._logged: set[str] = set()
        self._lock = threading.Lock()
        # Created now rather than lazily, so the series exists (at 0) before anything fails.
        self._failure_counter = self._child(FAILURES_METRIC, _Kind.COUNTER, {}, self._counters)

    @property
    def registry(self) -> CollectorRegistry:
        """The registry the metrics are registered on."""
        return self._registry

    @property
    def namespace(self) -> str:
        """The metric name prefix (``"coalestra"`` by default)."""
        return self._namespace

    @property
    def failures(self) -> int:
        """Calls this sink could not record (label-set changes, kind conflicts, bad values)."""
        return self._failures

    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        """Add ``value`` to the counter ``metric`` (created on first use); never raises."""
        self._record(metric, _Kind.COUNTER, self._counters, value, labels)

    def observe(self, metric: str, value: float, **labels: str) -> None:
        """Record ``value`` in the histogram ``metric`` (created on first use); never raises."""
        self._record(metric, _Kind.HISTOGRAM, self._histograms, value, labels)

    def _record(
        self, metric: str, kind: _Kind, cache: dict[_Key, _M], value: float, labels: dict[str, str]
    ) -> None:
        """Find the child of ``metric`` for ``labels`` and feed it ``value``; never raises."""
        try:
            child = cache.get((metric, *labels.items()))
            if child is None:
                child = self._child(metric, kind, labels, cache)
            if isinstance(child, Counter):
                child.inc(value)
            else:
                child.observe(value)
        except Exception as error:
            self._fail(metric, error)

    def _child(self, metric: str, kind: _Kind, labels: dict[str, str], cache: dict[_Key, _M]) -> _M:
        """The slow path, once per label set: find or create the family, then the child."""
        name = prometheus_name(metric, self._namespace)
        label_names = tuple(labels)
        family = self._families.get(
            name, kind, label_names, lambda: self._create(kind, name, metric, label_names)
        )
        parent: _M = family.metric  # type: ignore[assignment]  # kind was checked by get()
        child = parent.labels(**labels) if labels else parent
        key = (metric, *labels.items())  # a variable: mypy reads cache[(a, *b)] as 3.11 syntax
        cache[key] = child
        return child

    def _create(
        self, kind: _Kind, name: str, metric: str, label_names: tuple[str, ...]
    ) -> Counter | Histogram:
        documentation = help_text(metric)
        if kind is _Kind.COUNTER:
            return Counter(name, documentation, label_names, registry=self._registry)
        buckets = self._buckets
        if buckets is None:
            buckets = DEFAULT_BUCKETS.get(metric, tuple(Histogram.DEFAULT_BUCKETS))
        return Histogram(name, documentation, label_names, registry=self._registry, buckets=buckets)

    def _fail(self, metric: str, error: Exception) -> None:
        with self._lock:
            self._failures += 1
            first = metric not in self._logged
            self._logged.add(metric)
        self._failure_counter.inc()
        if first:  # once per metric: a misused metric must not flood the log
            _log.warning(
                "coalestra: the Prometheus sink could not record %s (%s); further failures of "
                "this metric are only counted",
                metric,
                error,
            )

    def __repr__(self) -> str:
        return f"PrometheusMetricsSink(namespace={self._namespace!r}, failures={self._failures})"
