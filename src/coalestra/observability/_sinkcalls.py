"""Calling the observability sinks safely and cheaply (the base of ``Instrumentation``).

Every sink call goes through :meth:`SinkCalls._safely` (or an inlined copy of its guard on the
per-key paths), which counts and swallows ``Exception``; the null sinks are recognised once, so a
disabled call costs one attribute test.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from operator import attrgetter
from typing import Any, Final

from ..core._keys import ResourceKey
from ..core._protocols import EventSink, MetricsSink
from ..core._validation import ReadOnlyDict
from ._names import KeyType
from ._sinks import NullEventSink, NullMetrics

_log = logging.getLogger("coalestra.observability")
_key_type_of = attrgetter("namespace", "name")
_namespace_of = attrgetter("namespace")
_name_of = attrgetter("name")
_TYPE_COUNT_MEMO_SIZE: Final = 16


def key_type(key: ResourceKey) -> KeyType:
    """Return the resource type ``(namespace, name)`` of ``key``: what metrics may name."""
    return key.namespace, key.name


def count_types(keys: Collection[ResourceKey]) -> dict[KeyType, int]:
    """Count ``keys`` per resource type with the loops in C.

    Counting names and namespaces separately avoids building a tuple per key (about 40% faster);
    when the keys span several namespaces the pairs are counted directly.
    """
    namespaces = set(map(_namespace_of, keys))
    if len(namespaces) == 1:
        (namespace,) = namespaces
        return {(namespace, name): count for name, count in Counter(map(_name_of, keys)).items()}
    return dict(Counter(map(_key_type_of, keys)))


class SinkCalls:
    """The sinks of one :class:`~._instrumentation.Instrumentation`, and the guarded calls to them.

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
            return count_types(keys)
        memo = self._type_counts.get(id(keys))
        if memo is not None and memo[0] is keys:
            return memo[1]
        counts: Mapping[KeyType, int] = ReadOnlyDict(count_types(keys))
        if len(self._type_counts) >= _TYPE_COUNT_MEMO_SIZE:
            del self._type_counts[next(iter(self._type_counts))]  # the oldest entry
        self._type_counts[id(keys)] = (keys, counts)
        return counts
