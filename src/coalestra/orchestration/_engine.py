"""The engine: one group's resolution, steps 4-7 of a build for the keys it owns.

Steps 2-3 (:mod:`._assembly`) claim the keys nobody is fetching; :func:`start` starts one
:class:`GroupRun` task to resolve them all. Keys walk their chains level by level (batch sources
in ``max_batch_size`` chunks, single sources per key, through at most ``max_pending_tasks``
workers); a key that fails falls through to its next source at once (:class:`FallThrough`),
so it never waits for calls it does not use, and a derived level (:mod:`._derive`) cannot hold
it hostage. After each level, :meth:`GroupRun.commit` writes what the level made in one cache
call, in the level's task (inside its task group when it has one), and resolves each key's
flight with what the build serves (B-CACHE-17/18). No source left: :mod:`._last_resort`.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar, final

from .._compat import TaskGroup
from ..core import (
    CacheWriteResult,
    DiagnosticsCollector,
    FetchContext,
    PayloadIsolationError,
    ResourceKey,
    ResourceNotFound,
    SnapshotValue,
    SourcePayload,
    SourceUnavailableError,
)
from ._background import count_refreshes
from ._cache_access import BuildView, served
from ._derive import Deriver
from ._fall_through import FallThrough
from ._flights import Flight, FlightWindow
from ._gate import Invoke
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
        self._batches: dict[int, tuple[list[ResourceKey], asyncio.Future[None]]] = {}

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
            if any(not flight.future.done() for flight in self.flights.values()):
                abandon(self, reason)
            if leased:
                await release(self.engine.cache, list(leased))
            if self.refresh_for is not None:
                cancelled = isinstance(reason, asyncio.CancelledError)
                flights, failed = self.flights.values(), self.served_instead
                count_refreshes(self.engine, flights, self.refresh_for, cancelled, failed)

    async def pool(self, items: Sequence[T], work: Callable[[T], Awaitable[None]]) -> None:
        """Run ``work`` over ``items`` in order, in at most ``max_pending_tasks`` workers (the
        first is this task: one item costs no task)."""
        engine = self.engine
        pending = iter(items)

        async def worker() -> None:
            engine.active_workers += 1
            try:
                for item in pending:
                    await work(item)
            finally:
                engine.active_workers -= 1

        extra = min(engine.max_pending_tasks, len(items)) - 1
        if extra <= 0:
            await worker()
            return
        async with TaskGroup() as group:
            for _ in range(extra):
                group.create_task(worker())
            await worker()

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
                await self._gather_batch(source, keys, fall_through, made)
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
            await self._gather_batch(source, keys, failed.extend, made)
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

    async def _gather_batch(
        self,
        source: RegisteredSource,
        keys: list[ResourceKey],
        fall_through: Callable[[list[ResourceKey]], None],
        made: list[SnapshotValue[Any]],
    ) -> None:
        """Keys reaching one batch source in the same loop turn (say, failing at different
        higher sources at once) share its calls; the first arrival dispatches for all."""
        if len(keys) == len(self.flights):  # every key of the group: nobody else can arrive
            await self._dispatch(source, keys, fall_through, made)
            return
        gathering = self._batches.get(source.index)
        if gathering is not None:
            gathering[0].extend(keys)
            await gathering[1]
            return
        batch: list[ResourceKey] = list(keys)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._batches[source.index] = (batch, done)
        try:
            try:
                await asyncio.sleep(0)  # one turn for the others to arrive
            finally:
                del self._batches[source.index]
            await self._dispatch(source, batch, fall_through, made)
        except BaseException:
            done.cancel()  # the gatherers fail with us rather than wait forever
            raise
        done.set_result(None)

    async def _dispatch(
        self,
        source: RegisteredSource,
        keys: list[ResourceKey],
        fall_through: Callable[[list[ResourceKey]], None],
        made: list[SnapshotValue[Any]],
    ) -> None:
        if source.kind is SourceKind.BATCH:
            size = source.max_batch_size or len(keys)
            chunks = [tuple(keys[i : i + size]) for i in range(0, len(keys), size)]
            self.diag.batch_chunks += len(chunks)

            async def fetch_chunk(chunk: tuple[ResourceKey, ...]) -> None:
                fall_through(await self._fetch_chunk(source, chunk, made))

            await self.pool(chunks, fetch_chunk)
        else:
            fetch = source.fetch
            assert fetch is not None
            window = self.window  # its ctx is read per call: a joining caller may move it

            async def invoke(keys: tuple[ResourceKey, ...]) -> SourcePayload[Any]:
                return normalize_payload(await fetch(keys[0], window.ctx))

            await self.pool(keys, partial(self._fetch_one, source, invoke, fall_through, made))

    # -- single and batch sources -----------------------------------------------------------

    async def _fetch_one(
        self,
        source: RegisteredSource,
        invoke: Invoke[SourcePayload[Any]],
        fall_through: Callable[[list[ResourceKey]], None],
        made: list[SnapshotValue[Any]],
        key: ResourceKey,
    ) -> None:
        """One key's call to a single source (one level's calls share ``invoke``); a key that
        got no value falls through at once."""
        engine, window = self.engine, self.window
        called = (key,)
        factory = engine.factory
        result = await engine.gate.call(
            source, called, window, self.diag, invoke, factory.circuit_successes
        )
        if result.error is not None or result.value is None:
            self.ledger.fail_all(source, called, result)
        elif await factory.accept(
            source, {key: result.value}, result, made, self.make_ledger, self.diag, ctx=window.ctx
        ):
            return
        fall_through([key])

    async def _fetch_chunk(
        self,
        source: RegisteredSource,
        chunk: tuple[ResourceKey, ...],
        made: list[SnapshotValue[Any]],
    ) -> list[ResourceKey]:
        successes = (
            self.engine.factory.circuit_successes_not_found
            if source.omitted_means_not_found
            else self.engine.factory.circuit_successes
        )
        result = await self.engine.batches.call(
            source, chunk, self.window, self.diag, successes, shared=self.refresh_for is None
        )
        if result.error is not None or result.value is None:
            return self.ledger.fail_all(source, chunk, result)
        failed = self.ledger.fail_blocked(source, result)
        payloads = result.value
        # B-SRC-4 by default; a source that opted in means "no such resource" by omitting it.
        omitted = ResourceNotFound if source.omitted_means_not_found else SourceUnavailableError
        for key in result.called:
            if key not in payloads:
                missing = omitted(f"batch source {source.name} omitted resource {key}")
                self.ledger.fail_fetch(key, source.name, missing, result.attempts)
                failed.append(key)
        accepted = await self.engine.factory.accept(
            source, payloads, result, made, self.make_ledger, self.diag, ctx=self.ctx
        )
        failed.extend(key for key in payloads if key not in accepted)
        return failed

    async def commit(self, values: Sequence[SnapshotValue[Any]], *, write: bool = True) -> None:
        """After a level, one cache write of every fresh value it made (none when ``write`` is
        False), then resolve each key with what the build serves (:func:`served`); in the
        level's own task, inside the group's task group: no commit outlives its group.

        Raises:
            Exception: whatever the cache raised (an uncopyable payload is served uncached).
        """
        if not values:
            return
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
        for value in values:
            outcome = served(value, written.get(value.key), engine.clock, engine.policy_for)
            resolve(flights[value.key], outcome)


def _ended(owner: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
    """A group's task ended: drop it from its ``owner`` and retrieve how it ended (nobody awaits
    it: callers wait on its flights), so a BaseException a source raised is not logged."""
    owner.discard(task)
    if not task.cancelled():
        task.exception()
