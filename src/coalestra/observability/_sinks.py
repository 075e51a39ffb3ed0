"""The simple sinks: null sinks (the defaults), a logging event sink, in-memory metrics."""

from __future__ import annotations

import logging
import threading
from typing import Any, ClassVar, final

from ..core._validation import check_float, check_int, check_str
from ._records import ObservationSummary, check_label_values

DEFAULT_EVENT_LOGGER: str = "coalestra.events"
"""The logger :class:`LoggingEventSink` uses when none is given."""

_LabelKey = tuple[str, tuple[tuple[str, str], ...]]


@final
class NullEventSink:
    """An event sink that discards every event; the builder's default."""

    coalestra_non_blocking: ClassVar[bool] = True
    """Calls return at once: automatic buffering (``buffer_observability="auto"``) skips it."""

    __slots__ = ()

    def emit(self, event_type: str, **payload: Any) -> None:
        """Discard the event."""

    def __repr__(self) -> str:
        return "NullEventSink()"


@final
class NullMetrics:
    """A metrics sink that discards everything; the builder's default."""

    coalestra_non_blocking: ClassVar[bool] = True
    """Calls return at once: automatic buffering (``buffer_observability="auto"``) skips it."""

    __slots__ = ()

    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        """Discard the increment."""

    def observe(self, metric: str, value: float, **labels: str) -> None:
        """Discard the observation."""

    def __repr__(self) -> str:
        return "NullMetrics()"


class _LazyPayload:
    """Renders ``key=value`` pairs only if a handler actually formats the log message."""

    __slots__ = ("_payload",)

    def __init__(self, payload: dict[str, Any]) -> None:
        self._payload = payload

    def __str__(self) -> str:
        return " ".join(f"{name}={value!r}" for name, value in self._payload.items())


@final
class LoggingEventSink:
    """An event sink that logs each event at ``INFO``.

    The message is ``"<event_type> key=value ..."``; structured handlers find the same data in
    the record's ``event_type`` and ``payload`` attributes (passed as ``extra``; nesting the
    payload under one attribute means no payload field can clash with a ``LogRecord`` attribute).
    Logging is synchronous: wrap this sink in a ``BufferedEventSink`` when handlers do slow I/O.

    Args:
        logger: the logger to use; ``None`` means ``logging.getLogger("coalestra.events")``.

    Raises:
        TypeError: ``logger`` is not a ``logging.Logger``.
    """

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger | None = None) -> None:
        if logger is None:
            logger = logging.getLogger(DEFAULT_EVENT_LOGGER)
        elif not isinstance(logger, logging.Logger):
            raise TypeError(f"logger must be a logging.Logger, got {type(logger).__name__}")
        self._logger = logger

    @property
    def logger(self) -> logging.Logger:
        """The logger events are written to."""
        return self._logger

    def emit(self, event_type: str, **payload: Any) -> None:
        """Log ``event_type`` with ``payload`` at ``INFO`` (nothing is built when disabled)."""
        logger = self._logger
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "%s %s",
                event_type,
                _LazyPayload(payload),
                extra={"event_type": event_type, "payload": payload},
            )

    def __repr__(self) -> str:
        return f"LoggingEventSink(logger={self._logger.name!r})"


def _label_key(metric: str, labels: dict[str, str]) -> _LabelKey:
    """The series identity: label order never matters."""
    return metric, tuple(sorted(labels.items()))


@final
class InMemoryMetrics:
    """A metrics sink that keeps counters and observation summaries in memory.

    Each series is a metric name plus an exact label set (label order does not matter). Useful in
    tests and for applications that read their own numbers. Thread-safe, so it can sit behind a
    ``BufferedMetricsSink`` while another thread reads it.
    """

    coalestra_non_blocking: ClassVar[bool] = True
    """Calls return at once: automatic buffering (``buffer_observability="auto"``) skips it."""

    __slots__ = ("_counters", "_lock", "_observations")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[_LabelKey, int] = {}
        # [count, total, minimum, maximum], mutated in place under the lock.
        self._observations: dict[_LabelKey, list[float]] = {}

    def increment(self, metric: str, value: int = 1, **labels: str) -> None:
        """Add ``value`` to the counter ``metric`` with ``labels``.

        Raises:
            TypeError: ``metric`` is not a str, ``value`` not an int, a label value not a str.
            ValueError: ``metric`` is blank or ``value`` is negative (counters never go down).
        """
        check_str("metric", metric)
        check_int("value", value, minimum=0)
        check_label_values(labels)
        key = _label_key(metric, labels)
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + value

    def observe(self, metric: str, value: float, **labels: str) -> None:
        """Record one observation of ``value`` for ``metric`` with ``labels``.

        Raises:
            TypeError: ``metric`` is not a str, ``value`` not a number, a label value not a str.
            ValueError: ``metric`` is blank or ``value`` is NaN or infinite.
        """
        check_str("metric", metric)
        number = check_float("value", value, minimum=None)
        check_label_values(labels)
        key = _label_key(metric, labels)
        with self._lock:
            stats = self._observations.get(key)
            if stats is None:
                self._observations[key] = [1, number, number, number]
            else:
                stats[0] += 1
                stats[1] += number
                stats[2] = min(stats[2], number)
                stats[3] = max(stats[3], number)

    def counter(self, metric: str, **labels: str) -> int:
        """Return the counter ``metric`` for exactly ``labels``; 0 if it was never incremented."""
        check_str("metric", metric)
        with self._lock:
            return self._counters.get(_label_key(metric, labels), 0)

    def summary(self, metric: str, **labels: str) -> ObservationSummary | None:
        """Return the observations of ``metric`` for exactly ``labels``, or ``None`` if none."""
        check_str("metric", metric)
        with self._lock:
            stats = self._observations.get(_label_key(metric, labels))
            if stats is None:
                return None
            count, total, minimum, maximum = stats
        return ObservationSummary(int(count), total, minimum, maximum)

    def series(self, metric: str | None = None) -> list[tuple[str, dict[str, str]]]:
        """Return every series recorded so far as ``(metric, labels)``, sorted, each once
        (counters and observations alike); only ``metric``'s when it is given.

        Read each with :meth:`counter` or :meth:`summary`: ``counter(name, **labels)``.

        Raises:
            TypeError, ValueError: ``metric`` is given and is not a non-blank str.
        """
        if metric is not None:
            check_str("metric", metric)
        with self._lock:
            keys = set(self._counters) | set(self._observations)
        return [
            (name, dict(labels))
            for name, labels in sorted(keys)
            if metric is None or name == metric
        ]

    def __repr__(self) -> str:
        with self._lock:
            return (
                f"InMemoryMetrics(counters={len(self._counters)}, "
                f"observed={len(self._observations)})"
            )
