"""Buffered sinks: keep slow event/metrics export off the acquisition path.

Both sinks share :class:`_BufferedSink` (flush, close, stats, context management) and one
:class:`~._buffer.RecordBuffer`; they differ only in the record they queue and how the worker
replays it to the downstream.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar, final

from ..core._protocols import EventSink, MetricsSink
from ..core._validation import check_bool, check_float, check_int, check_str
from ._buffer import RecordBuffer
from ._records import (
    INCREMENT,
    OBSERVE,
    BufferedSinkStats,
    BufferOverflowPolicy,
    EventRecord,
    MetricRecord,
    check_label_values,
)

R = TypeVar("R", EventRecord, MetricRecord)


def check_overflow(name: str, overflow: object) -> BufferOverflowPolicy:
    """A :class:`BufferOverflowPolicy` member; its string value is refused (0.6: a typo in a
    string would otherwise surface only when the buffer fills).

    Raises:
        TypeError: anything else.
    """
    if not isinstance(overflow, BufferOverflowPolicy):
        raise TypeError(f"{name} must be a BufferOverflowPolicy, got {type(overflow).__name__}")
    return overflow


def _check_timeout(timeout: object) -> float | None:
    """A wait bound in seconds (``None``: no bound); negative waits are refused."""
    if timeout is None:
        return None
    seconds = check_float("timeout", timeout, minimum=None)
    if seconds < 0.0:
        raise ValueError("timeout cannot be negative")
    return seconds


class _BufferedSink(Generic[R]):
    """What both buffered sinks share: a record buffer, its worker, and its lifecycle."""

    coalestra_non_blocking: ClassVar[bool] = True
    """Calls only queue: a builder never wraps a buffered sink again."""

    __slots__ = ("__weakref__", "_buffer", "_downstream", "_put")

    def __init__(
        self,
        downstream: object,
        replay: Callable[[R], None],
        max_pending: int,
        overflow: BufferOverflowPolicy,
    ) -> None:
        self._downstream = downstream
        self._buffer: RecordBuffer[R] = RecordBuffer(
            replay,
            max_pending=check_int("max_pending", max_pending, minimum=1),
            overflow=check_overflow("overflow", overflow),
            name=type(self).__name__,
        )
        # Bound once: the hot path calls it directly.
        self._put: Callable[[R], None] = self._buffer.put
        # A sink dropped without close(): stop accepting and let the worker drain, then end.
        weakref.finalize(self, self._buffer.close_nowait).atexit = False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record accepted before this call reached the downstream.

        Blocks the calling thread: from async code use ``await asyncio.to_thread(sink.flush)``.

        Args:
            timeout: the most seconds to wait; ``None`` waits as long as it takes.

        Returns:
            True when everything was handed over, False when ``timeout`` passed first.

        Raises:
            TypeError, ValueError: ``timeout`` is not a finite number >= 0 or ``None``
                (``ValueError("timeout cannot be negative")`` for a negative one).
        """
        return self._buffer.flush(_check_timeout(timeout))

    def close(self, *, timeout: float | None = 5.0, drain: bool = True) -> bool:
        """Stop accepting records, deliver or discard what is queued, and end the worker thread.

        Records offered after ``close`` raise ``RuntimeError``. Idempotent: a later call waits
        for the worker again and reports the same way.

        Args:
            timeout: one budget, in seconds, for delivering the queue and ending the worker;
                ``None`` waits as long as it takes. When it passes, the timeout is counted in
                ``stats().shutdown_timeout_count`` and records still queued are discarded and
                counted as dropped; the worker ends once the downstream returns from the record
                it holds.
            drain: deliver queued records first (True) or discard them (False).

        Returns:
            True when the worker thread has stopped (or never started), so nothing will reach
            the downstream any more; False when the budget passed first (or when called from
            the downstream itself). With ``drain=False`` and a downstream that returns, True.

        Raises:
            TypeError: ``drain`` is not a bool, ``timeout`` not a number or ``None``.
            ValueError: ``timeout`` is negative (``"timeout cannot be negative"``) or not
                finite.
        """
        checked_timeout = _check_timeout(timeout)
        return self._buffer.close(checked_timeout, check_bool("drain", drain))

    # The timeout bounds the wait inside the worker thread (mirroring close), so ASYNC109's
    # advice to use asyncio.timeout does not apply: cancelling the await would not stop it.
    async def aclose(
        self,
        *,
        timeout: float | None = 5.0,
        drain: bool = True,
    ) -> bool:
        """Like :meth:`close`, run in a worker thread so the event loop is never blocked.

        Raises:
            TypeError, ValueError: ``timeout`` or ``drain`` is invalid.
        """
        checked_timeout = _check_timeout(timeout)
        checked_drain = check_bool("drain", drain)
        return await asyncio.to_thread(self._buffer.close, checked_timeout, checked_drain)

    def stats(self) -> BufferedSinkStats:
        """Return the sink's counters (enqueued, delivered, dropped, failures, pending, closed)."""
        return self._buffer.stats()

    def __exit__(self, *_exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._downstream!r})"


