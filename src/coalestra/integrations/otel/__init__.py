"""OpenTelemetry tracing for Coalestra (``pip install "coalestra[otel]"``).

:class:`OpenTelemetryTracer` implements the builder's tracer hooks: a ``coalestra.build`` span
per build and a child ``coalestra.source_call`` span per source-call attempt, with errors
recorded on the spans and trace context taken from the caller's current span.

Example::

    from coalestra import SnapshotBuilder
    from coalestra.integrations.otel import OpenTelemetryTracer

    builder = SnapshotBuilder(sources, tracer=OpenTelemetryTracer())
"""

from ._tracer import BUILD_SPAN_NAME, SOURCE_SPAN_NAME, OpenTelemetryTracer

__all__ = ["BUILD_SPAN_NAME", "OpenTelemetryTracer", "SOURCE_SPAN_NAME"]
