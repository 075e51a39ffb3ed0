"""The one gate every source call passes through: circuit, capacity, timeout, call, retries.

Per attempt: circuit -> capacity (per-source slot, then global) -> timeout -> call. The
circuit comes first so that an open circuit fails fast instead of queueing for capacity (a
half-open probe slot taken here is given back if the capacity wait fails). Around the
attempts, a deadline-aware retry loop: a retry is started only if its backoff ends before the
build's deadline, and no capacity slot is held while backing off, so waiting retries never
starve other calls. The waits and bounds a plain call does not need (a capacity wait, a
timeout, the deadline's errors) are :mod:`._gate_bounds`; calls shared by concurrent builds
are gathered in :mod:`._batching`, then pass here like any other.

What an attempt records on its circuits (B-SRC-5, B-RES-3, B-RES-5, B-TIME-4): before it, each
distinct circuit of its keys is entered once (keys behind an open one are kept out of the
call); after it, each circuit entered records the attempt's outcome: a success, a failure, or,
when the attempt ended for reasons that are not the source's, an abandoned or skipped probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeAlias, TypeVar, final

from .._compat import TIMEOUT_ERRORS, watch_cancellation
from ..concurrency import CapacityController
from ..concurrency._controller import CapacityLease
from ..core import (
    CircuitOpenError,
    Clock,
    DiagnosticsCollector,
    ResourceKey,
    ResourceNotFound,
    SnapshotDeadlineExceededError,
    SourceQueueTimeoutError,
)
from ..observability._instrumentation import Instrumentation
from ..observability._tracing import NullTracer, Tracer
from ..resilience import CircuitBreaker, CircuitIdentity, CircuitScope
from ._counters import EngineCounters
from ._flights import FlightWindow
from ._gate_bounds import BEFORE_CAPACITY, GateBounds, batch_status, spurious_cancel
from ._gate_bounds import Invoke as Invoke  # the gate's call type, declared with its bounds
from ._sources import RegisteredSource, SourceKind
from ._transport import TransportGuard

T = TypeVar("T")

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


Circuits: TypeAlias = dict[CircuitIdentity, Sequence[ResourceKey]]
"""The circuits an attempt entered, each with the keys of the call behind it."""

# The build's own limits ran out: the source was not (or not yet) at fault.
NOT_THE_SOURCES_FAULT = (SnapshotDeadlineExceededError, SourceQueueTimeoutError)


@final
class CallCircuits:
    """The circuit side of the gate: admission before an attempt, its record after."""

    __slots__ = ("_breaker", "_by_source")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._by_source: dict[str, CircuitIdentity] = {}  # each source's SOURCE-scope circuit

    def admit(
        self,
        source: RegisteredSource,
        keys: tuple[ResourceKey, ...],
        blocked: dict[ResourceKey, Exception],
    ) -> Circuits:
        """Pass each distinct circuit of ``keys`` once; keys behind open circuits go to
        ``blocked``. A circuit the breaker does not track (closed, no failures) is passed
        without asking it."""
        policy = source.resilience.circuit
        breaker = self._breaker
        if policy.scope is CircuitScope.SOURCE:
            identity = self._by_source.get(source.name)
            if identity is None:
                identity = breaker.identity_for(source.name, scope=CircuitScope.SOURCE)
                self._by_source[source.name] = identity
            if breaker.tracks(identity):
                try:
                    breaker.enter(source.name, None, policy)
                except CircuitOpenError as error:
                    blocked.update(dict.fromkeys(keys, error))
                    return {}
            return {identity: keys}
        groups: dict[CircuitIdentity, list[ResourceKey]] = {}
        for key in keys:
            identity = breaker.identity_for(source.name, key=key, scope=policy.scope)
            groups.setdefault(identity, []).append(key)
        admitted: Circuits = {}
        for members in groups.values():
            try:
                admitted[breaker.enter(source.name, members[0], policy)] = members
            except CircuitOpenError as error:
                blocked.update(dict.fromkeys(members, error))
        return admitted

    def failed(
        self,
        source: RegisteredSource,
        circuits: Circuits,
        error: BaseException,
        window: FlightWindow,
    ) -> None:
        """Record a failed attempt: a failure, unless it is not the source's fault (see
        :meth:`release`). A not-found answer shows the source is up: a success."""
        if isinstance(error, ResourceNotFound):
            policy = source.resilience.circuit
            for identity in circuits:
                self._breaker.succeed(identity, policy)
        elif isinstance(error, Exception) and not isinstance(error, NOT_THE_SOURCES_FAULT):
            policy = source.resilience.circuit
            for identity in circuits:
                self._breaker.fail(identity, policy)
        else:
            self.release(source, circuits, error, window)

    def release(
        self,
        source: RegisteredSource,
        circuits: Circuits,
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

    def succeeded(
        self, source: RegisteredSource, circuits: Circuits, good: Collection[ResourceKey]
    ) -> None:
        """A call returned: a circuit group succeeds if and only if one of its keys got a
        valid, fresh payload; omitted, stale and rejected keys count against it (B-SRC-5).
        A success on a circuit the breaker does not track changes nothing: skipped."""
        policy = source.resilience.circuit
        breaker = self._breaker
        for identity, members in circuits.items():
            if good is members or any(key in good for key in members):
                if breaker.tracks(identity):
                    breaker.succeed(identity, policy)
            else:
                breaker.fail(identity, policy)


class _AllBlocked(Exception):
    """Internal: every key of the call is behind an open circuit."""


@final
class SourceGate:
    """Capacity, circuit, retry and timeout for source calls, in one place."""

    __slots__ = (
        "_bounds",
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
        self._bounds = GateBounds(capacity=capacity, clock=clock, counters=counters, report=report)
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
                lease = await self._bounds.wait_for_capacity(source, window, called)
            if source.transport_timeout is not None:  # never start a call it cannot bound
                self._transport.preflight(source, window, called, lease)
        except BaseException as error:
            self._never_called(source, circuits, error, window, called)
            raise
        try:
            started = self._clock.monotonic()
            outcome: BaseException | None = None
            try:
                if self._traced:
                    with self._tracer.source_span(source.name, len(called), result.attempts):
                        value = await self._bounds.invoke(source, window, invoke, called)
                elif source.timeout_seconds is None and window.ctx.deadline_monotonic is None:
                    # Nothing bounds the call (the common case): awaited here, one frame less.
                    call = watch_cancellation(invoke(called))
                    try:
                        value = await call
                    except asyncio.CancelledError:
                        spurious_cancel(source, call)
                else:
                    value = await self._bounds.invoke(source, window, invoke, called)
            except BaseException as error:
                outcome = error
                self._call_failed(source, circuits, error, window)
                raise
            finally:
                elapsed = self._clock.monotonic() - started
                latency_ms = elapsed * 1000.0
                if source.transport_timeout is not None:
                    self._transport.observe(source, called, elapsed, outcome)
                self._count_call(source, diag, latency_ms)
                if self._report.metrics_on:
                    self._bounds.report_call(source, called, outcome, latency_ms)
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
        :meth:`GateBounds.wait_for_capacity`. A deadline already passed ends the call here
        (B-TIME-2)."""
        own = source.queue_timeout_seconds
        if own is not None or window.ctx.deadline_monotonic is not None:
            budget = self._bounds.budget(own, window)
            if budget is not None and budget <= 0.0:
                raise self._bounds.deadline(BEFORE_CAPACITY, source, keys)
        return self._capacity.try_acquire(source.name)

    def _never_called(
        self,
        source: RegisteredSource,
        circuits: Circuits,
        error: BaseException,
        window: FlightWindow,
        called: tuple[ResourceKey, ...],
    ) -> None:
        """No capacity (or no time) for the call: it was never made."""
        self._circuits.release(source, circuits, error, window)
        if source.kind is SourceKind.BATCH and self._report.metrics_on:
            self._report.batch_call(source.name, batch_status(error), len(called))

    def _call_failed(
        self,
        source: RegisteredSource,
        circuits: Circuits,
        error: BaseException,
        window: FlightWindow,
    ) -> None:
        """The call raised: count a timeout, record the failure on its circuits."""
        if isinstance(error, TIMEOUT_ERRORS) and not isinstance(error, NOT_THE_SOURCES_FAULT):
            self._counters.source_timeouts += 1  # ours or the source's own (B-TIME-4)
        self._circuits.failed(source, circuits, error, window)

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
