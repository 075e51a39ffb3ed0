"""Step 4-7 of a build for the keys one build owns: walk the priority chain, commit, resolve.

One :class:`GroupRun` task resolves every key a build (or a background refresh) owns. Keys walk
the chain level by level: batch sources get every unresolved key they support in
``max_batch_size`` chunks, single sources get per-key calls, both through a fixed pool of at most
``max_pending_tasks`` workers. A derived level forks: its keys wait for their dependencies while
the other keys walk on, so a group never holds a key hostage behind another key's dependencies
(that, with per-key futures and the wait-cycle check, is what keeps two builds that depend on
each other's keys from deadlocking). A key's future resolves once its level's batched cache write
is done (B-CACHE-17/18: what the build serves depends on that write's result), not when the
whole group is.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Mapping, Sequence
from typing import Any, final

from .._compat import TaskGroup
from ..core import (
    CacheWriteResult,
    DiagnosticsCollector,
    FetchContext,
    PayloadIsolationError,
    ResourceKey,
    ResourceNotFound,
    ResourceNotFoundError,
    SnapshotValue,
    SourcePayload,
    SourceUnavailableError,
)
from ._derive import Deriver, FallThrough
from ._flights import Flight, FlightWindow, Outcome, Raised
from ._ledger import KeyLedger, as_resolution_error, raised_error, stale_fallback
from ._machinery import Machinery, Refresh, run_pool
from ._payloads import normalize_payload
from ._sources import RegisteredSource, SourceKind
from ._view import BuildView


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
        self.ledger = KeyLedger(engine.report, engine.source_order)
        self._refresh_for = refresh_for  # a background refresh: the scheduling build's diag
        self._force = force  # no cache fallback: the caller asked to bypass the cache
        self._private = private  # a build's own re-derivation: nobody else waits for it
        self._candidates = candidates or {}  # usable cached values, served if all sources fail
        # Keys every source failed for that were served stale instead, with their error: for a
        # background refresh, that is a failed refresh.
        self._served_instead: dict[ResourceKey, Exception] = {}
        self._chains: dict[ResourceKey, tuple[int, ...]] = {}
        self._batches: dict[int, tuple[list[ResourceKey], asyncio.Future[None]]] = {}

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
                self.flights, self.diag, self.ledger.fail
            )
            keys = self._recall_not_found(list(self.flights))
            # A forced refresh must reach the sources, not wait for a value another
            # process is about to write.
            if self.engine.cache.coordinates_fetches and not (self._force or self._private):
                await self._coordinate(keys, leased)
            else:
                await self._walk(keys, 0)
        except BaseException as error:
            reason = error
            raise
        finally:
            self._abandon(reason)
            await self.engine.cache.release(list(leased))
            if self._refresh_for is not None:
                cancelled = isinstance(reason, asyncio.CancelledError)
                self.engine.count_refreshes(
                    self.flights.values(),
                    self._refresh_for,
                    cancelled=cancelled,
                    failed=self._served_instead,
                )

    # -- the chain walk ---------------------------------------------------------------------

    def _recall_not_found(self, keys: list[ResourceKey]) -> list[ResourceKey]:
        """Resolve keys remembered as not found (negative caching) without asking a source;
        return the others. A forced revalidation asks the sources anyway."""
        memory = self.engine.not_found
        if not memory.enabled or self._force:
            return keys
        rest: list[ResourceKey] = []
        for key in keys:
            error = memory.recall(key)
            if error is None:
                rest.append(key)
            else:
                self.engine.flights.resolve(self.flights[key], error)
        return rest

    async def _coordinate(self, keys: list[ResourceKey], leased: set[ResourceKey]) -> None:
        """With a shared cache tier: lease ``keys`` in one call, fetch the leased ones at once,
        and meanwhile wait for the keys other processes are fetching, serving them from the
        cache as they arrive. A lease taken over while waiting is fetched at once too, and each
        lease is given back as soon as its value is written: this build never waits while it
        holds a lease it is not using, so two processes cannot each hold what the other waits
        for. Keys still missing when the tier stops making progress (its holder is slow and
        our deadline is near, or the tier failed) are fetched here without a lease."""
        engine, clock = self.engine, self.engine.clock
        async with TaskGroup() as group:

            def fetch(owned: list[ResourceKey]) -> None:
                if owned:
                    group.create_task(self._fetch_leased(owned, leased))

            taken = await engine.cache.lease(keys)
            leased |= taken
            fetch([key for key in keys if key in taken])
            waiting = [key for key in keys if key not in taken]
            while waiting and not self.ctx.expired(clock):
                arrived = await engine.cache.wait_for(
                    waiting,
                    wait_seconds=self.ctx.remaining_seconds(clock),
                    now=clock.now(),
                    policies={key: engine.policy_for(key) for key in waiting},
                )
                for key, lookup in arrived.items():
                    if lookup.value is not None and lookup.fresh and key in self.flights:
                        engine.flights.resolve(self.flights[key], lookup.value)
                waiting = [key for key in waiting if not self.flights[key].future.done()]
                taken = await engine.cache.lease(waiting) if waiting else set()
                leased |= taken
                fetch([key for key in waiting if key in taken])
                if not arrived and not taken:
                    break  # no progress: fetch them here rather than spin
                waiting = [key for key in waiting if key not in taken]
            await self._walk([key for key in waiting if not self.flights[key].future.done()], 0)

    async def _fetch_leased(self, keys: list[ResourceKey], leased: set[ResourceKey]) -> None:
        """Fetch keys this process leased, write them, then give their leases back at once
        (waiters elsewhere are woken by the write, or take the lease over after a failure)."""
        await self._walk(keys, 0)  # each priority level is written as it ends
        leased.difference_update(keys)
        await self.engine.cache.release(keys)

    async def _walk(self, keys: list[ResourceKey], start: int) -> None:
        """Try ``keys`` at sources ``start..``; a key no source could resolve is finished at
        once (its future must not wait for the rest of the group).

        Each key goes to the next source in its own chain. Keys bound for the same source are
        dispatched together (one batch); keys bound for different sources go concurrently, so
        a key never waits for a source it does not use.
        """
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
        await self._finish_failed(exhausted)
        steps = list(bound.items())
        if len(steps) == 1:
            await self._step(*steps[0])
        elif steps:
            async with TaskGroup() as group:
                for index, part in steps[1:]:
                    group.create_task(self._step(index, part))
                await self._step(*steps[0])

    async def _step(self, index: int, keys: list[ResourceKey]) -> None:
        """Try ``keys`` at source ``index``. A key that fails moves on down its chain at once,
        not when its siblings' calls are done: it never waits for calls it does not use, and a
        derived sibling waiting on it cannot deadlock."""
        source = self.engine.sources[index]
        async with TaskGroup() as group:
            fall_through = FallThrough(group, self._walk, index + 1)
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

    async def _gather_batch(
        self,
        source: RegisteredSource,
        keys: list[ResourceKey],
        fall_through: FallThrough,
        made: list[SnapshotValue[Any]],
    ) -> None:
        """Keys reaching one batch source in the same turn of the event loop (say, after
        failing at different higher sources at once) share its calls instead of each making
        their own; the first arrival dispatches for all and sends every failure fall_through."""
        gathering = self._batches.get(source.index)
        if gathering is not None:
            gathering[0].extend(keys)
            await gathering[1]
            return
        batch: list[ResourceKey] = list(keys)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._batches[source.index] = (batch, done)
        try:
            await asyncio.sleep(0)  # one turn for the others to arrive
        finally:
            del self._batches[source.index]
        try:
            await self._dispatch(source, batch, fall_through, made)
        except BaseException:
            done.cancel()  # the gatherers fail with us rather than wait forever
            raise
        done.set_result(None)

    async def _dispatch(
        self,
        source: RegisteredSource,
        keys: list[ResourceKey],
        fall_through: FallThrough,
        made: list[SnapshotValue[Any]],
    ) -> None:
        if source.kind is SourceKind.BATCH:
            size = source.max_batch_size or len(keys)
            chunks = [tuple(keys[i : i + size]) for i in range(0, len(keys), size)]
            self.diag.batch_chunks += len(chunks)

            async def fetch_chunk(chunk: tuple[ResourceKey, ...]) -> None:
                fall_through(await self._fetch_chunk(source, chunk, made))

            await run_pool(self.engine, chunks, fetch_chunk)
        else:

            async def fetch_one(key: ResourceKey) -> None:
                if not await self._fetch_one(source, key, made):
                    fall_through([key])

            await run_pool(self.engine, keys, fetch_one)

    # -- single and batch sources -----------------------------------------------------------

    async def _fetch_one(
        self, source: RegisteredSource, key: ResourceKey, made: list[SnapshotValue[Any]]
    ) -> bool:
        fetch, ctx = source.fetch, self.ctx
        assert fetch is not None

        async def invoke(_keys: tuple[ResourceKey, ...]) -> SourcePayload[Any]:
            return normalize_payload(await fetch(key, ctx))

        result = await self.engine.gate.call(
            source, (key,), self.window, self.diag, invoke, self.engine.factory.circuit_successes
        )
        if result.error is not None or result.value is None:
            self.ledger.fail_all(source, (key,), result)
            return False
        return key in await self.engine.factory.accept(
            source, {key: result.value}, result, made, self.ledger, self.diag, ctx=self.ctx
        )

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
            source, chunk, self.window, self.diag, successes, shared=self._refresh_for is None
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
            source, payloads, result, made, self.ledger, self.diag, ctx=self.ctx
        )
        failed.extend(key for key in payloads if key not in accepted)
        return failed

    async def commit(self, values: Sequence[SnapshotValue[Any]], *, write: bool = True) -> None:
        """After a priority level, one cache write of every fresh value it made (a fast
        source's 200 keys: one write; none when ``write`` is False), then resolve each key at
        once with what the build serves for it (:meth:`Engine.served`). It runs in the level's
        own task (inside the group's task group): no commit outlives its group.

        Raises:
            Exception: whatever the cache raised (except an uncopyable payload: that value is
                served uncached).
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
            resolve(flights[value.key], engine.served(value, written.get(value.key), value.source))

    async def _finish_failed(self, keys: list[ResourceKey]) -> None:
        """No source is left for ``keys``: serve allowed stale data, else their errors.

        A stale source payload kept as a last resort is served first (and written, except by a
        background refresh or a forced revalidation); else the usable cached value the build
        read (its candidate), marked with why it is served."""
        if not keys:
            return
        engine = self.engine
        now = engine.clock.now()
        last_resort = self.ledger.take_usable_stale(keys, engine.policy_for, now)
        bypass = self._force or self._refresh_for is not None
        await self.commit(last_resort, write=not bypass)
        served: list[SnapshotValue[Any]] = list(last_resort)
        rest = [key for key in keys if not self.flights[key].future.done()]
        for key in rest:
            error = self.ledger.error_for(key)
            outcome: Outcome = error
            candidate = None if bypass else self._candidates.get(key)
            if isinstance(error, ResourceNotFoundError):
                engine.not_found.remember(error)
                candidate = None  # it no longer exists: an older value is no fallback
            if candidate is not None:
                fallback = stale_fallback(candidate, error, now, engine.policy_for(key))
                if fallback is not None:
                    served.append(fallback)
                    outcome = fallback
            engine.flights.resolve(self.flights[key], outcome)
        if self._refresh_for is not None:
            for value in served:
                self._served_instead[value.key] = self.ledger.error_for(value.key)
        if engine.report.enabled:
            for value in served:
                engine.report.stale_fallback(value.key, self.ledger.last_error_type(value.key))

    def _abandon(self, reason: BaseException | None) -> None:
        """Resolve what is left: with the error the work raised (a cache call failed, say),
        which its waiters re-raise, or as stopped when it was cancelled."""
        flights = self.engine.flights
        raised = raised_error(reason)
        for key, flight in self.flights.items():
            if not flight.future.done():
                if raised is not None:
                    flights.resolve(flight, Raised(raised))
                    continue
                why = "cancelled" if reason is None else repr(reason)
                stopped = SourceUnavailableError(f"resolution of {key} stopped: {why}")
                flights.resolve(flight, as_resolution_error(key, stopped))
