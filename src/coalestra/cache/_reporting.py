"""Turns the publisher's outcomes into metrics and events, in one place.

Metric labels are low-cardinality: the resource type (``resource_namespace``, ``resource_name``),
the configured source name and the status; never the subject, qualifiers or the rendered key.
Full identity goes to events only. A failing sink never fails a publication. Facts are named
tuples: one is made per publication, so they must be cheap to build.
"""

from __future__ import annotations

import logging
from typing import NamedTuple, final

from ..core import EventSink, MetricsSink, ResourceKey
from ._values import PublishStatus

PUBLICATIONS_METRIC = "coalestra_publications_total"
INVALIDATIONS_METRIC = "coalestra_invalidations_total"
PUBLISHED_EVENT = "resource_published"
INVALIDATED_EVENT = "resource_invalidated"

_log = logging.getLogger("coalestra.cache")


class Published(NamedTuple):
    """A publication's outcome: ``status`` of the value from ``source`` observed at a time."""

    key: ResourceKey
    source: str
    status: PublishStatus
    observed_at: float


class Invalidated(NamedTuple):
    """An invalidation of ``key``, with the caller's ``reason`` (may be empty)."""

    key: ResourceKey
    reason: str


@final
class Reporter:
    """Sends each outcome to the metrics and event sinks, isolating the caller from sink errors.

    Args:
        metrics: receives counters.
        events: receives structured events.
    """

    __slots__ = ("_events", "_metrics")

    def __init__(self, metrics: MetricsSink, events: EventSink) -> None:
        self._metrics = metrics
        self._events = events

    def report(self, fact: Published | Invalidated) -> None:
        """Record one outcome; never raises ``Exception`` (sink failures are logged)."""
        if isinstance(fact, Published):
            self._published(fact)
        else:
            self._invalidated(fact)

    # Observability must never fail (or undo) an outcome that already happened, hence the
    # guards. They are written out rather than shared through a helper: this runs once per
    # publication, and each extra call level costs measurably there.

    def _published(self, fact: Published) -> None:
        key, source, status = fact.key, fact.source, fact.status.value
        try:
            self._metrics.increment(
                PUBLICATIONS_METRIC,
                resource_namespace=key.namespace,
                resource_name=key.name,
                source=source,
                status=status,
            )
        except Exception:
            _log.exception("coalestra: metrics sink failed recording %s", PUBLICATIONS_METRIC)
        try:
            self._events.emit(
                PUBLISHED_EVENT,
                resource=str(key),
                source=source,
                status=status,
                observed_at=fact.observed_at,
            )
        except Exception:
            _log.exception("coalestra: event sink failed recording %s", PUBLISHED_EVENT)

    def _invalidated(self, fact: Invalidated) -> None:
        key = fact.key
        try:
            self._metrics.increment(
                INVALIDATIONS_METRIC, resource_namespace=key.namespace, resource_name=key.name
            )
        except Exception:
            _log.exception("coalestra: metrics sink failed recording %s", INVALIDATIONS_METRIC)
        try:
            self._events.emit(INVALIDATED_EVENT, resource=str(key), reason=fact.reason)
        except Exception:
            _log.exception("coalestra: event sink failed recording %s", INVALIDATED_EVENT)
