"""The one gate every source call passes through.

Per attempt: circuit -> capacity (per-source slot, then global) -> timeout -> call. The
circuit comes first so that an open circuit fails fast instead of queueing for capacity (a
half-open probe slot taken here is given back if the capacity wait fails). Around the
attempts, a deadline-aware retry loop: a retry is started only if its backoff ends before the
build's deadline, and no capacity slot is held while backing off, so waiting retries never
starve other calls. Timeouts are ``min(build deadline, now + source timeout)``; which bound fired
decides the error (``SnapshotDeadlineExceededError`` vs ``SourceTimeoutError``). What an
attempt records on its circuits is :mod:`._circuits`; calls shared by concurrent builds are
gathered in :mod:`._batching`, then pass here like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar, final

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
from ..observability._tracing import NullTracer, Tracer
from ..resilience import CircuitBreaker
from ._circuits import NOT_THE_SOURCES_FAULT, CallCircuits
from ._counters import EngineCounters
from ._flights import FlightWindow
from ._sources import RegisteredSource, SourceKind
from ._transport import TransportGuard

T = TypeVar("T")

Invoke = Callable[[tuple[ResourceKey, ...]], Awaitable[T]]
Judge = Callable[[tuple[ResourceKey, ...], T], Collection[ResourceKey]]
"""Names the keys of a call that got a valid, fresh payload: their circuits record a success."""


@final
@dataclass(slots=True)
class GateResult(Generic[T]):
    """What one gated call produced: a value or an error, the keys actually called, the keys
    refused by open circuits, attempts made and the last attempt's latency."""

    value: T | None = None
    error: Exception | None = None
    called: tuple[ResourceKey, ...] = ()
    blocked: dict[ResourceKey, Exception] = field(default_factory=dict)
    attempts: int = 0
    latency_ms: float = 0.0


def _spurious_cancel(source: RegisteredSource, call: CancelWatch[Any]) -> NoReturn:
    """Re-raise a ``CancelledError`` that came out of a source call. If nobody cancelled us, the
    source raised it on its own: that is its failure for these keys, not a reason to stop the
    whole resolution (a timeout's cancellation does count as ours, and becomes its error)."""
    if call.requested():
        raise  # called from an except block: this re-raises the CancelledError
    raise SourceUnavailableError(f"{source.name} raised CancelledError without being cancelled")


def _batch_status(error: BaseException) -> str:
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


class _AllBlocked(Exception):
    """Internal: every key of the call is behind an open circuit."""


