"""Tracing hooks: spans around builds and source calls, for integrations such as OpenTelemetry.

The engine opens a build span around each build and a source span around each source call
attempt. Spans are context managers, so a tracer that keeps the current span in a context
variable (as OpenTelemetry does) gets parent/child links for free: the tasks that resolve a
build's keys are created inside its build span and inherit it. The default :class:`NullTracer`
costs one call per build and per source call.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol, final, runtime_checkable

from ..core import SnapshotDiagnostics

AttributeValue = str | bool | int | float


@runtime_checkable
class Span(Protocol):
    """One span being recorded."""

    def set_attribute(self, name: str, value: AttributeValue) -> None:
        """Attach an attribute (low-cardinality values recommended)."""
        ...


@runtime_checkable
class Tracer(Protocol):
    """Opens spans for builds and source calls.

    An exception leaving a span's ``with`` block is the span's error; the tracer records it.
    """

    def build_span(
        self, snapshot_id: str, key_count: int, deadline_seconds: float | None
    ) -> AbstractContextManager[Span]:
        """A span around one build (or session stage)."""
        ...

    def source_span(
        self, source: str, key_count: int, attempt: int
    ) -> AbstractContextManager[Span]:
        """A span around one attempt of one source call."""
        ...


@final
class _NullSpan(AbstractContextManager["_NullSpan"]):
    __slots__ = ()

    def set_attribute(self, name: str, value: AttributeValue) -> None:
        return None

    def __enter__(self) -> _NullSpan:
        return self

    def __exit__(self, *_exc_info: object) -> None:
        return None


_NULL_SPAN = _NullSpan()


@final
class NullTracer:
    """Records nothing (the default)."""

    __slots__ = ()

    def build_span(
        self, snapshot_id: str, key_count: int, deadline_seconds: float | None
    ) -> AbstractContextManager[Span]:
        """A span that does nothing."""
        return _NULL_SPAN

    def source_span(
        self, source: str, key_count: int, attempt: int
    ) -> AbstractContextManager[Span]:
        """A span that does nothing."""
        return _NULL_SPAN


def check_tracer(tracer: object) -> Tracer:
    """Return ``tracer`` if it implements :class:`Tracer`; otherwise raise ``TypeError``."""
    if not isinstance(tracer, Tracer):
        raise TypeError("tracer must provide build_span() and source_span() (the Tracer protocol)")
    return tracer


def describe_build(span: Span, diagnostics: SnapshotDiagnostics, outcome: str) -> None:
    """Put a build's figures on its span."""
    if isinstance(span, _NullSpan):
        return
    span.set_attribute("coalestra.keys", diagnostics.requested_resources)
    span.set_attribute("coalestra.cache_hits", diagnostics.cache_hits)
    span.set_attribute("coalestra.cache_misses", diagnostics.cache_misses)
    span.set_attribute("coalestra.stale_values", diagnostics.stale_values)
    span.set_attribute("coalestra.failed", diagnostics.failed_resources)
    span.set_attribute("coalestra.outcome", outcome)
