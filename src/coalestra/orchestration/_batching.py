"""Batching across concurrent builds: keys that different builds send to the same batch source
at about the same time share its calls (opt-in ``batch_window_seconds``).

Without a window (the default) each build's chunk of keys is one gated call, as before. With
one, a chunk joins the source's open *window* instead, and the window's life is::

    gathering --(closes)--> calls dispatched --> each call delivers to the builds it serves

- **gathering**: the first chunk opens the window; chunks of other builds join it. It closes
  after one loop turn (``0.0``) or the window's seconds, earlier when a joining build would
  otherwise spend more than half of its remaining time waiting, and at once when it holds
  ``max_batch_size`` keys. A build that leaves meanwhile (cancelled) simply drops out.
- **dispatched**: whole chunks are packed, in arrival order, into calls of at most
  ``max_batch_size`` distinct keys (a key two chunks share is asked once). Each call runs in a
  task of its own through the gate, exactly as a build's call does (one capacity slot per call,
  retries and circuits per call), under the latest deadline of its builds; a build given more
  time while it waits gives the call that time too. The source's context is the first build's,
  with that deadline; only builds with equal metadata share a call, so a source that reads
  ``context.metadata`` (a tenant, say) never serves one build's keys under another's.
- **delivered**: each build gets the part of the result for its own keys (so a key the source
  omitted or rejected fails only for the builds that asked for it) and counts the call in its
  diagnostics. A build whose own deadline passes first leaves with the deadline error the gate
  would have raised for it; a cancelled build just leaves. The call goes on while any build
  still waits for it, and is cancelled when none does.

Background refreshes never share calls: their source context is their own (B-DIAG-4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, final

from ..adapters._sources import check_batch_result
from ..core import (
    Clock,
    DiagnosticsCollector,
    FetchContext,
    ResourceKey,
    SourcePayload,
    SourceUnavailableError,
)
from ._counters import EngineCounters
from ._flights import FlightWindow
from ._gate import GateResult, Judge, SourceGate
from ._gate_bounds import CALLING, WAITING_FOR_CAPACITY, deadline_exceeded
from ._sources import RegisteredSource

Payloads = dict[ResourceKey, SourcePayload[Any]]
_Delivery = tuple[GateResult[Payloads], DiagnosticsCollector]


@final
class _Call:
    """One shared batch call: its keys, the chunks it serves and how far it got."""

    __slots__ = (
        "calling",
        "diag",
        "invoked",
        "keys",
        "shares",
        "started",
        "task",
        "waiting",
        "window",
    )

    def __init__(
        self, keys: tuple[ResourceKey, ...], shares: list[_Share], window: FlightWindow
    ) -> None:
        self.keys = keys
        self.shares = shares
        self.window = window  # the latest deadline of its builds
        self.waiting = len(shares)  # shares not yet delivered that have not left either
        self.diag = DiagnosticsCollector()  # what the gate counts; each build adds it to its own
        self.task: asyncio.Task[_Delivery] | None = None
        self.invoked = 0  # attempts that reached the source
        self.calling = False  # an attempt is at the source right now (not waiting for capacity)
        self.started = 0.0


@final
class _Share:
    """One build's chunk of keys: gathered in a window, then served by one call."""

    __slots__ = ("call", "diag", "keys", "outcome", "window")

    def __init__(
        self,
        keys: tuple[ResourceKey, ...],
        window: FlightWindow,
        diag: DiagnosticsCollector,
        outcome: asyncio.Future[_Delivery],
    ) -> None:
        self.keys = keys
        self.window = window
        self.diag = diag
        self.outcome = outcome
        self.call: _Call | None = None


@final
class _Gathering:
    """A source's open window: the chunks gathered so far and when it closes."""

    __slots__ = ("closes_at", "handle", "judge", "metadata", "shares", "size")

    def __init__(self, judge: Judge[Payloads] | None, metadata: Mapping[str, Any]) -> None:
        self.judge = judge
        self.metadata = metadata  # the builds' metadata: only equal ones share calls
        self.shares: list[_Share] = []
        self.size = 0
        self.closes_at = 0.0
        self.handle: asyncio.Handle | None = None


