"""The gate's bounds, off the plain path: waiting for capacity when none is free, bounding a call
by its timeout and the build's deadline, and the errors a bound raises when it ends a call.

Timeouts are ``min(build deadline, now + source timeout)``; which bound fired decides the error
(``SnapshotDeadlineExceededError`` vs ``SourceTimeoutError``, B-TIME-2, B-TIME-3). A plain miss
(free capacity, no timeout, no deadline) never runs this module: :mod:`._gate` calls in here
only when a bound applies or a call went wrong.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar, final

from .._compat import CancelWatch, timeout, watch_cancellation
from ..concurrency import CapacityController
from ..concurrency._controller import CapacityLease
from ..core import (
    Clock,
    ResourceKey,
    SnapshotDeadlineExceededError,
    SourceQueueTimeoutError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from ..observability._instrumentation import Instrumentation
from ._counters import EngineCounters
from ._flights import FlightWindow
from ._sources import RegisteredSource, SourceKind

T = TypeVar("T")

Invoke = Callable[[tuple[ResourceKey, ...]], Awaitable[T]]
"""A source call for the keys given."""


def spurious_cancel(source: RegisteredSource, call: CancelWatch[Any]) -> NoReturn:
    """Re-raise a ``CancelledError`` that came out of a source call. If nobody cancelled us, the
    source raised it on its own: that is its failure for these keys, not a reason to stop the
    whole resolution (a timeout's cancellation does count as ours, and becomes its error)."""
    if call.requested():
        raise  # called from an except block: this re-raises the CancelledError
    raise SourceUnavailableError(f"{source.name} raised CancelledError without being cancelled")


def batch_status(error: BaseException) -> str:
    """The ``source_batch_call_total`` status of a failed batch call."""
    if isinstance(error, SourceQueueTimeoutError):
        return "queue_timeout"
    if isinstance(error, SnapshotDeadlineExceededError):
        return "deadline_exceeded"
    return "failure"


def _where(source: RegisteredSource, keys: tuple[ResourceKey, ...]) -> str:
    """The key a timeout message names; batch calls name none (B-TIME-3)."""
    if source.kind is SourceKind.BATCH or len(keys) != 1:
        return ""
    return f" while resolving {keys[0]}"


# Where a deadline ended a call (B-TIME-3's phrases, each followed by the source's name).
BEFORE_CAPACITY = "before waiting for capacity for source"
WAITING_FOR_CAPACITY = "while waiting for capacity for source"
BEFORE_CALLING = "before calling the source for source"
CALLING = "while calling source"


def deadline_exceeded(
    phase: str, source: RegisteredSource, keys: tuple[ResourceKey, ...]
) -> SnapshotDeadlineExceededError:
    """The error of a call the build's deadline ended at ``phase`` (B-TIME-3)."""
    return SnapshotDeadlineExceededError(
        f"snapshot deadline exceeded {phase} {source.name}{_where(source, keys)}"
    )


@final
class GateBounds:
    """The waits and bounds of the gate's calls (see the module docstring)."""

    __slots__ = ("_capacity", "_clock", "_counters", "_report")

    def __init__(
        self,
        *,
        capacity: CapacityController,
        clock: Clock,
        counters: EngineCounters,
        report: Instrumentation,
    ) -> None:
        self._capacity = capacity
        self._clock = clock
        self._counters = counters
        self._report = report

    async def wait_for_capacity(
        self, source: RegisteredSource, window: FlightWindow, keys: tuple[ResourceKey, ...]
    ) -> CapacityLease:
        """Wait for capacity, for at most the queue timeout capped by the deadline (B-TIME-2)."""
        own = source.queue_timeout_seconds
        budget = self.budget(own, window)
        waiting_from = self._clock.monotonic()
        try:
            if budget is None:
                lease = await self._capacity.acquire(source.name)
            else:
                async with timeout(budget) as scope:
                    with window.watch(scope, budget, own):
                        lease = await self._capacity.acquire(source.name)
        except TimeoutError:
            if window.expired() or own is None:
                self._report.capacity_timeout(source.name, "snapshot_deadline")
                raise self.deadline(WAITING_FOR_CAPACITY, source, keys) from None
            self._counters.queue_timeouts += 1
            self._report.capacity_timeout(source.name, "queue_timeout")
            raise SourceQueueTimeoutError(
                f"source {source.name} waited more than {own:.3f}s for capacity"
                f"{_where(source, keys)}"
            ) from None
        waited = self._clock.monotonic() - waiting_from
        if waited > 0.0:
            self._report.capacity_wait(source.name, waited * 1000.0)
        return lease

    def deadline(
        self, phase: str, source: RegisteredSource, keys: tuple[ResourceKey, ...]
    ) -> SnapshotDeadlineExceededError:
        self._counters.deadline_exceeded += 1  # once per call (B-TIME-4)
        return deadline_exceeded(phase, source, keys)

    @staticmethod
    def budget(own: float | None, window: FlightWindow) -> float | None:
        """Seconds a wait may take: the tighter of its own limit and the deadline."""
        remaining = window.remaining()
        if own is None:
            return remaining
        return own if remaining is None else min(own, remaining)

    async def invoke(
        self,
        source: RegisteredSource,
        window: FlightWindow,
        invoke: Invoke[T],
        keys: tuple[ResourceKey, ...],
    ) -> T:
        """Make the call, for at most ``timeout_seconds`` (counted from now, with capacity
        held) capped by the deadline (B-TIME-2)."""
        own = source.timeout_seconds
        budget = None
        if own is not None or window.ctx.deadline_monotonic is not None:
            budget = self.budget(own, window)
        if budget is None:
            call = watch_cancellation(invoke(keys))
            try:
                return await call
            except asyncio.CancelledError:
                spurious_cancel(source, call)
        if budget <= 0.0:
            raise self.deadline(BEFORE_CALLING, source, keys)
        scope = timeout(budget)
        try:
            async with scope:
                with window.watch(scope, budget, own):
                    call = watch_cancellation(invoke(keys))
                    try:
                        return await call
                    except asyncio.CancelledError:
                        spurious_cancel(source, call)
        except TimeoutError:
            if not scope.expired():
                raise  # the source's own TimeoutError: an ordinary, retryable failure
            if window.expired() or own is None:
                raise self.deadline(CALLING, source, keys) from None
            raise SourceTimeoutError(
                f"source {source.name} timed out after {own:.3f}s{_where(source, keys)}"
            ) from None

    def report_call(
        self,
        source: RegisteredSource,
        called: tuple[ResourceKey, ...],
        outcome: BaseException | None,
        latency_ms: float,
    ) -> None:
        self._report.fetch_latency(source.name, latency_ms)
        if source.kind is SourceKind.BATCH:
            status = "success" if outcome is None else batch_status(outcome)
            self._report.batch_call(source.name, status, len(called))