@final
class SourceGate:
    """Capacity, circuit, retry and timeout for source calls, in one place."""

    __slots__ = (
        "_capacity",
        "_circuits",
        "_clock",
        "_counters",
        "_report",
        "_traced",
        "_tracer",
        "_transport",
    )

    def __init__(
        self,
        *,
        capacity: CapacityController,
        breaker: CircuitBreaker,
        clock: Clock,
        counters: EngineCounters,
        report: Instrumentation,
        tracer: Tracer,
        transport: TransportGuard | None = None,
    ) -> None:
        self._capacity = capacity
        self._circuits = CallCircuits(breaker)
        self._clock = clock
        self._counters = counters
        self._report = report
        self._tracer = tracer
        self._traced = not isinstance(tracer, NullTracer)  # skip the no-op span on hot paths
        # Declared transport timeouts: only protected sources (transport_timeout set) use it.
        self._transport = transport or TransportGuard(clock=clock, counters=counters, report=report)

    async def call(
        self,
        source: RegisteredSource,
        keys: tuple[ResourceKey, ...],
        window: FlightWindow,
        diag: DiagnosticsCollector,
        invoke: Invoke[T],
        judge: Judge[T] | None = None,
    ) -> GateResult[T]:
        """Call ``invoke`` with the admitted subset of ``keys`` until it succeeds or gives up.

        ``judge`` names the keys whose result counts as a success for their circuits (a valid,
        fresh payload); without it every called key does.
        Never raises for source failures (they are in ``GateResult.error``); cancellation
        propagates after every slot and probe is given back.
        """
        result: GateResult[T] = GateResult()
        retry = source.resilience.retry
        while True:
            result.attempts += 1
            previous = result.error
            try:
                await self._attempt(source, keys, window, diag, invoke, judge, result)
                return result
            except _AllBlocked:
                if previous is None:
                    result.error = next(iter(result.blocked.values()))
                    return result
                # Our own last failure opened the circuit: report that failure, not the refusal.
                for key in keys:
                    result.blocked.pop(key, None)
                result.error, result.attempts = previous, result.attempts - 1
                return result
            except Exception as error:
                result.error = error
                if (
                    result.attempts >= retry.max_attempts
                    or isinstance(error, ResourceNotFound)  # an answer: asking again cannot help
                    or not retry.is_retryable(error)
                ):
                    return result
                delay = retry.delay_for_attempt(result.attempts)
                remaining = window.remaining()
                if remaining is not None and delay >= remaining:
                    return result  # the retry could not finish before the deadline
                diag.retries += 1
                await asyncio.sleep(delay)
                keys = tuple(key for key in keys if key not in result.blocked)

    async def _attempt(
        self,
        source: RegisteredSource,
        keys: tuple[ResourceKey, ...],
        window: FlightWindow,
        diag: DiagnosticsCollector,
        invoke: Invoke[T],
        judge: Judge[T] | None,
        result: GateResult[T],
    ) -> None:
        # The circuit first: an open circuit fails fast instead of queueing for capacity.
        circuits = self._circuits.admit(source, keys, result.blocked)
        if len(circuits) == 1 and not result.blocked:
            called = keys  # the common case: one circuit admitted every key
        else:
            called = tuple(key for group in circuits.values() for key in group)
        if not called:
            raise _AllBlocked
        try:
            lease = self._take(source, window, called)
            if lease is None:
                lease = await self._wait_for_capacity(source, window, called)
            if source.transport_timeout is not None:  # never start a call it cannot bound
                self._transport.preflight(source, window, called, lease)
        except BaseException as error:
            self._circuits.release(source, circuits, error, window)  # the call was never made
            if source.kind is SourceKind.BATCH and self._report.metrics_on:
                self._report.batch_call(source.name, _batch_status(error), len(called))
            raise
        try:
            started = self._clock.monotonic()
            outcome: BaseException | None = None
            try:
                if self._traced:
                    with self._tracer.source_span(source.name, len(called), result.attempts):
                        value = await self._invoke(source, window, invoke, called)
                elif source.timeout_seconds is None and window.ctx.deadline_monotonic is None:
                    # Nothing bounds the call (the common case): awaited here, one frame less.
                    call = watch_cancellation(invoke(called))
                    try:
                        value = await call
                    except asyncio.CancelledError:
                        _spurious_cancel(source, call)
                else:
                    value = await self._invoke(source, window, invoke, called)
            except BaseException as error:
                outcome = error
                if isinstance(error, TIMEOUT_ERRORS) and not isinstance(
                    error, NOT_THE_SOURCES_FAULT
                ):
                    self._counters.source_timeouts += 1  # ours or the source's own (B-TIME-4)
                self._circuits.failed(source, circuits, error, window)
                raise
            finally:
                elapsed = self._clock.monotonic() - started
                latency_ms = elapsed * 1000.0
                if source.transport_timeout is not None:
                    self._transport.observe(source, called, elapsed, outcome)
                self._count_call(source, diag, latency_ms)
                if self._report.metrics_on:
                    self._report_call(source, called, outcome, latency_ms)
            good = judge(called, value) if judge is not None else called
            self._circuits.succeeded(source, circuits, good)
            result.value, result.called, result.latency_ms = value, called, latency_ms
            result.error = None
        finally:
            lease.release()

    def _take(
        self, source: RegisteredSource, window: FlightWindow, keys: tuple[ResourceKey, ...]
    ) -> CapacityLease | None:
        """Free capacity, taken at once (no wait to time or bound), or ``None``: then
        :meth:`_wait_for_capacity`. A deadline already passed ends the call here (B-TIME-2)."""
        own = source.queue_timeout_seconds
        if own is not None or window.ctx.deadline_monotonic is not None:
            budget = self._budget(own, window)
            if budget is not None and budget <= 0.0:
                raise self._deadline(BEFORE_CAPACITY, source, keys)
        return self._capacity.try_acquire(source.name)

    async def _wait_for_capacity(
        self, source: RegisteredSource, window: FlightWindow, keys: tuple[ResourceKey, ...]
    ) -> CapacityLease:
        """Wait for capacity, for at most the queue timeout capped by the deadline (B-TIME-2)."""
        own = source.queue_timeout_seconds
        budget = self._budget(own, window)
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
                raise self._deadline(WAITING_FOR_CAPACITY, source, keys) from None
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

    def _deadline(
        self, phase: str, source: RegisteredSource, keys: tuple[ResourceKey, ...]
    ) -> SnapshotDeadlineExceededError:
        self._counters.deadline_exceeded += 1  # once per call (B-TIME-4)
        return deadline_exceeded(phase, source, keys)

    @staticmethod
    def _budget(own: float | None, window: FlightWindow) -> float | None:
        """Seconds a wait may take: the tighter of its own limit and the deadline."""
        remaining = window.remaining()
        if own is None:
            return remaining
        return own if remaining is None else min(own, remaining)

    async def _invoke(
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
            budget = self._budget(own, window)
        if budget is None:
            call = watch_cancellation(invoke(keys))
            try:
                return await call
            except asyncio.CancelledError:
                _spurious_cancel(source, call)
        if budget <= 0.0:
            raise self._deadline(BEFORE_CALLING, source, keys)
        scope = timeout(budget)
        try:
            async with scope:
                with window.watch(scope, budget, own):
                    call = watch_cancellation(invoke(keys))
                    try:
                        return await call
                    except asyncio.CancelledError:
                        _spurious_cancel(source, call)
        except TimeoutError:
            if not scope.expired():
                raise  # the source's own TimeoutError: an ordinary, retryable failure
            if window.expired() or own is None:
                raise self._deadline(CALLING, source, keys) from None
            raise SourceTimeoutError(
                f"source {source.name} timed out after {own:.3f}s{_where(source, keys)}"
            ) from None

    def _report_call(
        self,
        source: RegisteredSource,
        called: tuple[ResourceKey, ...],
        outcome: BaseException | None,
        latency_ms: float,
    ) -> None:
        self._report.fetch_latency(source.name, latency_ms)
        if source.kind is SourceKind.BATCH:
            status = "success" if outcome is None else _batch_status(outcome)
            self._report.batch_call(source.name, status, len(called))

    @staticmethod
    def _count_call(
        source: RegisteredSource, diag: DiagnosticsCollector, latency_ms: float
    ) -> None:
        diag.source_calls += 1
        if source.kind is SourceKind.BATCH:
            diag.batch_calls += 1
        elif source.kind is SourceKind.DERIVED:
            diag.derived_calls += 1
        diag.record_source_call(source.name, latency_ms)
