"""The value types of observability: buffered records, observation summaries, buffer statistics.

Records are what a buffered sink queues and later replays to its downstream. They are frozen and
validated when users build them; the buffered sinks build them through ``_trusted`` constructors
that skip validation, because the hot path has already checked its arguments and must stay cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, final

from ..core._validation import ReadOnlyDict, check_bool, check_float, check_int, check_str

INCREMENT: Final = "increment"
"""``MetricRecord.operation`` of a counter increment."""
OBSERVE: Final = "observe"
"""``MetricRecord.operation`` of an observation."""
_OPERATIONS: Final = (INCREMENT, OBSERVE)

# ``object.__setattr__`` is how frozen dataclasses set their own fields; bound once here.
_set = object.__setattr__


def check_label_values(labels: Mapping[str, object]) -> None:
    """Raise ``TypeError`` naming the first label whose value is not a string.

    Label names need no check when they arrive as ``**labels``: Python made them identifiers.
    """
    for name, value in labels.items():
        if not isinstance(value, str):
            raise TypeError(f"label {name!r} must be a str, got {type(value).__name__}")


def _check_labels(labels: object) -> dict[str, str]:
    """Return ``labels`` as a read-only ``str -> str`` mapping, or raise naming the bad label."""
    if not isinstance(labels, dict):
        raise TypeError(f"labels must be a dict, got {type(labels).__name__}")
    for name in labels:
        check_str("label name", name)
    check_label_values(labels)
    return ReadOnlyDict(labels)


@final
class BufferOverflowPolicy(str, Enum):
    """What a buffered sink does with a new record when ``max_pending`` records are queued.

    ``DROP_OLDEST`` (the default) discards the oldest queued record to make room, so the newest
    data survives; ``DROP_NEWEST`` discards the new record; ``RAISE`` discards it and raises
    ``OverflowError`` to the caller. Every discarded record is counted in
    ``BufferedSinkStats.dropped``.
    """

    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    RAISE = "raise"


@final
@dataclass(frozen=True, slots=True)
class EventRecord:
    """One structured event: what ``EventSink.emit(event_type, **payload)`` received.

    Args:
        event_type: the event's name, e.g. ``"build_finished"``; must not be blank.
        payload: the event's fields (stored as a read-only copy).

    Raises:
        TypeError: ``event_type`` is not a string or ``payload`` is not a dict with str keys.
        ValueError: ``event_type`` is blank.
    """

    event_type: str
    payload: dict[str, Any]

    def __post_init__(self) -> None:
        check_str("event_type", self.event_type)
        if not isinstance(self.payload, dict):
            raise TypeError(f"payload must be a dict, got {type(self.payload).__name__}")
        for name in self.payload:
            check_str("payload field name", name)
        _set(self, "payload", ReadOnlyDict(self.payload))

    @classmethod
    def _trusted(cls, event_type: str, payload: dict[str, Any]) -> EventRecord:
        """Build a record from already-checked parts; ``payload`` must be a fresh dict."""
        record = object.__new__(cls)
        _set(record, "event_type", event_type)
        _set(record, "payload", payload)
        return record


@final
@dataclass(frozen=True, slots=True)
class MetricRecord:
    """One metrics operation: a counter increment or an observation, with its labels.

    Args:
        operation: ``"increment"`` or ``"observe"``.
        metric: the metric's name; must not be blank.
        value: the increment (an ``int`` >= 0) or the observed value (a finite number).
        labels: the label set, ``str -> str`` (stored as a read-only copy).

    Raises:
        TypeError: a part has the wrong type.
        ValueError: unknown operation, blank metric, negative increment or non-finite value.
    """

    operation: str
    metric: str
    value: int | float
    labels: dict[str, str]

    def __post_init__(self) -> None:
        if self.operation not in _OPERATIONS:
            raise ValueError(f"operation must be one of {_OPERATIONS!r}, got {self.operation!r}")
        check_str("metric", self.metric)
        if self.operation == INCREMENT:
            check_int("value", self.value, minimum=0)
        else:
            check_float("value", self.value, minimum=None)
        _set(self, "labels", _check_labels(self.labels))

    @classmethod
    def _trusted(
        cls, operation: str, metric: str, value: int | float, labels: dict[str, str]
    ) -> MetricRecord:
        """Build a record from already-checked parts; ``labels`` must be a fresh dict."""
        record = object.__new__(cls)
        _set(record, "operation", operation)
        _set(record, "metric", metric)
        _set(record, "value", value)
        _set(record, "labels", labels)
        return record


@final
@dataclass(frozen=True, slots=True)
class ObservationSummary:
    """The aggregate of every value observed for one metric and label set.

    Args:
        count: how many values were observed (>= 1).
        total: their sum.
        minimum: the smallest value.
        maximum: the largest value.

    Raises:
        TypeError: a field has the wrong type.
        ValueError: ``count`` < 1, a non-finite number, or ``minimum > maximum``.
    """

    count: int
    total: float
    minimum: float
    maximum: float

    def __post_init__(self) -> None:
        check_int("count", self.count, minimum=1)
        _set(self, "total", check_float("total", self.total, minimum=None))
        _set(self, "minimum", check_float("minimum", self.minimum, minimum=None))
        _set(self, "maximum", check_float("maximum", self.maximum, minimum=None))
        if self.minimum > self.maximum:
            raise ValueError(
                f"minimum must be <= maximum, got minimum={self.minimum!r} maximum={self.maximum!r}"
            )

    @property
    def average(self) -> float:
        """The average observed value, ``total / count``."""
        return self.total / self.count

    @property
    def mean(self) -> float:
        """The same as :attr:`average` (the name our 0.x releases used)."""
        return self.average


@final
@dataclass(frozen=True, slots=True)
class BufferedSinkStats:
    """A point-in-time view of a buffered sink's counters.

    Args:
        enqueued: records accepted into the queue.
        delivered: records the downstream accepted without raising.
        dropped: records discarded without delivery: refused at a full queue (``DROP_NEWEST``,
            ``RAISE``), evicted (``DROP_OLDEST``), offered after close, or still queued when
            ``close`` stopped the worker.
        failures: records whose delivery raised in the downstream.
        pending: records accepted but not yet handed over (including one being delivered).
        closed: True once ``close`` was called.
        max_pending: the queue's bound (``max_pending`` of the sink; 0 when unknown).
        peak_pending: the most records that were pending at once.
        worker_alive: False once the worker thread has ended (after ``close``) or could not
            start. A worker not started yet (no record so far; it starts with the first one)
            counts as alive: the sink can still deliver.
        shutdown_timeout_count: ``close`` calls whose budget passed before the worker ended.

    Every accepted record ends up in exactly one of ``delivered``, ``failures``, ``pending`` or
    the evicted part of ``dropped``.

    Raises:
        TypeError, ValueError: a count is not an int >= 0, or ``closed`` is not a bool.
    """

    enqueued: int
    delivered: int
    dropped: int
    failures: int
    pending: int
    closed: bool
    max_pending: int = 0
    peak_pending: int = 0
    worker_alive: bool = False
    shutdown_timeout_count: int = 0

    def __post_init__(self) -> None:
        for name in (
            "enqueued",
            "delivered",
            "dropped",
            "failures",
            "pending",
            "max_pending",
            "peak_pending",
            "shutdown_timeout_count",
        ):
            check_int(name, getattr(self, name), minimum=0)
        check_bool("closed", self.closed)
        check_bool("worker_alive", self.worker_alive)
