"""The builder's observability buffering: which sinks get a buffer, and the buffers' lifecycle.

The 0.5.7 default (``buffer_observability=None``) calls sinks directly, as before; a sink that
is already buffered is used as it is. ``"auto"`` wraps every sink that does not declare a truthy
``coalestra_non_blocking`` attribute (the 0.6 line's default), ``True`` wraps every sink that is
not buffered yet, ``False`` never wraps. The builder owns the buffers it made: ``aclose()``
drains them within one budget, and their downstream sinks are closed (``manage_lifecycle``) only
once their workers have ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final, TypeVar, final

from ..core._errors import ObservabilityShutdownTimeoutError
from ..core._protocols import EventSink, MetricsSink
from ..core._validation import check_float
from ._buffered import BufferedEventSink, BufferedMetricsSink, _BufferedSink
from ._records import BufferedSinkStats, BufferOverflowPolicy
from ._sinks import NullEventSink, NullMetrics

AUTO: Final = "auto"
"""``buffer_observability="auto"``: buffer every sink that is not declared non-blocking."""

_B = TypeVar("_B", bound=_BufferedSink[Any])


def check_buffer_mode(name: str, value: object) -> bool | str | None:
    """``None``, ``True``, ``False`` or ``"auto"``.

    Raises:
        TypeError: not a bool, ``None`` or a string. ValueError: another string.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value == AUTO:
            return AUTO
        raise ValueError(f"{name} must be None, True, False or 'auto', got {value!r}")
    raise TypeError(f"{name} must be None, a bool or 'auto', got {type(value).__name__}")


def check_shutdown_budget(name: str, value: object) -> float:
    """A finite number of seconds > 0 (the 0.6.4 phrasings, as every other budget).

    Raises:
        TypeError: not a number (bools too). ValueError: NaN, infinite, or <= 0.
    """
    return check_float(name, value, positive=True)


def _wants_buffer(sink: object, mode: bool | str | None) -> bool:
    if isinstance(sink, _BufferedSink) or mode is None or mode is False:
        return False
    if isinstance(sink, (NullEventSink, NullMetrics)):
        return False  # nothing is ever delivered: a buffer would only add a thread
    return mode is True or not getattr(sink, "coalestra_non_blocking", False)


@final
class ObservabilityBuffers:
    """The sinks a builder reports to, after its buffering choice, and the buffers it owns.

    Args:
        metrics / events: the sinks as given (or the null defaults).
        mode: the checked ``buffer_observability`` choice.
        max_pending / overflow: the bound and overflow policy of the buffers made here.
        drain: deliver (True) or discard (False) what is queued at shutdown.
    """

    __slots__ = ("_closing", "_drain", "_in_use", "_owned", "events", "incomplete", "metrics")

    def __init__(
        self,
        metrics: MetricsSink,
        events: EventSink,
        *,
        mode: bool | str | None,
        max_pending: int,
        overflow: BufferOverflowPolicy,
        drain: bool,
    ) -> None:
        self._drain = drain
        self._owned: dict[str, _BufferedSink[Any]] = {}
        self.events: EventSink = events
        self.metrics: MetricsSink = metrics
        if _wants_buffer(events, mode):
            self.events = self._own(
                "events", BufferedEventSink(events, max_pending=max_pending, overflow=overflow)
            )
        if _wants_buffer(metrics, mode):
            self.metrics = self._own(
                "metrics", BufferedMetricsSink(metrics, max_pending=max_pending, overflow=overflow)
            )
        # Every buffered sink in use, the builder's own and the ones given already buffered.
        self._in_use: dict[str, _BufferedSink[Any]] = {
            name: sink
            for name, sink in (("events", self.events), ("metrics", self.metrics))
            if isinstance(sink, _BufferedSink)
        }
        self.incomplete = False
        """True from a shutdown that ran out of budget until every owned worker has ended."""
        self._closing: asyncio.Future[tuple[float, dict[str, int]]] | None = None

    def _own(self, name: str, sink: _B) -> _B:
        self._owned[name] = sink
        return sink

    @property
    def owned(self) -> Mapping[str, object]:
        """The buffers this builder made (name -> buffered sink)."""
        return self._owned

    def stats(self) -> dict[str, BufferedSinkStats]:
        """``BufferedSinkStats`` of every buffered sink in use, by role."""
        return {name: sink.stats() for name, sink in self._in_use.items()}

    def health_fields(self) -> dict[str, Any]:
        """The ``observability_*`` fields of ``BuilderHealth`` (sums over the buffers)."""
        stats = self.stats()
        values = stats.values()
        return {
            "observability_buffers": stats,
            "observability_pending": sum(item.pending for item in values),
            "observability_peak_pending": sum(item.peak_pending for item in values),
            "observability_dropped_count": sum(item.dropped for item in values),
            "observability_failure_count": sum(item.failures for item in values),
            "observability_shutdown_incomplete": self.incomplete,
            "observability_shutdown_timeout_count": sum(
                item.shutdown_timeout_count for item in values
            ),
        }

    async def shutdown(self, budget: float) -> None:
        """Drain (or discard) every owned buffer and end its worker, all within ``budget``.

        A shutdown that the caller stopped waiting for (cancelled, e.g. by an outer timeout)
        goes on; the next call joins it instead of starting a second budget.

        Raises:
            ObservabilityShutdownTimeoutError: some worker was still running when the budget
                passed (``incomplete`` stays True until :meth:`wait` sees it end).
        """
        if not self._owned:
            return
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_owned(budget))
        closing = self._closing
        try:
            spent, late = await asyncio.shield(closing)
        finally:
            if closing.done():
                self._closing = None
        self.incomplete = bool(late)
        if late:
            raise ObservabilityShutdownTimeoutError(timeout_seconds=spent, pending_components=late)

    async def _close_owned(self, budget: float) -> tuple[float, dict[str, int]]:
        """Close every owned buffer within ``budget``; return it with the late buffers'
        records not delivered when it passed (discarded then, or still in the sink)."""
        before = {name: sink.stats().dropped for name, sink in self._owned.items()}
        stopped = await self._close_all(budget)
        late = {}
        for (name, sink), done in zip(self._owned.items(), stopped, strict=True):
            if not done:
                after = sink.stats()
                late[name] = after.pending + after.dropped - before[name]
        return budget, late

    async def wait(self) -> None:
        """Wait, without a budget, until every owned buffer's worker has ended."""
        if self._owned:
            await self._close_all(None)
        self.incomplete = False

    async def _close_all(self, budget: float | None) -> list[bool]:
        # In worker threads, concurrently: the budget is shared, not spent once per buffer.
        return list(
            await asyncio.gather(
                *(
                    asyncio.to_thread(sink.close, timeout=budget, drain=self._drain)
                    for sink in self._owned.values()
                )
            )
        )

    def delivers_to(self, sink: object) -> bool:
        """True when one of the buffers this builder made delivers to ``sink``."""
        return any(buffer._downstream is sink for buffer in self._owned.values())
