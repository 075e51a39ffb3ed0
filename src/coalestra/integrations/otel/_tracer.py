"""An OpenTelemetry implementation of the engine's ``Tracer`` protocol.

Spans are started with ``start_as_current_span``, so each becomes the current span in the
task's ``contextvars`` context. That gives the parent/child links without any engine support:

* a build span's parent is whatever span is current where ``build()`` is awaited;
* the engine creates the tasks resolving a build's keys inside the build span, and asyncio copies
  the context into each new task, so source spans opened in those tasks are the build span's
  children (this includes background refreshes a build schedules: their source spans are
  children of that build's span, and may end after it);
* a key whose flight is shared by several builds is fetched once, by the build that started the
  flight: its source spans are children of *that* build's span only. The builds that joined the
  flight get no source span for the key (their own spans show the wait).
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Final, final

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from ..._compat import TIMEOUT_ERRORS
from ..._version import __version__
from ...core._validation import check_str

BUILD_SPAN_NAME: Final = "coalestra.build"
"""The name of the span around one build."""
SOURCE_SPAN_NAME: Final = "coalestra.source_call"
"""The name of the span around one attempt of one source call."""

ATTR_SNAPSHOT_ID: Final = "coalestra.snapshot_id"
ATTR_KEYS: Final = "coalestra.keys"
ATTR_DEADLINE: Final = "coalestra.deadline_seconds"
ATTR_SOURCE: Final = "coalestra.source"
ATTR_ATTEMPT: Final = "coalestra.attempt"
ATTR_OUTCOME: Final = "coalestra.outcome"
ATTR_ERROR_TYPE: Final = "error.type"  # the OpenTelemetry semantic-convention name

_AttributeValue = str | bool | int | float


def _outcome_of(error: BaseException | None) -> str:
    """The source-call outcome of a span: success, error, timeout or cancelled."""
    if error is None:
        return "success"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    if isinstance(error, TIMEOUT_ERRORS):
        return "timeout"
    return "error"


@final
class _SpanScope(AbstractContextManager["_SpanScope"]):
    """One span's ``with`` block: the engine's ``Span`` (``set_attribute``) over an OTel span.

    Exceptions are recorded here rather than by OpenTelemetry, because cancellation is not an
    error: the engine cancels the calls of a flight nobody waits for any more, and a cancelled
    build was abandoned by its caller. Those spans get outcome ``"cancelled"`` and keep an
    unset status; any other ``Exception`` is recorded as an exception event with ERROR status.
    """

    __slots__ = ("_inner", "_is_source", "_outcome_set", "_span")

    def __init__(self, inner: AbstractContextManager[trace.Span], *, is_source: bool) -> None:
        self._inner = inner
        self._is_source = is_source
        self._outcome_set = False
        self._span: trace.Span = trace.INVALID_SPAN

    @property
    def span(self) -> trace.Span:
        """The underlying OpenTelemetry span."""
        return self._span

    def set_attribute(self, name: str, value: _AttributeValue) -> None:
        """Set an attribute on the span."""
        if name == ATTR_OUTCOME:
            self._outcome_set = True
        self._span.set_attribute(name, value)

    def __enter__(self) -> _SpanScope:
        self._span = self._inner.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        try:
            self._finish(exc)
        finally:
            # The inner exit detaches the context and ends the span, whatever happened above.
            self._inner.__exit__(exc_type, exc, traceback)
        return None

    def _finish(self, exc: BaseException | None) -> None:
        span = self._span
        if self._is_source:
            span.set_attribute(ATTR_OUTCOME, _outcome_of(exc))
        elif exc is not None and not self._outcome_set:
            # The engine describes every build it finishes; an exception before that (a closed
            # builder, a cancellation) still gets an outcome.
            span.set_attribute(ATTR_OUTCOME, _outcome_of(exc))
        if isinstance(exc, Exception):
            span.record_exception(exc)
            span.set_attribute(ATTR_ERROR_TYPE, type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


@final
class OpenTelemetryTracer:
    """Traces builds and source calls with OpenTelemetry; pass it as ``SnapshotBuilder(tracer=)``.

    Spans:

    * ``coalestra.build`` around each build, with ``coalestra.snapshot_id``, ``coalestra.keys``,
      ``coalestra.deadline_seconds`` (when set), and, when the build ends,
      ``coalestra.cache_hits``, ``coalestra.cache_misses``, ``coalestra.stale_values``,
      ``coalestra.failed`` and ``coalestra.outcome`` (``complete``, ``partial``, ``failed``,
      or ``cancelled``/``error`` when it ended before the engine could describe it).
    * ``coalestra.source_call`` around each attempt of each source call, a child of its build
      span, with ``coalestra.source``, ``coalestra.keys``, ``coalestra.attempt`` (1 for the first
      try) and ``coalestra.outcome`` (``success``, ``error``, ``timeout``, ``cancelled``).

    A span left by an exception records it (an ``exception`` event, ``error.type`` and ERROR
    status); cancellations set the outcome only. Parent/child links come from the current
    context (see the module docstring for shared flights and background refreshes).

    Args:
        tracer_provider: the provider to use (default: the global one, looked up lazily, so
            one configured after this tracer is made still receives the spans).
        tracer_name: the instrumentation scope name.

    Raises:
        TypeError: ``tracer_provider`` is not an OpenTelemetry ``TracerProvider``, or
            ``tracer_name`` is not a string.
        ValueError: ``tracer_name`` is empty.
    """

    __slots__ = ("_tracer",)

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        tracer_name: str = "coalestra",
    ) -> None:
        if tracer_provider is not None and not isinstance(tracer_provider, trace.TracerProvider):
            raise TypeError(
                "tracer_provider must be an opentelemetry TracerProvider, "
                f"got {type(tracer_provider).__name__}"
            )
        check_str("tracer_name", tracer_name)
        self._tracer = trace.get_tracer(tracer_name, __version__, tracer_provider)

    def build_span(
        self, snapshot_id: str, key_count: int, deadline_seconds: float | None
    ) -> _SpanScope:
        """A ``coalestra.build`` span, current while the build runs."""
        attributes: dict[str, _AttributeValue] = {
            ATTR_SNAPSHOT_ID: snapshot_id,
            ATTR_KEYS: key_count,
        }
        if deadline_seconds is not None:
            attributes[ATTR_DEADLINE] = deadline_seconds
        return self._start(BUILD_SPAN_NAME, attributes, is_source=False)

    def source_span(self, source: str, key_count: int, attempt: int) -> _SpanScope:
        """A ``coalestra.source_call`` span around one attempt, a child of the current span."""
        attributes: dict[str, _AttributeValue] = {
            ATTR_SOURCE: source,
            ATTR_KEYS: key_count,
            ATTR_ATTEMPT: attempt,
        }
        return self._start(SOURCE_SPAN_NAME, attributes, is_source=True)

    def _start(
        self, name: str, attributes: dict[str, _AttributeValue], *, is_source: bool
    ) -> _SpanScope:
        inner = self._tracer.start_as_current_span(
            name,
            attributes=attributes,
            record_exception=False,  # recorded by _SpanScope, which knows cancellation
            set_status_on_exception=False,
        )
        return _SpanScope(inner, is_source=is_source)

    def __repr__(self) -> str:
        return "OpenTelemetryTracer()"