@final
class BatchCollector:
    """Gathers the chunks concurrent builds send to a batch source into shared calls."""

    __slots__ = ("_clock", "_counters", "_default", "_gate", "_open", "_tasks")

    def __init__(
        self,
        gate: SourceGate,
        clock: Clock,
        counters: EngineCounters,
        tasks: set[asyncio.Task[Any]],
        default_seconds: float | None = None,
    ) -> None:
        self._gate = gate
        self._clock = clock
        self._counters = counters
        self._tasks = tasks  # the engine's owned tasks: shutdown cancels and awaits them
        self._default = default_seconds
        self._open: dict[int, list[_Gathering]] = {}  # per source: one per metadata

    def window_of(self, source: RegisteredSource) -> float | None:
        """The source's window: its own setting, else the builder's (``None``: off)."""
        return self._default if source.batch_window_seconds is None else source.batch_window_seconds

    async def call(
        self,
        source: RegisteredSource,
        chunk: tuple[ResourceKey, ...],
        window: FlightWindow,
        diag: DiagnosticsCollector,
        judge: Judge[Payloads] | None,
        *,
        shared: bool = True,
    ) -> GateResult[Payloads]:
        """One batch call for ``chunk``: alone through the gate, or shared with other builds'
        chunks when the source has a window (and ``shared``: not a background refresh)."""
        seconds = self.window_of(source) if shared else None
        if seconds is None or window.expired():  # an expired build fails at once, as alone
            ctx = window.ctx
            invoke = _invoker(source, lambda: ctx)
            return await self._gate.call(source, chunk, window, diag, invoke, judge)
        share = self._join(source, chunk, window, diag, seconds, judge)
        try:
            return await self._wait(source, share)
        finally:
            self._leave(share)

    # -- gathering -------------------------------------------------------------------------

    def _join(
        self,
        source: RegisteredSource,
        chunk: tuple[ResourceKey, ...],
        window: FlightWindow,
        diag: DiagnosticsCollector,
        seconds: float,
        judge: Judge[Payloads] | None,
    ) -> _Share:
        loop = asyncio.get_running_loop()
        gathering = self._gathering(source, window.ctx.metadata, judge)
        share = _Share(chunk, window, diag, loop.create_future())
        gathering.shares.append(share)
        gathering.size += len(chunk)
        size = source.max_batch_size
        if size is not None and gathering.size >= size:
            self._close(source, gathering)  # full: waiting longer cannot make it larger
            return share
        remaining = window.remaining()
        wait = seconds if remaining is None else min(seconds, remaining / 2.0)
        closes_at = self._clock.monotonic() + wait
        if gathering.handle is None or closes_at < gathering.closes_at:
            if gathering.handle is not None:
                gathering.handle.cancel()
            gathering.closes_at = closes_at
            if wait <= 0.0:  # the same loop turn: close once the chunks ready now are in
                gathering.handle = loop.call_soon(self._close, source, gathering)
            else:
                gathering.handle = loop.call_later(wait, self._close, source, gathering)
        return share

    def _gathering(
        self, source: RegisteredSource, metadata: Mapping[str, Any], judge: Judge[Payloads] | None
    ) -> _Gathering:
        """The source's open window for builds with this metadata (a new one if none)."""
        gatherings = self._open.setdefault(source.index, [])
        for gathering in gatherings:
            if gathering.metadata is metadata or gathering.metadata == metadata:
                return gathering
        gathering = _Gathering(judge, metadata)
        gatherings.append(gathering)
        return gathering

    def _close(self, source: RegisteredSource, gathering: _Gathering) -> None:
        gatherings = self._open.get(source.index, [])
        if gathering in gatherings:
            gatherings.remove(gathering)
            if not gatherings:
                del self._open[source.index]
        if gathering.handle is not None:
            gathering.handle.cancel()
        waiting = [share for share in gathering.shares if not share.outcome.done()]
        for keys, shares in _pack(waiting, source.max_batch_size):
            self._start(source, keys, shares, gathering.judge)

    def _start(
        self,
        source: RegisteredSource,
        keys: tuple[ResourceKey, ...],
        shares: list[_Share],
        judge: Judge[Payloads] | None,
    ) -> None:
        # The call lasts as long as its most patient build, and follows it when it gets longer.
        window = FlightWindow(shares[0].window.ctx, self._clock)
        call = _Call(keys, shares, window)
        for share in shares:
            window.extend(share.window.ctx.deadline_monotonic)
            share.window.followers.append(window)
            share.call = call
        task = asyncio.get_running_loop().create_task(self._run(source, call, judge))
        call.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda done: _deliver(source, call, done))

    async def _run(
        self,
        source: RegisteredSource,
        call: _Call,
        judge: Judge[Payloads] | None,
    ) -> _Delivery:
        window = call.window
        fetch = _invoker(source, lambda: window.ctx)
        clock = self._clock

        async def invoke(called: tuple[ResourceKey, ...]) -> Payloads:
            call.invoked += 1
            call.calling, call.started = True, clock.monotonic()
            try:
                return await fetch(called)
            finally:
                call.calling = False

        result = await self._gate.call(source, call.keys, window, call.diag, invoke, judge)
        return result, call.diag

    # -- waiting ---------------------------------------------------------------------------

    async def _wait(self, source: RegisteredSource, share: _Share) -> GateResult[Payloads]:
        """The share's part of its call's result, or its own deadline error if that comes
        first (a window made longer meanwhile is waited for)."""
        while True:
            remaining = share.window.remaining()
            if remaining is not None and remaining <= 0.0:
                call = share.call
                if call is None or not call.window.expired():
                    return self._late(source, share)
                # The call's own deadline is now too: it is failing at this very moment, with
                # the gate's own error and accounting. Take that instead of racing it.
                remaining = None
            if remaining is None:  # awaited itself: a cancelled build cancels it (see _leave)
                return _part(share, *await share.outcome)
            done, _ = await asyncio.wait((share.outcome,), timeout=remaining)
            if done:
                return _part(share, *share.outcome.result())

    def _late(self, source: RegisteredSource, share: _Share) -> GateResult[Payloads]:
        """The build's deadline passed while its call goes on for others: the error (and the
        counts) the gate gives a call cut by the deadline at the same point."""
        self._counters.deadline_exceeded += 1
        call = share.call
        calling = call is not None and call.calling
        attempts = 1
        if call is not None:
            _merge(share.diag, call.diag)
            attempts = call.invoked if calling else call.invoked + 1
            if calling:
                elapsed = self._clock.monotonic() - call.started
                share.diag.source_calls += 1
                share.diag.batch_calls += 1
                share.diag.record_source_call(source.name, elapsed * 1000.0)
        phase = CALLING if calling else WAITING_FOR_CAPACITY
        return GateResult(error=deadline_exceeded(phase, source, share.keys), attempts=attempts)

    @staticmethod
    def _leave(share: _Share) -> None:
        """The share is done with its call (served, late or cancelled): nobody waits, cancelled."""
        call, outcome = share.call, share.outcome
        if not outcome.done() or outcome.cancelled():  # pending, or cancelled with its build
            outcome.cancel()  # a window still gathering skips it when it closes
            if call is not None:
                call.waiting -= 1
                if call.waiting == 0 and call.task is not None:
                    call.task.cancel()
        if call is not None:
            share.window.followers.remove(call.window)
            share.call = None  # no share <-> call cycle left for the collector


