"""The engine shared by every build and session of one builder: steps 2-3 of a build (one
batched cache read, single-flight claims and waits), background refreshes, and owned tasks.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, final

from ..core import (
    CacheLookup,
    CacheWriteResult,
    CacheWriteStatus,
    Clock,
    DiagnosticsCollector,
    FetchContext,
    FreshnessPolicy,
    FreshnessPolicyProvider,
    PayloadIsolationError,
    PayloadIsolator,
    RefreshMode,
    ResourceKey,
    ResourceResolutionError,
    SnapshotValue,
    SourceFailure,
    SourceUnavailableError,
)
from ..core._isolation import located
from ..core._lookups import MISS
from ..core._validation import ReadOnlyDict
from ..observability._instrumentation import Instrumentation
from ..observability._names import FRESH as _FRESH
from ..observability._names import MISS as _MISS
from ..observability._names import STALE_WHILE_REVALIDATE as _STALE_WHILE_REVALIDATE
from ._batching import BatchCollector
from ._cache_access import CacheAccess
from ._copies import SourceCopies, hand_out
from ._counters import EngineCounters
from ._flights import Flight, Outcome, Raised, SingleFlight
from ._gate import SourceGate
from ._group import GroupRun
from ._inputs import keep_inputs
from ._ledger import JOINED_SOURCE, as_resolution_error
from ._machinery import Refresh
from ._notfound import NotFoundMemory
from ._payloads import ValueFactory
from ._reconcile import Reconciler
from ._sources import RegisteredSource, SourceChains
from ._view import BuildView

_SWR = RefreshMode.STALE_WHILE_REVALIDATE


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
        copies: SourceCopies,
        policies: FreshnessPolicyProvider,
        clock: Clock,
        report: Instrumentation,
        counters: EngineCounters,
        max_pending_tasks: int,
        batch_window_seconds: float | None = None,
    ) -> None:
        self.sources = sources
        self.source_order = {source.name: source.index for source in sources}
        self.chains = chains
        self.cache = cache
        self.gate = gate
        self.factory = factory
        self.isolator = isolator
        self.copies = copies  # copies off the loop, in the builder's copy runner
        self.policy_for = policies.resolve
        self.clock = clock
        self.report = report
        self.counters = counters
        self.max_pending_tasks = max_pending_tasks
        self.flights = SingleFlight()
        self.active_workers = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.refresh_tasks: set[asyncio.Task[None]] = set()
        self.closed = False  # set by shutdown(): no background refresh starts after it
        self.not_found = NotFoundMemory(None, clock)  # the builder sets its TTL (opt-in)
        self.batches = BatchCollector(gate, clock, counters, self.tasks, batch_window_seconds)

    # -- steps 2 and 3: one cache read, then single-flight ----------------------------------

    async def resolve(
        self,
        keys: Sequence[ResourceKey],
        ctx: FetchContext,
        diag: DiagnosticsCollector,
        view: BuildView,
        *,
        force_refresh: bool = False,
    ) -> tuple[dict[ResourceKey, SnapshotValue[Any]], dict[ResourceKey, Exception]]:
        """Resolve ``keys`` for one build (or session stage) into private values and per-key
        errors, consistent with ``view`` (see :mod:`._view`).

        Raises:
            Exception: whatever the cache raised, as it is.
        """
        values, claims = await self.lookup_and_claim(
            keys, ctx, diag, view, force_refresh=force_refresh
        )
        errors: dict[ResourceKey, Exception] = {}
        # A session stage always checks: its view holds pinned revisions the cache knows
        # nothing of, and the inputs of what it serves (._inputs).
        check = claims or view.session or not self.cache.validates_dependencies
        if check:
            values = dict(values)  # the build's first reading stays as it was read
        if claims:
            joined = view.joined
            ready: dict[ResourceKey, SnapshotValue[Any]] = {}
            for key, outcome in (await self.wait(claims, ctx)).items():
                if isinstance(outcome, Exception):
                    if type(outcome) is Raised:
                        raise outcome.error
                    errors[key] = as_resolution_error(key, outcome)
                else:
                    ready[key] = outcome
            if ready:
                await hand_out(self, ready, ctx, joined, values, errors)
        if view.session:
            await keep_inputs(self, view, values.values())
        if check:
            await Reconciler(self, ctx, diag, view).reconcile(values, errors)
        return values, errors

    async def lookup_and_claim(
        self,
        keys: Sequence[ResourceKey],
        ctx: FetchContext,
        diag: DiagnosticsCollector,
        view: BuildView,
        *,
        force_refresh: bool = False,
    ) -> tuple[dict[ResourceKey, SnapshotValue[Any]], dict[ResourceKey, Flight]]:
        """Serve what ``view`` or the cache holds; claim flights (own or join) for the rest.

        Keys ``view`` already holds are not read again. Returns ``(values, claims)``: values
        served from the cache (private copies) and the flights to wait on.
        """
        if view.empty:
            if force_refresh:
                self._bypass(keys, diag)
                return {}, self.claim(keys, ctx, diag, view, force=True)
            return await self._read(keys, ctx, diag, view)
        unknown = [key for key in keys if view.get(key) is None]
        if unknown:
            if force_refresh:
                self._bypass(unknown, diag)
                self.claim(unknown, ctx, diag, view, force=True)
            else:
                await self._read(unknown, ctx, diag, view)
        values: dict[ResourceKey, SnapshotValue[Any]] = {}
        claims: dict[ResourceKey, Flight] = {}
        for key in keys:
            entry = view.get(key)
            if type(entry) is Flight:
                claims[key] = entry
            else:
                assert isinstance(entry, SnapshotValue)
                values[key] = entry
        return values, claims

    def _bypass(self, keys: Sequence[ResourceKey], diag: DiagnosticsCollector) -> None:
        """A revalidation bypasses the cache for ``keys``: each counts as a miss."""
        diag.cache_misses += len(keys)
        if self.report.enabled:
            self.report.cache_bypassed(keys)

    async def _read(
        self,
        keys: Sequence[ResourceKey],
        ctx: FetchContext,
        diag: DiagnosticsCollector,
        view: BuildView,
    ) -> tuple[dict[ResourceKey, SnapshotValue[Any]], dict[ResourceKey, Flight]]:
        """One cache read of ``keys``: fresh hits are served (a refresh-ahead may be scheduled),
        usable values of STALE_WHILE_REVALIDATE keys are served stale (a refresh scheduled),
        anything else is claimed, its usable value kept as the stale-on-error candidate."""
        now = self.clock.now()
        hits: dict[ResourceKey, SnapshotValue[Any]] = {}
        ahead: list[ResourceKey] = []
        # A session stage reads the inputs of the derived values it serves afterwards, from
        # their recorded revisions (._inputs.keep_inputs): its first read is its keys only.
        hits, ahead, rest = self.cache.serve(keys, now, self.policy_for)
        lookups = await self.cache.read(list(rest), now, rest) if rest else {}
        if self.cache.batch_reads:
            diag.cache_batch_reads += 1
        needed: list[ResourceKey] = []
        candidates: dict[ResourceKey, SnapshotValue[Any]] = {}
        swr: list[ResourceKey] = []
        if rest:
            hits, ahead, needed, candidates, swr = _take_rest(keys, rest, lookups, now, hits, ahead)
        diag.cache_hits += len(hits)
        diag.cache_misses += len(needed)
        if self.report.enabled:
            reasons = {
                **dict.fromkeys(ahead, _REFRESH_AHEAD),
                **dict.fromkeys(swr, _STALE_WHILE_REVALIDATE),
            }
            self._report_lookups(keys, hits, needed, reasons)
        if ahead and self.refresh(ahead, ctx, diag, "refresh_ahead"):
            for key in ahead:
                hits[key] = _with_metadata(hits[key], refresh_scheduled=True)
        if swr:
            scheduled = self.refresh(swr, ctx, diag, "stale_while_revalidate")
            for key in swr:
                hits[key] = _with_metadata(
                    hits[key], refresh_mode="stale_while_revalidate", refresh_scheduled=scheduled
                )
        if view.empty:
            view.first_read = hits
        else:
            view.entries.update(hits)
        return hits, self.claim(needed, ctx, diag, view, candidates=candidates) if needed else {}

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
        view: BuildView,
        *,
        force: bool = False,
        candidates: Mapping[ResourceKey, SnapshotValue[Any]] | None = None,
    ) -> dict[ResourceKey, Flight]:
        """Join each key's flight, or own a new one; owned keys start resolving in one task.

        Only a flight another build (or refresh) started counts as a join: keys this build
        already claimed are in ``view`` and never come here.
        ``force``: owned keys bypass the cache entirely, so they fail rather than fall back to
        the cached revision when every source fails (a session's forced revalidation).
        ``candidates``: usable cached values to serve if every source fails.
        """
        flights = self.flights
        entries = view.entries
        claims: dict[ResourceKey, Flight] = {}
        owned: list[ResourceKey] = []
        joined: list[ResourceKey] = []
        for key in keys:
            flight = flights.get(key)
            if flight is None:
                owned.append(key)
            else:
                claims[key] = flight
                joined.append(key)
                flight.group.extend(ctx.deadline_monotonic)
        if joined:
            view.joined.update(joined)
            diag.coalesced_requests += len(joined)
            if self.report.metrics_on:
                self.report.single_flight_joined(joined)
        if owned:
            started = flights.start(owned)
            claims.update(started)
            self._spawn(started, ctx, diag, view, force=force, candidates=candidates)
        entries.update(claims)
        return claims

    async def wait(
        self, claims: Mapping[ResourceKey, Flight], ctx: FetchContext
    ) -> dict[ResourceKey, Outcome]:
        """Wait for the claimed flights until ``ctx``'s own deadline; a flight still running
        then goes on for others, and this caller gets a deadline failure for its key."""
        with self.flights.waiting(claims):
            pending = [flight for flight in claims.values() if not flight.future.done()]
            if pending:
                with self.flights.watching(pending) as all_done:
                    await asyncio.wait((all_done,), timeout=ctx.remaining_seconds(self.clock))
                await self._let_ending_groups_finish(claims)
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

    async def _let_ending_groups_finish(self, claims: Mapping[ResourceKey, Flight]) -> None:
        """At the deadline, a group whose own deadline has passed too is ending right now: its
        calls are failing, and it writes the values its level made before it resolves them.
        Wait for that end (a few loop turns, no real time), so a value resolved before the
        deadline is not lost to it; bounded, since a group may also be giving back cross-process
        leases. A group whose deadline a joiner extended goes on for that joiner; it is not
        waited for."""
        ending = {
            group.task
            for flight in claims.values()
            if not flight.future.done()
            and (group := flight.group).task is not None
            and not group.task.done()
            and group.window is not None
            and group.window.expired()
        }
        if ending:
            await asyncio.wait(ending, timeout=_SETTLE_SECONDS)

    # -- background work ---------------------------------------------------------------------

    def refresh(
        self,
        keys: Sequence[ResourceKey],
        ctx: FetchContext,
        diag: DiagnosticsCollector,
        reason: str,
    ) -> bool:
        """Refresh ``keys`` in an owned background task; return whether refreshes are scheduled.

        At most one refresh runs per key: a key already in flight is not started or counted
        again (but counts as scheduled). Nothing is scheduled once the builder is closed.
        """
        if self.closed:
            return False
        wanted = [key for key in keys if key not in self.flights]
        if not wanted:
            return True
        diag.refresh_scheduled += len(wanted)
        if self.report.enabled:
            for key in wanted:
                self.report.refresh_scheduled(key, reason, ctx.snapshot_id)
        started = self.flights.start(wanted, keep_alive=True)
        background = FetchContext(
            requested_at=self.clock.now(),
            metadata={
                **ctx.metadata,
                "background_refresh": True,
                "refresh_reason": reason,
                "parent_snapshot_id": ctx.snapshot_id,
            },
            snapshot_id=f"{ctx.snapshot_id}:refresh:{uuid.uuid4().hex[:8]}",
        )
        refresh_for = (diag, dict.fromkeys(wanted, reason))
        self._spawn(
            started, background, DiagnosticsCollector(), BuildView(), refresh_for=refresh_for
        )
        return True

    def spawn_private(
        self,
        flights: dict[ResourceKey, Flight],
        ctx: FetchContext,
        diag: DiagnosticsCollector,
        view: BuildView,
    ) -> None:
        """Resolve flights nobody else can join (a build re-deriving a mixed-revision value)."""
        self._spawn(flights, ctx, diag, view, private=True)

    def _spawn(
        self,
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
        run = GroupRun(
            self,
            flights,
            ctx,
            diag,
            view,
            refresh_for=refresh_for,
            force=force,
            candidates=candidates,
            private=private,
        )
        task = asyncio.get_running_loop().create_task(run.run())
        self.flights.running(run.group, task, run.window)
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
        build that scheduled it (they show there if it ends before that build does) and in
        the refresh metric. Only a fresh value from a source completes a refresh; ``failed``:
        keys whose sources all failed, served stale instead."""
        scheduled_by, reasons = refresh
        report = self.report
        for flight in flights:
            outcome = flight.future.result() if flight.future.done() else None
            if flight.key in failed:
                outcome = failed[flight.key]
            done = isinstance(outcome, SnapshotValue) and not outcome.stale
            if done:
                scheduled_by.refresh_completed += 1
            else:
                scheduled_by.refresh_failed += 1
            if not report.enabled:
                continue
            why = reasons.get(flight.key, _STALE_WHILE_REVALIDATE)
            if isinstance(outcome, SnapshotValue) and done:
                report.refresh_completed(flight.key, outcome.source, why)
            elif cancelled:
                report.refresh_cancelled(flight.key)
            else:
                error = outcome if isinstance(outcome, Exception) else None
                report.refresh_failed(flight.key, why, error or SourceUnavailableError("no value"))

    # -- results ---------------------------------------------------------------------------

    def served(
        self, ours: SnapshotValue[Any], written: CacheWriteResult | None, source: str
    ) -> SnapshotValue[Any]:
        """What a build serves after writing ``ours``: its own value, unless the cache kept a
        fresh revision of higher authority; that winner is served instead, marked with the
        source whose fetch it superseded. An older or duplicate write still serves ours."""
        if written is None or written.status is not CacheWriteStatus.IGNORED_LOWER_AUTHORITY:
            return ours
        # The kept revision (older caches report it as ``previous`` only).
        held = written.previous if written.previous is not None else written.value
        now = self.clock.now()
        age = max(0.0, now - held.observed_at)
        if not self.policy_for(ours.key).is_fresh(age):
            return ours
        return held._served(
            now, age, False, ReadOnlyDict({**held.metadata, "superseded_source": source})
        )

    def consume(
        self, outcome: SnapshotValue[Any], ctx: FetchContext, *, coalesced: bool = False
    ) -> SnapshotValue[Any]:
        """A private copy of a flight's value for one reader, with its age as of now;
        ``coalesced``: the reader joined another build's flight (so the metadata says)."""
        age, stale = self._reading(outcome)
        return self._reader_clone(outcome, ctx.snapshot_id, age, stale, coalesced)

    def reader_copy(
        self, outcome: SnapshotValue[Any], ctx: FetchContext, coalesced: bool
    ) -> Callable[[], SnapshotValue[Any]]:
        """:meth:`consume` in two steps: the clock and policy are read now, on the loop; the
        returned function only copies (so it may run in a worker thread)."""
        age, stale = self._reading(outcome)
        clone, snapshot_id = self._reader_clone, ctx.snapshot_id
        return lambda: clone(outcome, snapshot_id, age, stale, coalesced)

    def _reading(self, outcome: SnapshotValue[Any]) -> tuple[float, bool]:
        """What a reader's copy of ``outcome`` says: its age as of now, and whether it is
        stale."""
        age = max(0.0, self.clock.now() - outcome.observed_at)
        return age, outcome.stale or not self.policy_for(outcome.key).is_fresh(age)

    def _reader_clone(
        self,
        outcome: SnapshotValue[Any],
        snapshot_id: str,
        age: float,
        stale: bool,
        coalesced: bool,
    ) -> SnapshotValue[Any]:
        try:
            clone = self.isolator.clone_snapshot_value(
                outcome,
                context="",  # named below on failure: no text is made per key otherwise
                age_seconds=age,
                stale=stale,
            )
        except PayloadIsolationError as error:
            where = f"{outcome.key} in snapshot {snapshot_id!r}"
            raise located(error, where) from error.__cause__
        if coalesced:
            # The clone is new and unshared, and its metadata is already isolated (copied, or
            # of immutable values): the mark is added without copying the metadata again.
            marked = ReadOnlyDict({**clone.metadata, "coalesced_request": True})
            object.__setattr__(clone, "metadata", marked)
        return clone

    # -- lifecycle ---------------------------------------------------------------------------

    async def _wait_or_cancel_refreshes(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the refreshes, then cancel what still runs: a
        hung refresh must not hang ``aclose()``."""
        # The engine is closed: no refresh starts any more (B-DIAG-3), so one wait covers all.
        if self.refresh_tasks and timeout > 0.0:
            await asyncio.wait(list(self.refresh_tasks), timeout=timeout)
        while self.refresh_tasks:
            hung = list(self.refresh_tasks)
            for task in hung:
                task.cancel()
            await _ended(hung, self.refresh_tasks)

    async def wait_for_refreshes(self) -> None:
        """Wait until no background refresh is running (including ones started meanwhile)."""
        while self.refresh_tasks:
            await _ended(list(self.refresh_tasks), self.refresh_tasks)

    async def shutdown(self, *, cancel_refreshes: bool, timeout: float | None = None) -> None:
        """End every owned task: refreshes are awaited (or cancelled; with ``timeout``, those
        still running after ``timeout`` seconds are cancelled), flights cancelled."""
        self.closed = True
        if cancel_refreshes:
            for task in self.refresh_tasks:
                task.cancel()
        if timeout is None:
            await self.wait_for_refreshes()
        else:
            await self._wait_or_cancel_refreshes(timeout)
        while self.tasks:
            pending = list(self.tasks)
            for task in pending:
                task.cancel()
            await _ended(pending, self.tasks)


_SETTLE_SECONDS = 0.01
"""How long past its deadline a caller waits for a group cut at that same deadline to end."""


def _joined_too_long(key: ResourceKey) -> ResourceResolutionError:
    """A caller's deadline passed while another build's flight still resolved ``key``."""
    failure = SourceFailure(
        JOINED_SOURCE,
        "SnapshotDeadlineExceededError",
        f"snapshot deadline exceeded while waiting for the in-flight resolution of {key}",
        0,
    )
    return ResourceResolutionError(key, (failure,))


async def _ended(tasks: list[asyncio.Task[None]], owner: set[asyncio.Task[None]]) -> None:
    """Wait for ``tasks`` to end, then drop them from ``owner`` at once. Their done callbacks
    would drop them too, but on Python 3.12+ ``gather`` of tasks that are already done returns
    without yielding to the loop, so a ``while owner:`` loop relying on those callbacks would
    spin forever."""
    await asyncio.gather(*tasks, return_exceptions=True)
    owner.difference_update(tasks)


def _observe(task: asyncio.Task[None]) -> None:
    """Nobody awaits a group's task (callers wait on its flights, which it always resolves):
    retrieve how it ended, so a BaseException a source raised is not logged as unretrieved."""
    if not task.cancelled():
        task.exception()


_FETCH = "fetch"


def _take_rest(
    keys: Sequence[ResourceKey],
    rest: Mapping[ResourceKey, FreshnessPolicy],
    lookups: Mapping[ResourceKey, CacheLookup],
    now: float,
    hits: dict[ResourceKey, SnapshotValue[Any]],
    ahead: list[ResourceKey],
) -> tuple[
    dict[ResourceKey, SnapshotValue[Any]],
    list[ResourceKey],
    list[ResourceKey],
    dict[ResourceKey, SnapshotValue[Any]],
    list[ResourceKey],
]:
    """Judge the keys the cache did not serve at once (see :func:`_judge`), adding to the
    served ``hits`` and ``ahead``: returns ``(hits, ahead, needed, candidates, swr)``, each in
    key order."""
    needed: list[ResourceKey] = []
    candidates: dict[ResourceKey, SnapshotValue[Any]] = {}
    swr: list[ResourceKey] = []
    served_first = len(hits)
    for key, policy in rest.items():
        verdict, value = _judge(lookups.get(key, MISS), policy, now)
        if verdict is _FETCH:
            needed.append(key)
            if value is not None:
                candidates[key] = value
            continue
        hits[key] = value  # type: ignore[assignment]  # a hit: never None
        if verdict is _REFRESH_AHEAD:
            ahead.append(key)
        elif verdict is _STALE_WHILE_REVALIDATE:
            swr.append(key)
    if served_first and len(hits) > served_first:  # hits in request order again
        hits = {key: hits[key] for key in keys if key in hits}
        due = set(ahead)
        ahead = [key for key in keys if key in due]
    return hits, ahead, needed, candidates, swr


def _judge(
    lookup: CacheLookup, policy: FreshnessPolicy, now: float
) -> tuple[str, SnapshotValue[Any] | None]:
    """What a build does with a key the cache did not serve at once: ``(FRESH, served)``,
    ``(REFRESH_AHEAD, served)`` (a fresh hit due a refresh), ``(STALE_WHILE_REVALIDATE,
    served stale)``, or ``("fetch", the usable value to serve if every source fails, or
    None)``."""
    value = lookup.value
    if value is None:
        return _FETCH, None
    age = lookup.age_seconds
    if age is None:  # a custom cache need not say
        age = max(0.0, now - value.observed_at)
    if lookup.fresh:
        verdict = _REFRESH_AHEAD if policy.should_refresh_ahead(age) else _FRESH
        return verdict, value._served(now, age, False)
    if lookup.usable_stale and policy.refresh_mode is _SWR:
        return _STALE_WHILE_REVALIDATE, value._served(now, age, True)
    usable = lookup.usable_stale and policy.allow_stale_on_error
    return _FETCH, value if usable else None


def _with_metadata(value: SnapshotValue[Any], **extra: Any) -> SnapshotValue[Any]:
    """``value`` (a private copy) with ``extra`` added to its metadata."""
    return value._served(
        value.fetched_at, value.age_seconds, value.stale, ReadOnlyDict({**value.metadata, **extra})
    )
