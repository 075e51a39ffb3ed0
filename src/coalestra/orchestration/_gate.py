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
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Generic, TypeAlias, TypeVar, final

from .._compat import watch_cancellation
from ..concurrency import CapacityController
from ..concurrency._controller import CapacityLease
from ..concurrency._limiter import CapacityLimiter
from ..core import (
    CircuitOpenError,
    Clock,
    DiagnosticsCollector,
    ResourceKey,
)
from ..observability._instrumentation import Instrumentation
from ..observability._tracing import NullTracer, Tracer
from ..resilience import CircuitBreaker, CircuitIdentity, CircuitScope
from ._counters import EngineCounters
from ._flights import FlightWindow
from ._gate_bounds import (
    BEFORE_CAPACITY,
    Circuits,
    GateBounds,
    requested,
    retrying,
    spurious,
    spurious_cancel,
)
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


Plain: TypeAlias = tuple[CapacityLimiter, CircuitIdentity]
"""What a plain call needs (:meth:`SourceGate.plain`): the global slot it takes, its circuit."""


@final
class CallCircuits:
    """The circuit side of the gate: admission before an attempt, the record of a call that
    returned (:class:`GateBounds` records the calls that went wrong)."""

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
            identity = self.source_wide(source)
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

    def source_wide(self, source: RegisteredSource) -> CircuitIdentity:
        """``source``'s SOURCE-scope circuit (made once per source)."""
        identity = self._by_source.get(source.name)
        if identity is None:
            identity = self._breaker.identity_for(source.name, scope=CircuitScope.SOURCE)
            self._by_source[source.name] = identity
        return identity

    def succeeded(
        self, source: RegisteredSource, circuits: Circuits, good: Collection[ResourceKey]
    ) -> None:
        """A call returned: a circuit group succeeds if and only if one of its keys got a
        valid, fresh payload; omitted, stale and rejected keys count against it (B-SRC-5).
        A success on a circuit the breaker does not track changes nothing: skipped."""
        for identity, members in circuits.items():
            self.passed(source, identity, good is members or any(key in good for key in members))

    def passed(self, source: RegisteredSource, identity: CircuitIdentity, good: bool) -> None:
        """A call returned: a success on ``identity`` if ``good`` (see :meth:`succeeded`)."""
        breaker = self._breaker
        if good:
            if breaker.tracks(identity):
                breaker.succeed(identity, source.resilience.circuit)
        else:
            breaker.fail(identity, source.resilience.circuit)


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
        "tracks",
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
        self._bounds = GateBounds(
            capacity=capacity, breaker=breaker, clock=clock, counters=counters, report=report
        )
        self._circuits = CallCircuits(breaker)
        # Whether a circuit has a record: a plain call checks its own before it is made.
        self.tracks = breaker.tracks
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
        failed: Exception | None = None,
    ) -> GateResult[T]:
        """Call ``invoke`` with the admitted subset of ``keys`` until it succeeds or gives up.

        ``judge`` names the keys whose result counts as a success for their circuits (a valid,
        fresh payload); without it every called key does. ``failed``: the first attempt was a
        plain call (:meth:`plain`) that failed so: go on from there (a retry, if due).
        Never raises for source failures (they are in ``GateResult.error``); cancellation
        propagates after every slot and probe is given back.
        """
        result: GateResult[T] = GateResult()
        if failed is not None:
            result.error, result.attempts = failed, 1
            if not await retrying(source, window, diag, 1, failed):
                return result
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
                if not await retrying(source, window, diag, result.attempts, error):
                    return result
                keys = tuple(key for key in keys if key not in result.blocked)

    # -- plain calls: one attempt with nothing to bound, in the caller --------------------------

    def plain(self, source: RegisteredSource, window: FlightWindow) -> Plain | None:
        """How calls of ``source`` in ``window`` may skip the attempt machinery: with no
        timeout, deadline, tracer or transport bound, a source-wide circuit and no capacity
        limit of the source's own, a call is made right in the caller, between
        :meth:`plain_passed` or :meth:`plain_failed`, once the caller found its circuit
        untracked (:meth:`tracks`) and took a free global slot. ``None``: every call of the
        level goes through :meth:`call` (as does one whose circuit is tracked or that finds
        no slot free). A window's deadline never appears later (a joiner only extends it)."""
        if (
            self._traced
            or source.timeout_seconds is not None
            or source.transport_timeout is not None
            or window.ctx.deadline_monotonic is not None
            or source.resilience.circuit.scope is not CircuitScope.SOURCE
        ):
            return None
        slot = self._capacity.shared_only(source.name)
        return None if slot is None else (slot, self._circuits.source_wide(source))

    def plain_passed(
        self,
        source: RegisteredSource,
        plain: Plain,
        diag: DiagnosticsCollector,
        started: float,
        called: tuple[ResourceKey, ...],
        good: bool,
    ) -> float:
        """A plain call returned: counted, ``good`` (a valid, fresh payload) recorded on its
        circuit, its slot given back, as :meth:`_attempt` does; its latency (ms)."""
        latency_ms = (self._clock.monotonic() - started) * 1000.0
        diag.source_calls += 1  # _count_call for a single-key source
        diag.record_source_call(source.name, latency_ms)
        if self._report.metrics_on:
            self._bounds.report_call(source, called, None, latency_ms)
        slot, identity = plain
        try:
            if not good or self.tracks(identity):  # else nothing to record (see succeeded)
                self._circuits.passed(source, identity, good)
        finally:
            slot.release()
        return latency_ms

    def plain_failed(
        self,
        source: RegisteredSource,
        plain: Plain,
        window: FlightWindow,
        diag: DiagnosticsCollector,
        started: float,
        called: tuple[ResourceKey, ...],
        error: BaseException,
        call: Awaitable[Any] | None,
    ) -> BaseException:
        """A plain ``call`` raised ``error``: recorded as :meth:`_attempt` records it; the
        error the attempt ends with (a ``CancelledError`` nobody asked for is the source's
        failure, see ``spurious_cancel``). Then :meth:`call` goes on (``failed=``)."""
        if isinstance(error, asyncio.CancelledError) and not requested(call):
            failure = spurious(source)
            failure.__context__ = error
            error = failure
        slot, identity = plain
        try:
            self._bounds.call_failed(source, {identity: called}, error, window)
        finally:
            latency_ms = (self._clock.monotonic() - started) * 1000.0
            self._count_call(source, diag, latency_ms)
            if self._report.metrics_on:
                self._bounds.report_call(source, called, error, latency_ms)
            slot.release()
        return error

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
            self._bounds.never_called(source, circuits, error, window, called)
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
                self._bounds.call_failed(source, circuits, error, window)
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
