"""The engine: one group's resolution, steps 4-7 of a build for the keys it owns.

Steps 2-3 (:mod:`._assembly`) claim the keys nobody is fetching; :func:`start` starts one
:class:`GroupRun` task to resolve them all. Keys walk their chains level by level (batch sources
in ``max_batch_size`` chunks, :mod:`._batch_calls`; single sources per key, a plain call made
right in the worker; through at most ``max_pending_tasks`` workers); a key that fails falls
through to its next source at once (:class:`FallThrough`),
so it never waits for calls it does not use, and a derived level (:mod:`._derive`) cannot hold
it hostage. After each level, :meth:`GroupRun.commit` writes what the level made in one cache
call, in the level's task (inside its task group when it has one), and resolves each key's
flight with what the build serves (B-CACHE-17/18). No source left: :mod:`._last_resort`.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from functools import partial
from operator import length_hint
from typing import Any, TypeVar, final

from .._compat import TaskGroup, watch_cancellation
from ..core import (
    CacheWriteResult,
    DiagnosticsCollector,
    FetchContext,
    PayloadIsolationError,
    ResourceKey,
    SnapshotValue,
    SourcePayload,
)
from ..core._versions import share_version
from ._background import count_refreshes
from ._batch_calls import BatchCalls
from ._cache_access import BuildView, served
from ._derive import Deriver
from ._fall_through import FallThrough
from ._flights import Flight, FlightWindow
from ._gate import Plain
from ._gate_bounds import WATCH_CALLS
from ._gated_calls import FetchOne, fetch_one
from ._last_resort import abandon, finish_failed
from ._leases import coordinate, release
from ._ledger import KeyLedger
from ._machinery import Machinery, Refresh
from ._payloads import normalize_payload
from ._sources import RegisteredSource, SourceKind

T = TypeVar("T")


def start(
    engine: Machinery,
    flights: dict[ResourceKey, Flight],
    ctx: FetchContext,
    diag: DiagnosticsCollector,
    view: BuildView,
    **options: Any,
) -> None:
    """Start the task resolving the owned ``flights`` (see :meth:`Machinery.start`)."""
    run = GroupRun(engine, flights, ctx, diag, view, **options)
    task = asyncio.get_running_loop().create_task(run.run())
    engine.flights.running(run.group, task, run.window)
    owner = engine.refresh_tasks if run.refresh_for is not None else engine.tasks
    owner.add(task)
    task.add_done_callback(partial(_ended, owner))


@final
class GroupRun:
    """Resolves one group of owned flights through the priority chain."""

    def __init__(
        self,
        engine: Machinery,
        flights: dict[ResourceKey, Flight],
        ctx: FetchContext,
        diag: DiagnosticsCollector,
        view: BuildView,
        *,
        refresh_for: Refresh | None = None,
        force: bool = False,
        candidates: Mapping[ResourceKey, SnapshotValue[Any]] | None = None,
        private: bool = False,
    ) -> None:
        self.engine = engine
        self.flights = flights
        self.group = next(iter(flights.values())).group
        self.window = FlightWindow(ctx, engine.clock)
        self.diag = diag
        self.view = view  # the owning build's reading: derivations take dependencies from it
        self._ledger: KeyLedger | None = None  # made when first needed (see ledger)
        self.refresh_for = refresh_for  # a background refresh: the scheduling build's diag
        self.force = force  # no cache fallback: the caller asked to bypass the cache
        self.private = private  # a build's own re-derivation: nobody else waits for it
        self.candidates = candidates or {}  # usable cached values, served if all sources fail
        # Keys every source failed for that were served stale instead, with their error: for a
        # background refresh, that is a failed refresh.
        self.served_instead: dict[ResourceKey, Exception] = {}
        self._chains: dict[ResourceKey, tuple[int, ...]] = {}
        self._batch_calls: BatchCalls | None = None  # made when a batch source is reached

    @property
    def ledger(self) -> KeyLedger:
        """Why the group's keys failed, source by source: made when a key first fails or
        keeps a stale last resort, so a clean miss makes none."""
        return self.make_ledger()

    def make_ledger(self) -> KeyLedger:
        """:attr:`ledger`, made if it is not yet (a lazy argument for ``ValueFactory.accept``)."""
        ledger = self._ledger
        if ledger is None:
            ledger = self._ledger = KeyLedger(self.engine.report, self.engine.source_order)
        return ledger

    def batch_calls(self) -> BatchCalls:
        """The group's calls to batch sources (made when first needed)."""
        calls = self._batch_calls
        if calls is None:
            calls = self._batch_calls = BatchCalls(self)
        return calls

    @property
    def ctx(self) -> FetchContext:
        """The group's context; its deadline moves when a caller with more time joins."""
        return self.window.ctx

    async def run(self) -> None:
        """Resolve every flight; whatever happens, no flight is left unresolved."""
        reason: BaseException | None = None
        leased: set[ResourceKey] = set()
        try:
            self._chains = self.engine.chains.sorted_chains(
                self.flights,
                self.diag,
                lambda key, name, error, tried: self.ledger.fail(key, name, error, tried),
            )
            keys = list(self.flights)
            memory, table = self.engine.not_found, self.engine.flights
            if memory.ttl_seconds is not None and not self.force:  # negative caching (opt-in)
                keys = memory.skip_remembered(keys, lambda k, e: table.resolve(self.flights[k], e))
            # A forced refresh must reach the sources, not wait for a value another
            # process is about to write.
            if self.engine.cache.coordinates_fetches and not (self.force or self.private):
                await coordinate(self, keys, leased)
            else:
                await self.walk(keys, 0)
        except BaseException as error:
            reason = error
            raise
        finally:
            self._batch_calls = None  # no run <-> batch calls cycle left for the collector
            if self.group.unresolved and any(not flight.done for flight in self.flights.values()):
                abandon(self, reason)
            if leased:
                await release(self.engine.cache, list(leased))
            if self.refresh_for is not None:
                cancelled = isinstance(reason, asyncio.CancelledError)
                flights, failed = self.flights.values(), self.served_instead
                count_refreshes(self.engine, flights, self.refresh_for, cancelled, failed)

    async def pool(
        self,
        items: Sequence[T],
        work: Callable[[T], Awaitable[None]] | None = None,
        *,
        lazy: bool = False,
        drain: Callable[[Iterator[T]], Awaitable[None]] | None = None,
    ) -> None:
        """Run ``work`` over ``items`` in order, in at most ``max_pending_tasks`` workers (the
        first is this task: one item costs no task); or ``drain``, which each worker runs over
        the items left (a loop of its own: no coroutine per item). ``lazy``: the others start
        once this one waits, a loop turn later, so work that never waits (an in-memory source)
        needs no task at all (not for batch chunks: each must reach its batch window in this
        turn)."""
        engine = self.engine
        pending = iter(items)

        async def worker() -> None:
            engine.active_workers += 1
            try:
                if drain is not None:
                    await drain(pending)
                else:
                    assert work is not None
                    for item in pending:
                        await work(item)
            finally:
                engine.active_workers -= 1

        extra = min(engine.max_pending_tasks, len(items)) - 1
        if extra <= 0:
            await worker()
            return
        async with TaskGroup() as group:
            if not lazy:
                for _ in range(extra):
                    group.create_task(worker())
                await worker()
                return

            def spawn() -> None:
                for _ in range(min(extra, length_hint(pending))):
                    group.create_task(worker())

            started = asyncio.get_running_loop().call_soon(spawn)
            try:
                await worker()
            finally:
                started.cancel()

    # -- the chain walk ---------------------------------------------------------------------

    async def walk(self, keys: list[ResourceKey], start: int) -> None:
        """Try ``keys`` at sources ``start..``, each at its next (no source left: finished at
        once); keys bound for one source go together, for different ones concurrently."""
        if not keys:
            return
        # No shortcut once the deadline has passed: each source the key reaches fails at once
        # with its own deadline error (B-TIME-2), so the key's failures say where time ran out.
        bound: dict[int, list[ResourceKey]] = {}
        exhausted: list[ResourceKey] = []
        for key in keys:
            chain = self._chains[key]
            at = bisect.bisect_left(chain, start)
            if at == len(chain):
                exhausted.append(key)
            else:
                bound.setdefault(chain[at], []).append(key)
        if exhausted:
            await finish_failed(self, exhausted)
        steps = list(bound.items())
        if len(steps) == 1:
            await self._step(*steps[0])
        elif steps:
            async with TaskGroup() as group:
                for index, part in steps[1:]:
                    group.create_task(self._step(index, part))
                await self._step(*steps[0])

    async def _step(self, index: int, keys: list[ResourceKey]) -> None:
        """Try ``keys`` at source ``index``; a key that fails moves on at once, not when its
        siblings' calls are done (so a derived sibling waiting on it cannot deadlock)."""
        source = self.engine.sources[index]
        if len(keys) == 1 and source.kind is not SourceKind.DERIVED:
            await self._step_one(source, keys)
            return
        async with TaskGroup() as group:
            fall_through = FallThrough(group, self.walk, index + 1)
            if source.kind is SourceKind.DERIVED:
                await Deriver(self, source, fall_through).derive(keys)
                return
            made: list[SnapshotValue[Any]] = []
            if source.kind is SourceKind.BATCH:
                await self.batch_calls().gather(source, keys, fall_through, made)
            else:
                await self._dispatch(source, keys, fall_through, made)
            # The level is done (its failures already went on): one write for all it made.
            await self.commit(made)

    async def _step_one(self, source: RegisteredSource, keys: list[ResourceKey]) -> None:
        """:meth:`_step` for one key (no sibling to move on without): it falls through after
        its call, in this task; no task group unless a shared batch call failed some keys and
        made others (those move on while the level is written, as in :meth:`_step`)."""
        failed: list[ResourceKey] = []
        made: list[SnapshotValue[Any]] = []
        if source.kind is SourceKind.BATCH:
            await self.batch_calls().gather(source, keys, failed.extend, made)
        else:
            await self._dispatch(source, keys, failed.extend, made)
        if failed and made:
            async with TaskGroup() as group:
                group.create_task(self.walk(failed, source.index + 1))
                await self.commit(made)
        elif failed:
            await asyncio.sleep(0)  # a loop turn later, as a fall-through task would start
            await self.walk(failed, source.index + 1)
        else:
            await self.commit(made)

    async def _dispatch(
        self,
        source: RegisteredSource,
        keys: list[ResourceKey],
        fall_through: Callable[[list[ResourceKey]], None],
        made: list[SnapshotValue[Any]],
    ) -> None:
        """Call single-key ``source`` for each of ``keys``, in the group's workers."""
        fetch = source.fetch
        assert fetch is not None
        window = self.window  # its ctx is read per call: a joining caller may move it

        async def invoke(keys: tuple[ResourceKey, ...]) -> SourcePayload[Any]:
            return normalize_payload(await fetch(keys[0], window.ctx))

        engine, diag, ledger = self.engine, self.diag, self.make_ledger
        one = partial(fetch_one, engine, window, diag, ledger, source, invoke, fall_through)
        plain = engine.gate.plain(source, window)
        if plain is None:
            await self.pool(keys, partial(one, made), lazy=True)
        else:
            drain = partial(self._fetch_plain, source, plain, one, fall_through, made)
            await self.pool(keys, lazy=True, drain=drain)

    # -- single-key sources -----------------------------------------------------------

    async def _fetch_plain(
        self,
        source: RegisteredSource,
        plain: Plain,
        one: FetchOne,
        fall_through: Callable[[list[ResourceKey]], None],
        made: list[SnapshotValue[Any]],
        pending: Iterator[ResourceKey],
    ) -> None:
        """The plain calls (see ``SourceGate.plain``) of the ``pending`` keys, one at a time:
        each made right here, one coroutine between this loop and the source, unless its
        circuit is tracked or no slot is free now; a failure goes on in the gate (a retry, if
        due). Other calls: ``one`` (:func:`fetch_one`)."""
        engine, diag, fetch = self.engine, self.diag, source.fetch
        gate, clock, factory, ledger = engine.gate, engine.clock, engine.factory, self.make_ledger
        slot, identity = plain
        assert fetch is not None
        for key in pending:
            if gate.tracks(identity) or not slot.try_take():
                await one(made, key)
                continue
            called, call, window = (key,), None, self.window
            started = clock.monotonic()
            try:
                call = fetch(key, window.ctx)  # read per call: a joiner may move the ctx
                if WATCH_CALLS:
                    call = watch_cancellation(call)
                returned = await call
            except BaseException as raised:
                error = gate.plain_failed(
                    source, plain, window, diag, started, called, raised, call
                )
                if not isinstance(error, Exception):
                    raise
                await one(made, key, error)
                continue
            good = (  # a value stamped on arrival is fresh: a success for its circuit
                type(returned) is not SourcePayload
                or returned.observed_at is None
                or factory.good(key, returned)
            )
            latency_ms = gate.plain_passed(source, plain, diag, started, called, good)
            accepted = factory.accept_one(source, key, returned, latency_ms, made, ledger, diag)
            if accepted is None:  # its copy belongs off the loop
                args = (made, source, key, returned, latency_ms, ledger, diag, window.ctx)
                accepted = await factory.accept_later(*args)
            if not accepted:
                fall_through([key])

    async def commit(self, values: Sequence[SnapshotValue[Any]], *, write: bool = True) -> None:
        """After a level, one cache write of every fresh value it made (none when ``write`` is
        False), all of one new version (:func:`share_version`), then resolve each key with what
        the build serves (:func:`served`); in the level's own task, inside the group's task
        group: no commit outlives its group. Raises whatever the cache raised (an uncopyable
        payload is served uncached)."""
        if not values:
            return
        share_version(values)  # new revisions of distinct keys, seen by nobody yet
        engine = self.engine
        written: Mapping[ResourceKey, CacheWriteResult | None] = {}
        if write:
            if engine.cache.batch_writes:
                self.diag.cache_batch_writes += 1
            try:
                written = await engine.cache.write(values)
            except PayloadIsolationError:
                written = {}  # the cache cannot copy it: serve our private copy, uncached
        resolve, flights = engine.flights.resolve, self.flights
        if not written:  # every value stored as it is (or none written): each serves itself
            for value in values:
                resolve(flights[value.key], value)
            return
        for value in values:
            outcome = served(value, written.get(value.key), engine.clock, engine.policy_for)
            resolve(flights[value.key], outcome)


def _ended(owner: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
    """A group's task ended: drop it from its ``owner`` and retrieve how it ended (nobody awaits
    it: callers wait on its flights), so a BaseException a source raised is not logged."""
    owner.discard(task)
    if not task.cancelled():
        task.exception()
