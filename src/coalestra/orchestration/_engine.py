"""The engine shared by every build and session of one builder: steps 2-3 of a build (one
batched cache read, single-flight claims and waits), background refreshes, and owned tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, final

from ..core import (
    CacheWriteResult,
    CacheWriteStatus,
    Clock,
    DiagnosticsCollector,
    FetchContext,
    FreshnessPolicy,
    FreshnessPolicyProvider,
    PayloadIsolator,
    RefreshMode,
    ResourceKey,
    ResourceResolutionError,
    SnapshotValue,
    SourceFailure,
    SourceUnavailableError,
)
from ..observability._instrumentation import (
    FRESH as _FRESH,
)
from ..observability._instrumentation import (
    MISS as _MISS,
)
from ..observability._instrumentation import (
    STALE_WHILE_REVALIDATE as _STALE_WHILE_REVALIDATE,
)
from ..observability._instrumentation import Instrumentation
from ._cache_access import CacheAccess
from ._counters import EngineCounters
from ._gate import SourceGate
from ._group import GroupRun
from ._ledger import JOINED_SOURCE
from ._results import ValueFactory
from ._singleflight import Flight, FlightGroup, Outcome, SingleFlight
from ._sources import RegisteredSource, SourceChains

Refresh = tuple[DiagnosticsCollector, Mapping[ResourceKey, str]]
"""A background refresh: the diagnostics of the build that scheduled it, and why each key is
refreshed (``"stale_while_revalidate"`` or ``"refresh_ahead"``)."""

_REFRESH_AHEAD = RefreshMode.REFRESH_AHEAD.value


@final
class Engine:
    """Resolution machinery; the builder and sessions are thin layers over it."""

    def __init__(
        self,
        *,
        sources: tuple[RegisteredSource, ...],
        chains: SourceChains,
        cache: CacheAccess,
        gate: SourceGate,
        factory: ValueFactory,
        isolator: PayloadIsolator,
        policies: FreshnessPolicyProvider,
        clock: Clock,
        report: Instrumentation,
        counters: EngineCounters,
        max_pending_tasks: int,
    ) -> None:
        self.sources = sources
        self.source_order = {source.name: source.index for source in sources}
        self.chains = chains
        self.cache = cache
        self.gate = gate
        self.factory = factory
        self.isolator = isolator
        self.policy_for = policies.resolve
        self.clock = clock
        self.report = report
        self.counters = counters
        self.max_pending_tasks = max_pending_tasks
        self.flights = SingleFlight()
        self.active_workers = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.refresh_tasks: set[asyncio.Task[None]] = set()

    # -- steps 2 and 3: one cache read, then single-flight ----------------------------------

    async def lookup_and_claim(
        self,
        keys: Sequence[ResourceKey],
        ctx: FetchContext,
        diag: DiagnosticsCollector,
        *,
        force_refresh: bool = False,
    ) -> tuple[dict[ResourceKey, SnapshotValue[Any]], dict[ResourceKey, Flight]]:
        """Serve what the cache can; claim flights (own or join) for the rest.

        Returns ``(outcomes, claims)``: cache hits (private copies) and the flights to wait on.
        """
        if force_refresh:
            if self.report.enabled:
                self.report.cache_bypassed(keys)
            return {}, self.claim(keys, ctx, diag, force=True)
        policy_for = self.policy_for
        policies = {key: policy_for(key) for key in keys}
        now = self.clock.now()
        lookups = await self.cache.read(keys, now, policies)
        diag.cache_batch_reads += 1
        hits: dict[ResourceKey, SnapshotValue[Any]] = {}
        needed: list[ResourceKey] = []
        refresh: dict[ResourceKey, str] = {}  # key -> why: the policy's refresh mode
        swr = RefreshMode.STALE_WHILE_REVALIDATE
        ahead = RefreshMode.REFRESH_AHEAD
        for key in keys:
            lookup = lookups.get(key)
            value = None if lookup is None else lookup.value
            if value is None or lookup is None:
                needed.append(key)
                continue
            policy = policies[key]
            # Caches return revisions as stored; the build restamps what it serves.
            age = now - value.observed_at
            if age < 0.0:
                age = 0.0
            if lookup.fresh:
                hits[key] = value._served(now, age, False)
                if policy.refresh_mode is ahead and policy.should_refresh_ahead(age):
                    refresh[key] = _REFRESH_AHEAD
            elif lookup.usable_stale and policy.refresh_mode is swr:
                hits[key] = value._served(now, age, True)
                refresh[key] = _STALE_WHILE_REVALIDATE
            else:
                needed.append(key)
        diag.cache_hits += len(hits)
        diag.cache_misses += len(needed)
        if self.report.enabled:
            self._report_lookups(keys, hits, needed, refresh)
        if refresh:
            self.refresh(refresh, ctx, diag)
        return hits, self.claim(needed, ctx, diag) if needed else {}

    def _report_lookups(
        self,
        keys: Sequence[ResourceKey],
        hits: Mapping[ResourceKey, SnapshotValue[Any]],
        needed: Sequence[ResourceKey],
        refresh: Mapping[ResourceKey, str],
    ) -> None:
        report = self.report
        swr = [key for key, why in refresh.items() if why == _STALE_WHILE_REVALIDATE]
        if report.metrics_on:
            count = report.count_by_type
            if needed or swr:
                swr_keys = set(swr)
                fresh = [key for key in hits if key not in swr_keys]
                report.cache_accesses(_FRESH, count(fresh))
                report.cache_accesses(_STALE_WHILE_REVALIDATE, count(swr))
                report.cache_accesses(_MISS, count(needed))
            else:  # every key was a fresh hit: the request's own (memoized) counts
                report.cache_accesses(_FRESH, count(keys))
        if report.events_on:
            swr_keys = set(swr)
            report.cache_hits(
                (key, _STALE_WHILE_REVALIDATE if key in swr_keys else _FRESH) for key in hits
            )

    def claim(
        self,
        keys: Iterable[ResourceKey],
        ctx: FetchContext,
        diag: DiagnosticsCollector,
        *,
        force: bool = False,
    ) -> dict[ResourceKey, Flight]:
        """Join each key's flight, or own a new one; owned keys start resolving in one task.

        ``force``: owned keys bypass the cache entirely, so they fail rather than fall back to
        the cached revision when every source fails (a session's forced revalidation).
        """
        flights = self.flights
        claims: dict[ResourceKey, Flight] = {}
        owned: list[ResourceKey] = []
        for key in keys:
            flight = flights.get(key)
            if flight is None:
                owned.append(key)
            else:
                claims[key] = flight
                flight.group.extend(ctx.deadline_monotonic)
        joined = len(claims)
        if joined:
            diag.coalesced_requests += joined
            if self.report.metrics_on:
                self.report.single_flight_joined(list(claims))
        if owned:
            started = flights.start(owned)
            claims.update(started)
            self._spawn(started, ctx, diag, force=force)
        return claims

    @contextmanager
    def holding(
        self, claims: Mapping[ResourceKey, Flight], holder: FlightGroup | None = None
    ) -> Iterator[None]:
        """Count the caller as a waiter of the claimed flights' groups while inside.

        ``holder`` is the group whose work is waiting (a derivation waiting on dependencies);
        if it is abandoned meanwhile, its holds are released at that moment, not when its task
        unwinds (see :meth:`SingleFlight.release`).
        """
        groups = {flight.group for flight in claims.values()}
        for group in groups:
            group.waiters += 1
            if holder is not None:
                holder.holds.append(group)
        try:
            yield
        finally:
            for group in groups:
                if holder is None:
                    self.flights.release(group)
                elif group in holder.holds:  # not already released with an abandoned holder
                    holder.holds.remove(group)
                    self.flights.release(group)

    async def wait(
        self, claims: Mapping[ResourceKey, Flight], ctx: FetchContext
    ) -> dict[ResourceKey, Outcome]:
        """Wait for the claimed flights until ``ctx``'s own deadline; a flight still running
        then goes on for others, and this caller gets a deadline failure for its key."""
        with self.holding(claims):
            pending = {flight.future for flight in claims.values() if not flight.future.done()}
            if pending:
                await asyncio.wait(pending, timeout=ctx.remaining_seconds(self.clock))
                # A flight running under this very deadline is cut at it on its own: give it
                # the moment it needs to settle, so the caller sees where time ran out.
                bound = {
                    flight.future
                    for flight in claims.values()
                    if not flight.future.done() and _ends_by(flight, ctx)
                }
                if bound:
                    await asyncio.wait(bound, timeout=_SETTLE_SECONDS)
            # Read outcomes before letting go: releasing may tear down flights nobody else wants.
            outcomes: dict[ResourceKey, Outcome] = {}
            late = 0
            for key, flight in claims.items():
                if flight.future.done():
                    outcomes[key] = flight.future.result()
                else:
                    late += 1
                    outcomes[key] = _joined_too_long(key)
        self.counters.deadline_exceeded += late
        return outcomes

    # -- background work ---------------------------------------------------------------------

    def refresh(
        self, reasons: Mapping[ResourceKey, str], ctx: FetchContext, diag: DiagnosticsCollector
    ) -> None:
        """Refresh the keys of ``reasons`` (key -> the refresh mode that asked) in an owned
        background task (keys already in flight are skipped)."""
        wanted = {key: why for key, why in reasons.items() if key not in self.flights}
        if not wanted:
            return
        diag.refresh_scheduled += len(wanted)
        if self.report.enabled:
            for key, why in wanted.items():
                self.report.refresh_scheduled(key, why, ctx.snapshot_id)
        started = self.flights.start(list(wanted), keep_alive=True)
        background = FetchContext(
            requested_at=self.clock.now(), metadata=ctx.metadata, snapshot_id=ctx.snapshot_id
        )
        self._spawn(started, background, DiagnosticsCollector(), refresh_for=(diag, wanted))

    def _spawn(
        self,
        flights: dict[ResourceKey, Flight],
        ctx: FetchContext,
        diag: DiagnosticsCollector,
        *,
        refresh_for: Refresh | None = None,
        force: bool = False,
    ) -> None:
        run = GroupRun(self, flights, ctx, diag, refresh_for=refresh_for, force=force)
        task = asyncio.get_running_loop().create_task(run.run())
        group = next(iter(flights.values())).group
        group.task, group.window = task, run.window
        owner = self.refresh_tasks if refresh_for is not None else self.tasks
        owner.add(task)
        task.add_done_callback(owner.discard)
        task.add_done_callback(_observe)

    def count_refreshes(
        self,
        flights: Iterable[Flight],
        refresh: Refresh,
        *,
        cancelled: bool,
        failed: Mapping[ResourceKey, Exception],
    ) -> None:
        """Called when a refresh group ends: count each key's outcome in the diagnostics of the
        build that scheduled it (they show there if it ends before that build does), and
        report it. ``failed``: keys whose sources all failed, served from the cache instead."""
        scheduled_by, reasons = refresh
        report = self.report
        for flight in flights:
            outcome = flight.future.result() if flight.future.done() else None
            if flight.key in failed:
                outcome = failed[flight.key]
            if isinstance(outcome, SnapshotValue):
                scheduled_by.refresh_completed += 1
            else:
                scheduled_by.refresh_failed += 1
            if not report.enabled:
                continue
            why = reasons.get(flight.key, _STALE_WHILE_REVALIDATE)
            if isinstance(outcome, SnapshotValue):
                report.refresh_completed(flight.key, outcome.source, why)
            elif cancelled:
                report.refresh_cancelled(flight.key)
            else:
                error = outcome if isinstance(outcome, Exception) else None
                report.refresh_failed(flight.key, why, error or SourceUnavailableError("no value"))

    # -- results ---------------------------------------------------------------------------

    def prefer_cached(
        self, ours: SnapshotValue[Any], written: CacheWriteResult | None
    ) -> SnapshotValue[Any]:
        """After a conditional write: keep the cache's revision when it won (it is newer, a
        duplicate, or of higher authority and still fresh), so every reader sees one version."""
        if written is None or written.stored or written.previous is None:
            return ours
        held = written.previous
        age = max(0.0, self.clock.now() - held.observed_at)
        policy = self.policy_for(ours.key)
        if written.status is CacheWriteStatus.IGNORED_LOWER_AUTHORITY and not policy.is_fresh(age):
            return ours
        return held._evolve(
            held.value, age_seconds=age, stale=not policy.is_fresh(age), from_cache=True
        )

    async def stale_on_error(self, keys: Sequence[ResourceKey]) -> dict[ResourceKey, Outcome]:
        """For keys every source failed: a cached value that is fresh (published meanwhile) or
        usable-stale under ``allow_stale_on_error``."""
        policies = {key: self.policy_for(key) for key in keys}
        now = self.clock.now()
        lookups = await self.cache.read(keys, now, policies)
        served: dict[ResourceKey, Outcome] = {}
        for key in keys:
            lookup = lookups.get(key)
            if lookup is None or lookup.value is None:
                continue
            if lookup.fresh or (lookup.usable_stale and policies[key].allow_stale_on_error):
                age = max(0.0, now - lookup.value.observed_at)
                served[key] = lookup.value._served(now, age, not lookup.fresh)
        return served

    def consume(self, outcome: SnapshotValue[Any], ctx: FetchContext) -> SnapshotValue[Any]:
        """A private copy of a flight's value for one reader, with its age as of now."""
        age = max(0.0, self.clock.now() - outcome.observed_at)
        policy: FreshnessPolicy = self.policy_for(outcome.key)
        return self.isolator.clone_snapshot_value(
            outcome,
            context=f"{outcome.key} in snapshot {ctx.snapshot_id!r}",
            age_seconds=age,
            stale=not policy.is_fresh(age),
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def wait_for_refreshes(self) -> None:
        """Wait until no background refresh is running (including ones started meanwhile)."""
        while self.refresh_tasks:
            await asyncio.gather(*list(self.refresh_tasks), return_exceptions=True)

    async def shutdown(self, *, cancel_refreshes: bool) -> None:
        """End every owned task: refreshes are awaited (or cancelled), flights cancelled."""
        if cancel_refreshes:
            for task in self.refresh_tasks:
                task.cancel()
        await self.wait_for_refreshes()
        while self.tasks:
            pending = list(self.tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


_SETTLE_SECONDS = 0.01
"""How long past its deadline a caller waits for a flight cut at that same deadline to record
its failure (it takes a few loop turns, no real time); bounded so no wait outlives it long."""


def _ends_by(flight: Flight, ctx: FetchContext) -> bool:
    """True when ``flight`` runs under a deadline no later than ``ctx``'s."""
    window = flight.group.window
    ours = ctx.deadline_monotonic
    if window is None or ours is None:
        return False
    theirs = window.ctx.deadline_monotonic
    return theirs is not None and theirs <= ours


def _joined_too_long(key: ResourceKey) -> ResourceResolutionError:
    """A caller's deadline passed while another build's flight still resolved ``key``."""
    failure = SourceFailure(
        JOINED_SOURCE,
        "SnapshotDeadlineExceededError",
        f"snapshot deadline exceeded while waiting for the in-flight resolution of {key}",
        0,
    )
    return ResourceResolutionError(key, (failure,))


def _observe(task: asyncio.Task[None]) -> None:
    """Nobody awaits a group's task (callers wait on its flights, which it always resolves):
    retrieve how it ended, so a BaseException a source raised is not logged as unretrieved."""
    if not task.cancelled():
        task.exception()
