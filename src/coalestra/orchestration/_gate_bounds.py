"""The gate's bounds, off the plain path: waiting for capacity when none is free, bounding a call
by its timeout and the build's deadline, and the errors a bound raises when it ends a call.

Timeouts are ``min(build deadline, now + source timeout)``; which bound fired decides the error
(``SnapshotDeadlineExceededError`` vs ``SourceTimeoutError``, B-TIME-2, B-TIME-3). A plain miss
(free capacity, no timeout, no deadline) never runs this module: :mod:`._gate` calls in here
only when a bound applies or a call went wrong.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeAlias, TypeVar, final

from .._compat import TIMEOUT_ERRORS, CancelWatch, timeout, watch_cancellation
from ..concurrency import CapacityController
from ..concurrency._controller import CapacityLease
from ..core import (
    Clock,
    DiagnosticsCollector,
    ResourceKey,
    ResourceNotFound,
    SnapshotDeadlineExceededError,
    SourceQueueTimeoutError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from ..observability._instrumentation import Instrumentation
from ..resilience import CircuitBreaker, CircuitIdentity
from ._counters import EngineCounters
from ._flights import FlightWindow
from ._sources import RegisteredSource, SourceKind

T = TypeVar("T")

Invoke = Callable[[tuple[ResourceKey, ...]], Awaitable[T]]
"""A source call for the keys given."""


Circuits: TypeAlias = dict[CircuitIdentity, Sequence[ResourceKey]]
"""The circuits an attempt entered, each with the keys of the call behind it."""

# The build's own limits ran out: the source was not (or not yet) at fault.
NOT_THE_SOURCES_FAULT = (SnapshotDeadlineExceededError, SourceQueueTimeoutError)


async def retrying(
    source: RegisteredSource,
    window: FlightWindow,
    diag: DiagnosticsCollector,
    attempts: int,
    error: Exception,
) -> bool:
    """After attempt number ``attempts`` failed with ``error``: back off and return True when
    another attempt is due and can finish before the deadline, else False."""
    retry = source.resilience.retry
    if (
        attempts >= retry.max_attempts
        or isinstance(error, ResourceNotFound)  # an answer: asking again cannot help
        or not retry.is_retryable(error)
    ):
        return False
    delay = retry.delay_for_attempt(attempts)
    remaining = window.remaining()
    if remaining is not None and delay >= remaining:
        return False  # the retry could not finish before the deadline
    diag.retries += 1
    await asyncio.sleep(delay)
    return True


def spurious_cancel(source: RegisteredSource, call: CancelWatch[Any]) -> NoReturn:
    """Re-raise a ``CancelledError`` that came out of a source call. If nobody cancelled us, the
    source raised it on its own: that is its failure for these keys, not a reason to stop the
    whole resolution (a timeout's cancellation does count as ours, and becomes its error)."""
    if call.requested():
        raise  # called from an except block: this re-raises the CancelledError
    raise spurious(source)


def spurious(source: RegisteredSource) -> SourceUnavailableError:
    """The failure of a source call that raised ``CancelledError`` with nobody cancelling it."""
    return SourceUnavailableError(f"{source.name} raised CancelledError without being cancelled")


WATCH_CALLS = sys.version_info < (3, 11)
"""Whether a source call must be wrapped by ``watch_cancellation`` for :func:`requested` to tell
who cancelled it: on 3.10 only (3.11+ reads ``Task.cancelling()``; no wrapper per call)."""


def requested(call: Awaitable[Any] | None) -> bool:
    """After a source ``call`` raised ``CancelledError``: True if somebody cancelled the awaiting
    task, False if the call raised it on its own (on 3.10, ``call`` must be wrapped, see
    :data:`WATCH_CALLS`; a call that raised before it was awaited was not cancelled)."""
    if WATCH_CALLS:
        return isinstance(call, CancelWatch) and call.requested()
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0  # type: ignore[attr-defined,unused-ignore]


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

    __slots__ = ("_breaker", "_capacity", "_clock", "_counters", "_report")

    def __init__(
        self,
        *,
        capacity: CapacityController,
        breaker: CircuitBreaker,
        clock: Clock,
        counters: EngineCounters,
        report: Instrumentation,
    ) -> None:
        self._breaker = breaker
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

    # -- calls that went wrong: what their circuits record --------------------------------------

    def never_called(
        self,
        source: RegisteredSource,
        circuits: Circuits,
        error: BaseException,
        window: FlightWindow,
        called: tuple[ResourceKey, ...],
    ) -> None:
        """No capacity (or no time) for the call: it was never made."""
        self._release(source, circuits, error=error, window=window)
        if source.kind is SourceKind.BATCH and self._report.metrics_on:
            self._report.batch_call(source.name, batch_status(error), len(called))

    def call_failed(
        self,
        source: RegisteredSource,
        circuits: Circuits,
        error: BaseException,
        window: FlightWindow,
    ) -> None:
        """The call raised: count a timeout, record the failure on its circuits: a failure,
        unless it is not the source's fault (see :meth:`_release`). A not-found answer shows
        the source is up: a success."""
        if isinstance(error, TIMEOUT_ERRORS) and not isinstance(error, NOT_THE_SOURCES_FAULT):
            self._counters.source_timeouts += 1  # ours or the source's own (B-TIME-4)
        if isinstance(error, ResourceNotFound):
            record = self._breaker.succeed
        elif isinstance(error, Exception) and not isinstance(error, NOT_THE_SOURCES_FAULT):
            record = self._breaker.fail
        else:
            self._release(source, circuits, error=error, window=window)
            return
        policy = source.resilience.circuit
        for identity in circuits:
            record(identity, policy)

    def _release(
        self,
        source: RegisteredSource,
        circuits: Circuits,
        *,
        error: BaseException,
        window: FlightWindow,
    ) -> None:
        """An attempt ended for reasons that are not the source's: a cancellation abandons
        the call (a half-open probe re-opens its circuit); our own deadline or capacity wait
        skips it (the probe slot is only given back). Work cancelled because its deadline
        passed (its last waiter gave up at that moment) counts as the deadline."""
        breaker = self._breaker
        if isinstance(error, Exception) or window.expired():
            for identity in circuits:
                breaker.skip(identity)
        else:
            policy = source.resilience.circuit
            for identity in circuits:
                breaker.abandon(identity, policy)