def _invoker(
    source: RegisteredSource, context: Callable[[], FetchContext]
) -> Callable[[tuple[ResourceKey, ...]], Awaitable[Payloads]]:
    """The gate's call of ``source.fetch_many`` with the context of the moment, checked as
    B-SRC-4 says."""
    fetch_many = source.fetch_many
    assert fetch_many is not None

    async def invoke(called: tuple[ResourceKey, ...]) -> Payloads:
        raw = await fetch_many(called, context())
        return check_batch_result(source.name, set(called), raw)

    return invoke


def _pack(
    shares: list[_Share], size: int | None
) -> list[tuple[tuple[ResourceKey, ...], list[_Share]]]:
    """Whole chunks, in arrival order, into calls of at most ``size`` distinct keys."""
    calls: list[tuple[tuple[ResourceKey, ...], list[_Share]]] = []
    keys: dict[ResourceKey, None] = {}
    members: list[_Share] = []
    for share in shares:
        new = [key for key in share.keys if key not in keys]
        if members and size is not None and len(keys) + len(new) > size:
            calls.append((tuple(keys), members))
            keys, members, new = {}, [], list(share.keys)
        keys.update(dict.fromkeys(new))
        members.append(share)
    if members:
        calls.append((tuple(keys), members))
    return calls


def _deliver(source: RegisteredSource, call: _Call, task: asyncio.Task[_Delivery]) -> None:
    """Hand the call's result to every share still waiting (a call cancelled while some
    still wait, at shutdown say, fails their keys)."""
    if task.cancelled() or task.exception() is not None:
        error = SourceUnavailableError(f"batch call to source {source.name} was stopped")
        delivery: _Delivery = (GateResult(error=error, attempts=max(1, call.invoked)), call.diag)
    else:
        delivery = task.result()
    for share in call.shares:
        if not share.outcome.done():
            share.outcome.set_result(delivery)


def _part(
    share: _Share, result: GateResult[Payloads], diag: DiagnosticsCollector
) -> GateResult[Payloads]:
    """The share's part of its call's result; its build counts the call."""
    _merge(share.diag, diag)
    call = share.call
    if call is None or len(call.shares) == 1:
        return result
    own, value, blocked = share.keys, result.value, result.blocked
    # ``called`` is the call's keys less those its circuits kept out (``blocked``).
    called = own if result.called and not blocked else ()
    if blocked:
        called = tuple(key for key in own if key not in blocked) if result.called else ()
        blocked = {key: blocked[key] for key in own if key in blocked}
    return GateResult(
        value=None if value is None else {key: value[key] for key in own if key in value},
        error=result.error,
        called=called,
        blocked=blocked,
        attempts=result.attempts,
        latency_ms=result.latency_ms,
    )


def _merge(diag: DiagnosticsCollector, done: DiagnosticsCollector) -> None:
    """Add what the gate counted for a shared call to one build's diagnostics."""
    diag.source_calls += done.source_calls
    diag.batch_calls += done.batch_calls
    diag.retries += done.retries
    for name, calls in done.source_calls_by_source.items():
        diag.source_calls_by_source[name] = diag.source_calls_by_source.get(name, 0) + calls
    for name, latency in done.source_latency_ms_by_source.items():
        diag.source_latency_ms_by_source[name] = (
            diag.source_latency_ms_by_source.get(name, 0.0) + latency
        )
