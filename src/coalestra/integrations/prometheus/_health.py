"""Builder health as Prometheus gauges: the event loop pushes, the scrape thread reads.

A scrape runs on the exporter's thread (``start_http_server``) or inside a web handler. Calling
the builder's ``async health_snapshot()`` from there would mean blocking on another thread's
event loop, which deadlocks when the scrape runs on that loop and stalls scrapes whenever the
loop is busy. :class:`HealthCollector` never does that: the application's loop pushes each
frozen :class:`~coalestra.core.BuilderHealth` with :meth:`HealthCollector.update` (or runs
:meth:`HealthCollector.poll`), and :meth:`HealthCollector.collect` renders the last one pushed.
Swapping one reference to an immutable value is atomic, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol, final

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from ...cache import CacheStats
from ...concurrency import CapacitySnapshot
from ...core import BuilderHealth
from ...core._validation import check_bool, check_float
from ...observability._names import ANY
from ...resilience import CircuitIdentity, CircuitSnapshot, CircuitState
from ._names import check_namespace, check_registry

_GLOBAL_LIMITER: Final = "__global__"  # the builder-wide entry of BuilderHealth.capacity

# (metric suffix, BuilderHealth attribute, help); a None attribute value emits no sample.
_GAUGES: Final = (
    ("builder_closed", "closed", "1 once the builder is closed, else 0."),
    ("background_refreshes", "background_refreshes", "Background refreshes running now."),
    ("singleflight_in_flight", "singleflight_in_flight", "Keys being resolved (flights) now."),
    ("source_support_cache_entries", "source_support_cache_entries", "Cached supports() answers."),
    ("dispatch_workers_active", "active_dispatch_workers", "Dispatch workers running now."),
    ("sync_pending_submissions", "pending_submissions", "Sync facade submissions pending now."),
    ("sync_max_pending_submissions", "max_pending_submissions", "Sync facade submission limit."),
)
_COUNTERS: Final = (
    ("queue_timeouts", "queue_timeout_count", "Source calls that got no capacity slot in time."),
    ("source_timeouts", "source_timeout_count", "Source calls that exceeded their own timeout."),
    ("deadline_exceeded", "deadline_exceeded_count", "Waits ended by a build's deadline."),
    ("revalidation_attempts", "revalidation_attempt_count", "Session revalidations attempted."),
    ("revalidation_failures", "revalidation_failure_count", "Session revalidations that failed."),
)
_CAPACITY: Final = (
    ("capacity_limit", "limit", "Capacity slots of a limiter (source '*': builder-wide)."),
    ("capacity_in_use", "in_use", "Capacity slots held now (source '*': builder-wide)."),
    ("capacity_waiting", "waiting", "Source calls waiting for a slot now (source '*': builder)."),
)
_CIRCUIT_STATES: Final = tuple(state.value for state in CircuitState)


class HealthSource(Protocol):
    """Anything with an async ``health_snapshot()``, such as a ``SnapshotBuilder``."""

    async def health_snapshot(self) -> BuilderHealth:
        """The current health."""
        ...


@final
class HealthCollector:
    """A Prometheus collector exposing the last :class:`~coalestra.core.BuilderHealth` pushed.

    Gauges (each prefixed ``<namespace>_``): ``builder_closed``, ``background_refreshes``,
    ``singleflight_in_flight``, ``source_support_cache_entries``, ``dispatch_workers_active``,
    ``sync_pending_submissions``, ``sync_max_pending_submissions``;
    ``circuits{source,scope,state}`` (tracked circuits per state: ``state="open"`` counts the
    open ones); ``capacity_limit``/``capacity_in_use``/``capacity_waiting{source}`` (``"*"`` is
    the builder-wide limiter); ``cache_entries``/``cache_max_entries`` for the memory cache.
    Counters: ``queue_timeouts_total``, ``source_timeouts_total``, ``deadline_exceeded_total``,
    ``revalidation_attempts_total``, ``revalidation_failures_total``,
    ``cache_evictions_total``, ``cache_expirations_total``, and ``health_updates_total``
    (pushes so far: alert on ``rate(...) == 0`` to catch a loop that stopped pushing).

    Nothing is exposed but ``health_updates_total`` until the first push. Scrapes never call the
    builder (see the module docstring): push from the builder's event loop with :meth:`update`,
    or run :meth:`poll` as a task there. :meth:`update` is thread-safe, so a sync-facade user may
    push ``SyncSnapshotBuilder.health_snapshot()`` from any thread. Use one collector per
    builder (or distinct namespaces/registries).

    Args:
        registry: where to register (default: ``prometheus_client.REGISTRY``).
        namespace: the metric name prefix (``""``: none).
        register: ``False`` registers nowhere: register it yourself, on any registry (it is
            an ordinary collector).
        replace: opt-in: first unregister the ``HealthCollector`` made earlier on this
            registry with this namespace (an application or test fixture made twice), instead
            of refusing the duplicate.

    Raises:
        TypeError, ValueError: a bad ``registry`` or ``namespace``; ``ValueError`` also when the
            registry already holds one of these metric names (and ``replace`` did not free
            them).
    """

    __slots__ = ("_health", "_namespace", "_registry", "_updates")

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        namespace: str = "coalestra",
        *,
        register: bool = True,
        replace: bool = False,
    ):
        self._registry = check_registry(registry)
        self._namespace = check_namespace(namespace)
        self._health: BuilderHealth | None = None
        self._updates = 0
        if check_bool("register", register):
            _register(self._registry, self._namespace, self, replace=check_bool("replace", replace))

    def unregister(self) -> bool:
        """Remove this collector from the registry it was made for; False if it was not there
        (made with ``register=False``, or already removed)."""
        with _LOCK:
            made = _MADE.get(self._registry, {})
            if made.get(self._namespace) is self:
                del made[self._namespace]
        try:
            self._registry.unregister(self)
        except KeyError:
            return False
        return True

    @property
    def health(self) -> BuilderHealth | None:
        """The last health pushed, or ``None`` before the first push."""
        return self._health

    def update(self, health: BuilderHealth) -> None:
        """Make ``health`` what the next scrape exposes (cheap; call it as often as you like).

        Raises:
            TypeError: ``health`` is not a ``BuilderHealth``.
        """
        if not isinstance(health, BuilderHealth):
            raise TypeError(f"health must be a BuilderHealth, got {type(health).__name__}")
        self._health = health  # one reference swap: atomic for the scrape thread
        self._updates += 1

    async def poll(self, builder: HealthSource, *, interval_seconds: float = 15.0) -> None:
        """Push ``builder``'s health now and every ``interval_seconds`` on the running loop.

        Returns after pushing the health of a closed builder, so a task running this ends
        with the builder; cancel it to stop earlier.

        Raises:
            TypeError, ValueError: ``interval_seconds`` is not a finite number > 0.
        """
        interval = check_float("interval_seconds", interval_seconds, positive=True)
        while True:
            health = await builder.health_snapshot()
            self.update(health)
            if health.closed:
                return
            await asyncio.sleep(interval)

    def describe(self) -> list[Metric]:
        """The metric families (without samples), so the registry can detect name clashes."""
        return _render(self._namespace, None, 0)

    def collect(self) -> list[Metric]:
        """The metric families of the last health pushed (called by the registry per scrape)."""
        return _render(self._namespace, self._health, self._updates)

    def __repr__(self) -> str:
        return f"HealthCollector(namespace={self._namespace!r}, updates={self._updates})"


# The collector made (and registered) last per registry and namespace, for ``replace=True``.
_MADE: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, HealthCollector]] = (
    weakref.WeakKeyDictionary()
)
_LOCK: Final = threading.Lock()


def _register(
    registry: CollectorRegistry, namespace: str, collector: HealthCollector, *, replace: bool
) -> None:
    with _LOCK:
        made = _MADE.setdefault(registry, {})
        earlier = made.get(namespace)
        if replace and earlier is not None:
            with contextlib.suppress(KeyError):  # the user removed it already
                registry.unregister(earlier)
        registry.register(collector)
        made[namespace] = collector


def _render(namespace: str, health: BuilderHealth | None, updates: int) -> list[Metric]:
    """Every family; samples only from ``health`` (``None``: names only, for describe())."""
    prefix = f"{namespace}_" if namespace else ""
    families: list[Metric] = []
    for suffix, attribute, documentation in _GAUGES:
        gauge = GaugeMetricFamily(prefix + suffix, documentation)
        value = None if health is None else getattr(health, attribute)
        if value is not None:
            gauge.add_metric((), float(value))
        families.append(gauge)
    for suffix, attribute, documentation in _COUNTERS:
        counter = CounterMetricFamily(prefix + suffix, documentation)
        if health is not None:
            counter.add_metric((), float(getattr(health, attribute)))
        families.append(counter)
    updates_family = CounterMetricFamily(
        prefix + "health_updates", "Health values pushed to this collector."
    )
    updates_family.add_metric((), float(updates))
    families.append(updates_family)
    families.append(_circuits(prefix, {} if health is None else health.circuits))
    families.extend(_capacity(prefix, {} if health is None else health.capacity))
    families.extend(_cache(prefix, None if health is None else health.cache))
    return families


def _circuits(prefix: str, circuits: Mapping[Any, Any]) -> GaugeMetricFamily:
    """Tracked circuits per (source, scope, state); the discriminator (a namespace, subject
    or key) is summed away, as it may be high-cardinality."""
    family = GaugeMetricFamily(
        prefix + "circuits",
        "Tracked circuits per state (state='open': open circuits).",
        labels=("source", "scope", "state"),
    )
    tally: Tally[tuple[str, str, str]] = Tally()
    for identity, snapshot in circuits.items():
        if isinstance(identity, CircuitIdentity) and isinstance(snapshot, CircuitSnapshot):
            tally[(identity.source, identity.scope.value, snapshot.state.value)] += 1
    # Every state of every seen (source, scope), so an emptied state reads 0 instead of vanishing.
    for source, scope in sorted({(source, scope) for source, scope, _ in tally}):
        for state in _CIRCUIT_STATES:
            family.add_metric((source, scope, state), float(tally[(source, scope, state)]))
    return family


def _capacity(prefix: str, capacity: Mapping[str, Any]) -> Iterable[GaugeMetricFamily]:
    families = []
    for suffix, attribute, documentation in _CAPACITY:
        family = GaugeMetricFamily(prefix + suffix, documentation, labels=("source",))
        for name, snapshot in capacity.items():
            if isinstance(snapshot, CapacitySnapshot):
                label = ANY if name == _GLOBAL_LIMITER else name
                family.add_metric((label,), float(getattr(snapshot, attribute)))
        families.append(family)
    return families


def _cache(prefix: str, stats: object) -> Iterable[Metric]:
    """Size and removals of the memory cache; its hits and misses are already counted per
    build as ``cache_hits_total``/``cache_misses_total`` by the metrics sink."""
    entries = GaugeMetricFamily(prefix + "cache_entries", "Entries in the cache now.")
    limit = GaugeMetricFamily(prefix + "cache_max_entries", "The cache's entry limit.")
    evictions = CounterMetricFamily(prefix + "cache_evictions", "Entries evicted by the limit.")
    expirations = CounterMetricFamily(prefix + "cache_expirations", "Entries expired.")
    if isinstance(stats, CacheStats):
        entries.add_metric((), float(stats.size))
        if stats.max_entries is not None:
            limit.add_metric((), float(stats.max_entries))
        evictions.add_metric((), float(stats.evictions))
        expirations.add_metric((), float(stats.expirations))
    return (entries, limit, evictions, expirations)