def _replay_event(sink: EventSink) -> Callable[[EventRecord], None]:
    emit = sink.emit

    def replay(record: EventRecord) -> None:
        emit(record.event_type, **record.payload)

    return replay


def _replay_metric(sink: MetricsSink) -> Callable[[MetricRecord], None]:
    increment, observe = sink.increment, sink.observe

    def replay(record: MetricRecord) -> None:
        if record.operation == INCREMENT:
            increment(record.metric, int(record.value), **record.labels)
        else:
            observe(record.metric, record.value, **record.labels)

    return replay


@final
class BufferedEventSink(_BufferedSink[EventRecord]):
    """An event sink that queues events and delivers them to ``downstream`` on its own thread.

    ``emit`` only appends to a bounded queue and returns; one daemon worker thread, started at
    the first event and ended by :meth:`close`, calls ``downstream.emit``. Downstream exceptions
    are counted in ``stats().failures`` and never reach the caller.

    Args:
        downstream: the sink to deliver to (checked once, here).
        max_pending: the most queued events (>= 1).
        overflow: what happens to a new event when ``max_pending`` are queued (a
            :class:`BufferOverflowPolicy` member; its string value is a ``TypeError``).

    Raises:
        TypeError: ``downstream`` has no ``emit`` method, or an argument has the wrong type.
        ValueError: ``max_pending`` < 1.
    """

    __slots__ = ()

    def __init__(
        self,
        downstream: EventSink,
        *,
        max_pending: int = 10000,
        overflow: BufferOverflowPolicy = BufferOverflowPolicy.DROP_OLDEST,
    ) -> None:
        if not isinstance(downstream, EventSink):
            raise TypeError(
                "downstream must implement EventSink (an emit(event_type, **payload) method), "
                f"got {type(downstream).__name__}"
            )
        super().__init__(downstream, _replay_event(downstream), max_pending, overflow)

    def __enter__(self) -> BufferedEventSink:
        return self

    def emit(self, event_type: str, **payload: Any) -> None:
        """Queue one event; returns at once.

        Raises:
            TypeError, ValueError: ``event_type`` is not a non-blank string.
            RuntimeError: the sink is closed (``"buffered sink is closed"``).
            queue.Full: the queue is full under ``BufferOverflowPolicy.RAISE`` (the error is
                also an ``OverflowError``); the record is refused, not counted as dropped.
        """
        check_str("event_type", event_type)
        self._put(EventRecord._trusted(event_type, payload))


@final
class BufferedMetricsSink(_BufferedSink[MetricRecord]):
    """A metrics sink that queues increments and observations for delivery on its own thread.

    ``increment``/``observe`` only append to a bounded queue and return; one daemon worker
    thread, started at the first record and ended by :meth:`close`, replays them to
    ``downstream``. Downstream exceptions are counted in ``stats().failures``, never raised.

    Args:
        downstream: the sink to deliver to (checked once, here).
        max_pending: the most queued records (>= 1).
        overflow: what happens to a new record when ``max_pending`` are queued (a
            :class:`BufferOverflowPolicy` member; its string value is a ``TypeError``).

    Raises:
        TypeError: ``downstream`` lacks ``increment``/``observe``, or an argument has the wrong
            type.
        ValueError: ``max_pending`` < 1.
    """

    __slots__ = ()

    def __init__(
        self,
        downstream: MetricsSink,
        *,
        max_pending: int = 10000,
        overflow: BufferOverflowPolicy = BufferOverflowPolicy.DROP_OLDEST,
    ) -> None:
        if not isinstance(downstream, MetricsSink):
            raise TypeError(
                "downstream must implement MetricsSink (increment() and observe() methods), "
                f"got {type(downstream).__name__}"
            )
        super().__init__(downstream, _replay_metric(downstream), max_pending, overflow)

    def __enter__(self) -> BufferedMetricsSink:
        return self

    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        """Queue a counter increment; returns at once.

        Raises:
            TypeError, ValueError: blank ``metric``, ``value`` not an int >= 0, non-str label.
            RuntimeError: the sink is closed (``"buffered sink is closed"``).
            queue.Full: the queue is full under ``BufferOverflowPolicy.RAISE`` (the error is
                also an ``OverflowError``); the record is refused, not counted as dropped.
        """
        check_str("metric", metric)
        check_int("value", value, minimum=0)
        check_label_values(labels)
        self._put(MetricRecord._trusted(INCREMENT, metric, value, labels))

    def observe(self, metric: str, value: float, **labels: str) -> None:
        """Queue one observation; returns at once.

        Raises:
            TypeError, ValueError: blank ``metric``, ``value`` not a finite number, non-str label.
            RuntimeError: the sink is closed (``"buffered sink is closed"``).
            queue.Full: the queue is full under ``BufferOverflowPolicy.RAISE`` (the error is
                also an ``OverflowError``); the record is refused, not counted as dropped.
        """
        check_str("metric", metric)
        number = check_float("value", value, minimum=None)
        check_label_values(labels)
        self._put(MetricRecord._trusted(OBSERVE, metric, number, labels))
