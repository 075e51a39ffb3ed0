"""Step 4-7 of a build for the keys one build owns: walk the priority chain, commit, resolve.

One :class:`GroupRun` task resolves every key a build (or a background refresh) owns. Keys walk
the chain level by level: batch sources get every unresolved key they support in
``max_batch_size`` chunks, single sources get per-key calls, both through a fixed pool of at most
``max_pending_tasks`` workers. A derived level forks: its keys wait for their dependencies while
the other keys walk on, so a group never holds a key hostage behind another key's dependencies
(that, with per-key futures and the wait-cycle check, is what keeps two builds that depend on
each other's keys from deadlocking). Each key's future resolves as soon as that key is done.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, final

from ..core import (
    DependencyCycleError,
    DependencyResolutionError,
    DiagnosticsCollector,
    FetchContext,
    PayloadIsolationError,
    ResourceKey,
    ResourceResolutionError,
    Snapshot,
    SnapshotDeadlineExceededError,
    SnapshotValue,
    SourceFailure,
    SourcePayload,
    SourceProtocolError,
    SourceUnavailableError,
)
from ..core._policies import FutureObservationError
from ..core._snapshot import key_tuple
from ._gate import GateResult
from ._singleflight import Flight, Outcome
from ._sources import RegisteredSource, SourceKind, normalize_payload
from ._window import FlightWindow

if TYPE_CHECKING:
    from ._engine import Engine

T = TypeVar("T")
FallThrough = Callable[[list[ResourceKey]], None]
"""Hands keys that failed at a derived source on to their next sources, at once."""


@final
class GroupRun:
    """Resolves one group of owned flights through the priority chain."""

    def __init__(
        self,
        engine: Engine,
        flights: dict[ResourceKey, Flight],
        ctx: FetchContext,
        diag: DiagnosticsCollector,
        *,
        refresh: bool,
        force: bool = False,
    ) -> None:
        self._engine = engine
        self._flights = flights
        self.window = FlightWindow(ctx, engine.clock)
        self._diag = diag
        self._refresh = refresh
        self._force = force  # no cache fallback: the caller asked to bypass the cache
        self._chains: dict[ResourceKey, tuple[int, ...]] = {}
        self._failures: dict[ResourceKey, list[SourceFailure]] = {}
        self._stale: dict[ResourceKey, SnapshotValue[Any]] = {}
        self._cycles: dict[ResourceKey, DependencyCycleError] = {}
        self._queued: list[SnapshotValue[Any]] = []
        self._batches: dict[int, tuple[list[ResourceKey], asyncio.Future[set[ResourceKey]]]] = {}
        self._flusher: asyncio.Task[None] | None = None

    @property
    def _ctx(self) -> FetchContext:
        """The group's context; its deadline moves when a caller with more time joins."""
        return self.window.ctx

    async def run(self) -> None:
        """Resolve every flight; whatever happens, no flight is left unresolved."""
        reason: BaseException | None = None
        leased: set[ResourceKey] = set()
        try:
            keys = self._prepare()
            if self._engine.cache.coordinates_fetches:
                keys = await self._coordinate(keys, leased)
            await self._walk(keys, 0)
            await self._drain()
        except BaseException as error:
            reason = error
            raise
        finally:
            await self._stop_flusher()
            self._abandon(reason)
            await self._engine.cache.release(list(leased))
            if self._refresh:
                self._engine.count_refreshes(self._flights.values())

    # -- the chain walk ---------------------------------------------------------------------

    def _prepare(self) -> list[ResourceKey]:
        chains = self._engine.chains
        hits, misses = chains.hits, chains.misses
        for key in self._flights:
            supported, broken = chains.chain(key)
            self._chains[key] = tuple(sorted(supported))
            for name in broken:
                self._fail(key, name, SourceProtocolError(f"{name}: supports() failed for {key}"))
        self._diag.support_cache_hits += chains.hits - hits
        self._diag.support_cache_misses += chains.misses - misses
        return list(self._flights)

    async def _coordinate(
        self, keys: list[ResourceKey], leased: set[ResourceKey]
    ) -> list[ResourceKey]:
        """With a shared cache tier: lease ``keys``; wait for keys other processes are fetching
        and serve them from the cache; take over leases that expire. Return the keys this
        process must fetch itself (``leased`` collects the leases to give back)."""
        engine, clock = self._engine, self._engine.clock
        leased |= await engine.cache.lease(keys)
        waiting = [key for key in keys if key not in leased]
        while waiting and not self._ctx.expired(clock):
            arrived = await engine.cache.wait_for(
                waiting,
                wait_seconds=self._ctx.remaining_seconds(clock),
                now=clock.now(),
                policies={key: engine.policy_for(key) for key in waiting},
            )
            for key, lookup in arrived.items():
                if lookup.value is not None and lookup.fresh and key in self._flights:
                    engine.flights.resolve(self._flights[key], lookup.value)
            waiting = [key for key in waiting if not self._flights[key].future.done()]
            taken = await engine.cache.lease(waiting) if waiting else set()
            leased |= taken
            if not arrived and not taken:
                break  # no progress: fetch them here rather than spin
            waiting = [key for key in waiting if key not in taken]
        return [key for key in keys if not self._flights[key].future.done()]

    async def _walk(self, keys: list[ResourceKey], start: int) -> None:
        """Try ``keys`` at sources ``start..``; a key no source could resolve is finished at
        once (its future must not wait for the rest of the group).

        Each key goes to the next source in its own chain. Keys bound for the same source are
        dispatched together (one batch); keys bound for different sources go concurrently, so
        a key never waits for a source it does not use.
        """
        if not keys:
            return
        if self._ctx.expired(self._engine.clock):
            await self._finish_failed(keys)
            return
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
            async with asyncio.TaskGroup() as group:
                for index, part in steps[1:]:
                    group.create_task(self._step(index, part))
                await self._step(*steps[0])

    async def _step(self, index: int, keys: list[ResourceKey]) -> None:
        """Try ``keys`` at source ``index``; failures go on down their own chains."""
        source = self._engine.sources[index]
        if source.kind is SourceKind.BATCH:
            await self._walk(await self._gather_batch(source, keys), index + 1)
            return
        if source.kind is SourceKind.SINGLE:
            await self._walk(await self._dispatch(source, keys), index + 1)
            return
        # A derived key may wait on a sibling of this level; a sibling that fails here must
        # move on (and finish) at once, not when the whole level is done, or the two deadlock.
        async with asyncio.TaskGroup() as group:

            def fall_through(failed: list[ResourceKey]) -> None:
                if failed:
                    group.create_task(self._walk(failed, index + 1))

            await self._derive_level(source, keys, fall_through)

    async def _gather_batch(
        self, source: RegisteredSource, keys: list[ResourceKey]
    ) -> list[ResourceKey]:
        """Keys reaching one batch source in the same turn of the event loop (say, after
        failing at different higher sources at once) share its calls instead of each making
        their own. Return the failed ones among ``keys``."""
        gathering = self._batches.get(source.index)
        if gathering is not None:
            gathering[0].extend(keys)
            failed = await gathering[1]
            return [key for key in keys if key in failed]
        batch: list[ResourceKey] = list(keys)
        outcome: asyncio.Future[set[ResourceKey]] = asyncio.get_running_loop().create_future()
        self._batches[source.index] = (batch, outcome)
        try:
            await asyncio.sleep(0)  # one turn for the others to arrive
        finally:
            del self._batches[source.index]
        try:
            failed = set(await self._dispatch(source, batch))
        except BaseException:
            outcome.cancel()  # the gatherers fail with us rather than wait forever
            raise
        outcome.set_result(failed)
        return [key for key in keys if key in failed]

    async def _dispatch(
        self, source: RegisteredSource, keys: list[ResourceKey]
    ) -> list[ResourceKey]:
        failed: list[ResourceKey] = []
        if source.kind is SourceKind.BATCH:
            size = source.max_batch_size or len(keys)
            chunks = [tuple(keys[i : i + size]) for i in range(0, len(keys), size)]
            self._diag.batch_chunks += len(chunks)

            async def fetch_chunk(chunk: tuple[ResourceKey, ...]) -> None:
                failed.extend(await self._fetch_chunk(source, chunk))

            await self._pool(chunks, fetch_chunk)
        else:

            async def fetch_one(key: ResourceKey) -> None:
                if not await self._fetch_one(source, key):
                    failed.append(key)

            await self._pool(keys, fetch_one)
        return failed

    async def _pool(self, items: Sequence[T], work: Callable[[T], Awaitable[None]]) -> None:
        """Run ``work`` over ``items`` in order with at most ``max_pending_tasks`` workers; the
        first worker is this task itself, so one item costs no task at all."""
        pending = iter(items)
        engine = self._engine

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
        async with asyncio.TaskGroup() as group:
            for _ in range(extra):
                group.create_task(worker())
            await worker()

    # -- single and batch sources -----------------------------------------------------------

    async def _fetch_one(self, source: RegisteredSource, key: ResourceKey) -> bool:
        fetch, ctx = source.fetch, self._ctx
        assert fetch is not None

        async def invoke(_keys: tuple[ResourceKey, ...]) -> SourcePayload[Any]:
            return normalize_payload(await fetch(key, ctx))

        result = await self._engine.gate.call(
            source, (key,), self.window, self._diag, invoke, self._judge
        )
        if result.error is not None or result.value is None:
            self._fail_all(source, (key,), result)
            return False
        return key in self._accept(source, {key: result.value}, result)

    async def _fetch_chunk(
        self, source: RegisteredSource, chunk: tuple[ResourceKey, ...]
    ) -> list[ResourceKey]:
        fetch_many, ctx = source.fetch_many, self._ctx
        assert fetch_many is not None

        async def invoke(called: tuple[ResourceKey, ...]) -> dict[ResourceKey, SourcePayload[Any]]:
            return _check_batch(source, called, await fetch_many(called, ctx))

        result = await self._engine.gate.call(
            source, chunk, self.window, self._diag, invoke, self._judge
        )
        if result.error is not None or result.value is None:
            return self._fail_all(source, chunk, result)
        failed = self._fail_blocked(source, result)
        payloads = result.value
        for key in result.called:
            if key not in payloads:
                missing = SourceUnavailableError(f"{source.name} omitted {key} from its batch")
                self._fail(key, source.name, missing, result.attempts)
                failed.append(key)
        accepted = self._accept(source, payloads, result)
        failed.extend(key for key in payloads if key not in accepted)
        return failed

    def _judge(self, called: tuple[ResourceKey, ...], result: object) -> Collection[ResourceKey]:
        """Keys whose payload came back already past TTL: a failed circuit outcome."""
        factory, now = self._engine.factory, self._engine.clock.now()
        if isinstance(result, SourcePayload):
            return called if factory.is_stale_payload(called[0], result, now) else ()
        assert isinstance(result, Mapping)
        return [key for key, item in result.items() if factory.is_stale_payload(key, item, now)]

    # -- derived sources --------------------------------------------------------------------

    async def _derive_level(
        self, source: RegisteredSource, keys: list[ResourceKey], fall_through: FallThrough
    ) -> None:
        deps_of: dict[ResourceKey, tuple[ResourceKey, ...]] = {}
        failed: list[ResourceKey] = []
        assert source.dependencies is not None
        for key in keys:
            try:
                deps_of[key] = key_tuple("dependencies", source.dependencies(key))
            except Exception as error:
                self._fail(key, source.name, error)
                failed.append(key)
        fall_through(failed)
        if deps_of:
            await self._derive_when_ready(source, deps_of, fall_through)

    async def _derive_when_ready(
        self,
        source: RegisteredSource,
        deps_of: dict[ResourceKey, tuple[ResourceKey, ...]],
        fall_through: FallThrough,
    ) -> None:
        """Resolve every dependency as its own flight, then derive each key once its own
        dependencies are done (never waiting for another key's)."""
        engine = self._engine
        union = list(dict.fromkeys(dep for deps in deps_of.values() for dep in deps))
        outcomes, claims = await engine.lookup_and_claim(union, self._ctx, self._diag)
        waiting, cycled = self._check_cycles(source, deps_of, claims)
        fall_through(cycled)
        try:
            with engine.holding(claims):
                await self._derive_as_ready(source, waiting, outcomes, claims, fall_through)
        finally:
            for key in deps_of:
                self._flights[key].waiting_on = frozenset()

    def _check_cycles(
        self,
        source: RegisteredSource,
        deps_of: dict[ResourceKey, tuple[ResourceKey, ...]],
        claims: Mapping[ResourceKey, Flight],
    ) -> tuple[dict[ResourceKey, tuple[ResourceKey, ...]], list[ResourceKey]]:
        waiting: dict[ResourceKey, tuple[ResourceKey, ...]] = {}
        failed: list[ResourceKey] = []
        flights = self._engine.flights
        for key, deps in deps_of.items():
            path = next(
                (p for dep in deps if dep in claims if (p := flights.wait_cycle(key, claims[dep]))),
                None,
            )
            if path is not None:
                self._cycles[key] = error = DependencyCycleError(path)
                self._fail(key, source.name, error)
                failed.append(key)
                continue
            self._flights[key].waiting_on = frozenset(dep for dep in deps if dep in claims)
            waiting[key] = deps
        return waiting, failed

    async def _derive_as_ready(
        self,
        source: RegisteredSource,
        waiting: dict[ResourceKey, tuple[ResourceKey, ...]],
        outcomes: dict[ResourceKey, Outcome],
        claims: Mapping[ResourceKey, Flight],
        fall_through: FallThrough,
    ) -> None:
        clock = self._engine.clock
        while waiting:
            for dep, flight in claims.items():
                if dep not in outcomes and flight.future.done():
                    outcomes[dep] = flight.future.result()
            ready = {k: deps for k, deps in waiting.items() if all(d in outcomes for d in deps)}
            if ready:
                for key in ready:
                    del waiting[key]
                await self._derive_ready(source, ready, outcomes, fall_through)
                continue
            pending = {
                claims[d].future for deps in waiting.values() for d in deps if d not in outcomes
            }
            done, _ = await asyncio.wait(
                pending,
                timeout=self._ctx.remaining_seconds(clock),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done and not self._ctx.expired(clock):
                continue  # a joiner extended the deadline while we waited
            if not done:
                for key in waiting:
                    late = SnapshotDeadlineExceededError(
                        f"deadline passed waiting for {key}'s dependencies"
                    )
                    self._fail(key, source.name, late)
                fall_through(list(waiting))
                return

    async def _derive_ready(
        self,
        source: RegisteredSource,
        deps_of: Mapping[ResourceKey, tuple[ResourceKey, ...]],
        outcomes: Mapping[ResourceKey, Outcome],
        fall_through: FallThrough,
    ) -> None:
        async def derive(key: ResourceKey) -> None:
            if not await self._derive_one(source, key, deps_of[key], outcomes):
                fall_through([key])

        await self._pool(list(deps_of), derive)

    async def _derive_one(
        self,
        source: RegisteredSource,
        key: ResourceKey,
        deps: tuple[ResourceKey, ...],
        outcomes: Mapping[ResourceKey, Outcome],
    ) -> bool:
        errors = {dep: o for dep in deps if isinstance(o := outcomes[dep], Exception)}
        if errors:
            cycle = _cycle_through(key, errors.values())
            if cycle is not None:
                self._cycles[key] = cycle
                self._fail(key, source.name, cycle)
            else:
                self._fail(key, source.name, DependencyResolutionError(key, source.name, errors))
            return False
        engine, ctx = self._engine, self._ctx
        values = {dep: engine.consume(outcomes[dep], ctx) for dep in deps}  # type: ignore[arg-type]
        dependencies = Snapshot(ctx.snapshot_id, ctx.requested_at, values)
        derive = source.derive
        assert derive is not None

        async def invoke(_keys: tuple[ResourceKey, ...]) -> SourcePayload[Any]:
            return normalize_payload(await derive(key, dependencies, ctx))

        result = await engine.gate.call(
            source, (key,), self.window, self._diag, invoke, self._judge
        )
        if result.error is not None or result.value is None:
            self._fail_all(source, (key,), result)
            return False
        versions = {dep: value.version for dep, value in values.items()}
        oldest = min((value.observed_at for value in values.values()), default=None)
        accepted = self._accept(
            source, {key: result.value}, result, versions=versions, oldest=oldest
        )
        return key in accepted

    # -- results ----------------------------------------------------------------------------

    def _accept(
        self,
        source: RegisteredSource,
        payloads: Mapping[ResourceKey, SourcePayload[Any]],
        result: GateResult[Any],
        *,
        versions: Mapping[ResourceKey, str] | None = None,
        oldest: float | None = None,
    ) -> set[ResourceKey]:
        """Make values of ``payloads``, commit the good ones; return the keys resolved."""
        made: list[SnapshotValue[Any]] = []
        for key, payload in payloads.items():
            value = self._make(source, key, payload, result, versions, oldest)
            if value is None:
                continue
            # A derived value is as old as its oldest input; that is not the deriver's fault.
            derived = source.kind is SourceKind.DERIVED
            if value.stale and not derived and self._engine.policy_for(key).ttl_seconds > 0.0:
                self._keep_stale(source, value)
                continue
            made.append(value)
        self._enqueue(made)
        return {value.key for value in made}

    def _make(
        self,
        source: RegisteredSource,
        key: ResourceKey,
        payload: SourcePayload[Any],
        result: GateResult[Any],
        versions: Mapping[ResourceKey, str] | None,
        oldest: float | None,
    ) -> SnapshotValue[Any] | None:
        try:
            return self._engine.factory.make(
                source,
                key,
                payload,
                attempts=result.attempts,
                latency_ms=result.latency_ms,
                default_observed_at=oldest,
                dependency_versions=versions or {},
            )
        except (SourceProtocolError, PayloadIsolationError) as error:
            if isinstance(error, FutureObservationError):
                self._diag.future_timestamp_rejections += 1
            self._fail(key, source.name, error, result.attempts)
            return None

    def _keep_stale(self, source: RegisteredSource, value: SnapshotValue[Any]) -> None:
        """A stale payload fails this source for the key but stays the fallback of last resort."""
        held = self._stale.get(value.key)
        if held is None or value.observed_at > held.observed_at:
            self._stale[value.key] = value
        stale = SourceUnavailableError(f"{source.name} returned data {value.age_seconds:.3f}s old")
        self._fail(value.key, source.name, stale, value.attempts)

    def _enqueue(self, values: list[SnapshotValue[Any]]) -> None:
        """Queue values for the next batched commit. Everything finished within one turn of
        the event loop is written in one cache call (a fast source's 200 keys: one write)."""
        if not values:
            return
        self._queued.extend(values)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                await self._commit(batch)
        finally:
            self._flusher = None

    async def _drain(self) -> None:
        while self._flusher is not None:
            await self._flusher

    async def _stop_flusher(self) -> None:
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher

    async def _commit(self, values: list[SnapshotValue[Any]]) -> None:
        """One batched cache write, then resolve each key (with the newer cached revision when
        one was published meanwhile)."""
        if not values:
            return
        engine = self._engine
        self._diag.cache_batch_writes += 1
        try:
            written = await engine.cache.write(values)
        except PayloadIsolationError:
            written = {}  # the cache cannot copy it: serve our private copy, uncached
        for value in values:
            outcome = engine.prefer_cached(value, written.get(value.key))
            engine.flights.resolve(self._flights[value.key], outcome)

    async def _finish_failed(self, keys: list[ResourceKey]) -> None:
        if not keys:
            return
        await self._commit(self._usable_stale(keys))
        rest = [key for key in keys if not self._flights[key].future.done()]
        if not rest:
            return
        fallback = {} if self._force else await self._engine.stale_on_error(rest)
        for key in rest:
            outcome: Outcome = fallback.get(key) or self._error_for(key)
            self._engine.flights.resolve(self._flights[key], outcome)

    def _usable_stale(self, keys: list[ResourceKey]) -> list[SnapshotValue[Any]]:
        """Stale data sources handed back, where the key's policy lets it be served on error."""
        usable: list[SnapshotValue[Any]] = []
        now = self._engine.clock.now()
        for key in keys:
            held = self._stale.pop(key, None)
            if held is None:
                continue
            policy = self._engine.policy_for(key)
            if policy.allow_stale_on_error and policy.is_usable_stale(now - held.observed_at):
                usable.append(held)
        return usable

    def _error_for(self, key: ResourceKey) -> Exception:
        cycle = self._cycles.get(key)
        if cycle is not None:
            return cycle
        failures = tuple(self._failures.get(key, ()))
        if self._ctx.expired(self._engine.clock):
            tried = "; ".join(failure.format(max_message_length=120) for failure in failures[:3])
            detail = f" ({tried})" if tried else ""
            return SnapshotDeadlineExceededError(
                f"deadline passed before {key} was resolved{detail}"
            )
        return ResourceResolutionError(key, failures)

    def _fail(self, key: ResourceKey, source: str, error: BaseException, attempts: int = 1) -> None:
        failure = SourceFailure.from_exception(source, error, attempts)
        self._failures.setdefault(key, []).append(failure)

    def _fail_all(
        self, source: RegisteredSource, keys: Iterable[ResourceKey], result: GateResult[Any]
    ) -> list[ResourceKey]:
        failed = self._fail_blocked(source, result)
        error = result.error or SourceUnavailableError(f"{source.name} returned nothing")
        for key in keys:
            if key not in result.blocked:
                self._fail(key, source.name, error, result.attempts)
                failed.append(key)
        return failed

    def _fail_blocked(self, source: RegisteredSource, result: GateResult[Any]) -> list[ResourceKey]:
        for key, error in result.blocked.items():
            self._fail(key, source.name, error, 0)
        return list(result.blocked)

    def _abandon(self, reason: BaseException | None) -> None:
        flights = self._engine.flights
        for key, flight in self._flights.items():
            if not flight.future.done():
                why = (
                    "cancelled"
                    if reason is None or isinstance(reason, asyncio.CancelledError)
                    else repr(reason)
                )
                flights.resolve(
                    flight, SourceUnavailableError(f"resolution of {key} stopped: {why}")
                )


def _cycle_through(key: ResourceKey, errors: Iterable[Exception]) -> DependencyCycleError | None:
    """If a dependency failed on a cycle that passes through ``key``, the same cycle, seen from
    ``key`` (so every member of a cycle reports the loop, not a dependency failure)."""
    for error in errors:
        if isinstance(error, DependencyCycleError) and key in error.path:
            loop = error.path[:-1] if error.path[0] == error.path[-1] else error.path
            at = loop.index(key)
            return DependencyCycleError((*loop[at:], *loop[:at], key))
    return None


def _check_batch(
    source: RegisteredSource, asked: tuple[ResourceKey, ...], result: object
) -> dict[ResourceKey, SourcePayload[Any]]:
    """A batch result must map asked keys to payloads (or bare values)."""
    if not isinstance(result, Mapping):
        raise SourceProtocolError(
            f"{source.name}: fetch_many must return a mapping, got {type(result).__name__}"
        )
    wanted = set(asked)
    payloads: dict[ResourceKey, SourcePayload[Any]] = {}
    for key, item in result.items():
        if key not in wanted:
            raise SourceProtocolError(f"{source.name}: fetch_many returned unrequested key {key!r}")
        payloads[key] = normalize_payload(item)
    return payloads
