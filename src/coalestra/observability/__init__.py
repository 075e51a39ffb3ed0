"""Observability: event and metrics sinks, and buffered wrappers that keep export off the hot path.

``NullEventSink``/``NullMetrics`` are the builder's defaults; ``LoggingEventSink`` and
``InMemoryMetrics`` are ready-made sinks; ``BufferedEventSink``/``BufferedMetricsSink`` wrap any
sink so slow, blocking or failing delivery happens on one owned worker thread instead of in
resource acquisition.
"""

from ._buffered import BufferedEventSink, BufferedMetricsSink
from ._records import (
    BufferedSinkStats,
    BufferOverflowPolicy,
    EventRecord,
    MetricRecord,
    ObservationSummary,
)
from ._sinks import InMemoryMetrics, LoggingEventSink, NullEventSink, NullMetrics

__all__ = [
    "BufferOverflowPolicy",
    "BufferedEventSink",
    "BufferedMetricsSink",
    "BufferedSinkStats",
    "EventRecord",
    "InMemoryMetrics",
    "LoggingEventSink",
    "MetricRecord",
    "NullEventSink",
    "NullMetrics",
    "ObservationSummary",
]
