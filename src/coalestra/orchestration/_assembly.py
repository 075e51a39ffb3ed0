"""A build, end to end, around the engine: :class:`Builds` makes a build's context; steps 2-3
(:func:`resolve`: the one cache read, then a claim on each missing key's flight, owned or
joined, the wait for them and each reader's private copy) hand the owned keys to the engine
(:mod:`._engine`); then the outcomes become a :class:`Snapshot` (``assemble``), checked for
consistency and acceptance (:mod:`._checks`), raising for required failures (carrying the
partial snapshot, so nothing resolved is lost), and the build is reported as it finished."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any, cast, final

from ..core import (
    Clock,
    DiagnosticsCollector,
    FetchContext,
    ResourceKey,
    Snapshot,
    SnapshotAcceptancePolicy,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotValue,
)
from ..core._closed import BUILDER_CLOSED, ClosedError
from ..core._ids import new_snapshot_id
from ..core._key_tuple import key_tuple
from ..core._validation import EMPTY_MAPPING, ReadOnlyDict, check_timestamp, frozen_mapping
from ..observability._instrumentation import Instrumentation
from ..observability._lookups import report_lookups
from ..observability._tracing import Span, Tracer, describe_build
from ._background import refresh_served
from ._cache_access import BuildView
from ._checks import check_acceptance, check_consistency, check_deadline, raise_for_required
from ._flights import Flight, Raised
from ._inputs import keep_inputs
from ._ledger import as_resolution_error
from ._machinery import Machinery
from ._payloads import hand_out
from ._reconcile import Reconciler

_new, _set = object.__new__, object.__setattr__
_DEPENDENCY_VERSIONS = attrgetter("dependency_versions")


def requested_keys(keys: Iterable[ResourceKey]) -> tuple[ResourceKey, ...]:
    """The keys a build, resolve or revalidate was asked for: validated, de-duplicated.

    Raises:
        TypeError: ``keys`` is not an iterable of :class:`ResourceKey`.
        ValueError: no key (``"at least one resource key is required"``, B-TIME-5).
    """
    ordered = key_tuple("keys", keys)
    if not ordered:
        raise ValueError("at least one resource key is required")
    return ordered


def assemble(
    keys: Sequence[ResourceKey],
    values: Mapping[ResourceKey, SnapshotValue[Any]],
    errors: Mapping[ResourceKey, Exception],
    ctx: FetchContext,
    diag: DiagnosticsCollector,
    *,
    seconds: float,
    stale: int | None = None,
) -> Snapshot:
    """Build the snapshot in request order, with frozen diagnostics. ``stale``: ``values`` is
    the build's first cache read, one value per key in request order, this many of them stale
    (a warm build: its keys are not walked again to learn that)."""
    in_order = stale is not None or (
        not errors and len(values) == len(keys) and list(values) == list(keys)
    )
    if in_order:  # every key resolved, already in request order: no re-keying needed
        resources: Mapping[ResourceKey, SnapshotValue[Any]] = ReadOnlyDict(values)
    else:
        resources = _read_only({key: values[key] for key in keys if key in values})
    if stale is None:  # comprehensions: on 3.11+ their slot reads beat map() over attrgetter
        stale = len([value for value in resources.values() if value.stale])
    failed = (
        _read_only({key: errors[key] for key in keys if key in errors}) if errors else EMPTY_MAPPING
    )
    diag.requested_resources += len(keys)
    diag.resolved_resources += len(resources)
    diag.failed_resources += len(failed)
    diag.stale_values += stale
    observed = [value.observed_at for value in resources.values()]
    skew_ms = (max(observed) - min(observed)) * 1000.0 if observed else 0.0
    diagnostics = diag.freeze(duration_ms=seconds * 1000.0, observation_skew_ms=skew_ms)
    return Snapshot._assembled(ctx.snapshot_id, ctx.requested_at, resources, failed, diagnostics)


def _read_only(table: dict[Any, Any]) -> Mapping[Any, Any]:
    return ReadOnlyDict(table) if table else EMPTY_MAPPING


@final
class Builds:
    """The builds of one builder; ``closed`` once its ``aclose()`` began."""

    __slots__ = ("_clock", "_engine", "_report", "_tracer", "closed")

    def __init__(
        self, engine: Machinery, clock: Clock, report: Instrumentation, tracer: Tracer
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._report = report
        self._tracer = tracer
        self.closed = False

    async def run(
        self,
        keys: Sequence[ResourceKey],
        required: Sequence[ResourceKey],
        optional: Sequence[ResourceKey],
        consistency: SnapshotConsistencyPolicy | None,
        deadline_seconds: float | None,
        metadata: Mapping[str, Any] | None,
        snapshot_id: str | None,
        *,
        strict: bool,
        acceptance: SnapshotAcceptancePolicy | None = None,
    ) -> Snapshot:
        """One build, end to end: context, resolution, assembly, then the checks of its
        required keys, consistency and acceptance, reported as it finishes."""
        ctx = self.new_context(deadline_seconds, metadata, snapshot_id)
        with self._tracer.build_span(ctx.snapshot_id, len(keys), deadline_seconds) as span:
            diag, started = DiagnosticsCollector(), self._clock.monotonic()
            values, errors = await resolve(self._engine, keys, ctx, diag, view := BuildView())
            # Served as read (no flight, nothing re-derived): the first read, in request order.
            first = values is view.first_read and len(values) == len(keys)
            seconds = self._clock.monotonic() - started
            stale = view.first_stale if first else None
            snapshot = assemble(keys, values, errors, ctx, diag, seconds=seconds, stale=stale)
            # Required failures first; the consistency check covers a complete group only.
            failed = bool(snapshot.errors) and any(key in snapshot.errors for key in required)
            if consistency is not None and not failed:
                try:
                    check_consistency(snapshot, consistency, required, optional)
                except SnapshotConsistencyError as error:
                    self._report.consistency_failed(snapshot.snapshot_id, error)
                    self._finish(snapshot, span, "inconsistent", strict)
                    raise
            outcome = "failed" if failed else "partial" if snapshot.errors else "complete"
            self._finish(snapshot, span, outcome, strict)
            if failed:
                raise_for_required(snapshot, required)
            if acceptance is not None:
                check_acceptance(self._engine, snapshot, acceptance, required, optional)
        return snapshot

    def _finish(self, snapshot: Snapshot, span: Span, outcome: str, strict: bool) -> None:
        """Report a finished build (outcome: complete, partial, failed or inconsistent)."""
        d = snapshot.diagnostics
        if self._report.enabled:
            self._report.build_finished(
                snapshot,
                build_failed=outcome in ("failed", "inconsistent"),
                strict=strict,
                resources=d.requested_resources,
            )
        describe_build(span, d, outcome)

    def new_context(
        self,
        deadline_seconds: float | None,
        metadata: Mapping[str, Any] | None,
        snapshot_id: str | None,
    ) -> FetchContext:
        """``SnapshotBuilder.new_context`` (see there)."""
        if self.closed:
            raise ClosedError(BUILDER_CLOSED)
        budget = None if deadline_seconds is None else check_deadline(deadline_seconds)
        if snapshot_id is not None and not isinstance(snapshot_id, str):
            raise TypeError(f"snapshot_id must be a str, got {type(snapshot_id).__name__}")
        frozen = frozen_mapping("metadata", metadata)
        now = check_timestamp("requested_at", self._clock.now())
        ctx = _new(FetchContext)  # its fields checked here: FetchContext's own checks skipped
        _set(ctx, "requested_at", now)
        if budget is None:
            _set(ctx, "deadline_at", None)
            _set(ctx, "deadline_monotonic", None)
        else:
            _set(ctx, "deadline_at", check_timestamp("deadline_at", now + budget))
            at = self._clock.monotonic() + budget
            _set(ctx, "deadline_monotonic", check_timestamp("deadline_monotonic", at))
        _set(ctx, "metadata", frozen)
        _set(ctx, "snapshot_id", new_snapshot_id() if snapshot_id is None else snapshot_id)
        return ctx

    async def resolve_keys(
        self,
        keys: Sequence[ResourceKey],
        ctx: FetchContext,
        diag: DiagnosticsCollector,
        *,
        force_refresh: bool = False,
        view: BuildView | None = None,
    ) -> tuple[dict[ResourceKey, SnapshotValue[Any]], dict[ResourceKey, Exception]]:
        """``SnapshotBuilder.resolve_keys`` (see there)."""
        if self.closed:
            raise ClosedError(BUILDER_CLOSED)
        return await resolve(
            self._engine,
            keys,
            ctx,
            diag,
            BuildView() if view is None else view,
            force_refresh=force_refresh,
        )


# -- steps 2 and 3: one cache read, then single-flight ------------------------------------------


async def resolve(
    engine: Machinery,
    keys: Sequence[ResourceKey],
    ctx: FetchContext,
    diag: DiagnosticsCollector,
    view: BuildView,
    *,
    force_refresh: bool = False,
) -> tuple[dict[ResourceKey, SnapshotValue[Any]], dict[ResourceKey, Exception]]:
    """Resolve ``keys`` for one build (or session stage) into private values and per-key
    errors, consistent with ``view`` (see :class:`._cache_access.BuildView`). Raises whatever
    the cache raised, as it is."""
    if view.empty and not force_refresh:  # a build's first read (no coroutine between)
        values, claims = await _read(engine, keys, ctx, diag, view)
    else:
        values, claims = await lookup_and_claim(
            engine, keys, ctx, diag, view, force_refresh=force_refresh
        )
    errors: dict[ResourceKey, Exception] = {}
    # A session stage always checks: its view holds pinned revisions the cache knows
    # nothing of, and the inputs of what it serves (._inputs).
    check = claims or view.session or not engine.cache.validates_dependencies
    if check:
        values = dict(values)  # the build's first reading stays as it was read
    if claims:
        outcomes = await engine.flights.wait(claims, ctx, engine.clock, engine.counters)
        ready = {key: got for key, got in outcomes.items() if not isinstance(got, Exception)}
        if len(ready) < len(outcomes):  # the others are errors
            for key, outcome in outcomes.items():
                if type(outcome) is Raised:
                    raise outcome.error
                if isinstance(outcome, Exception):
                    errors[key] = as_resolution_error(key, outcome)
        if ready:
            await hand_out(engine, ready, ctx, view.joined, values, errors)
    if view.session:
        await keep_inputs(engine, view, values.values())
    # Only a derived value can mix revisions (a view's check of any other is False at once).
    if check and any(map(_DEPENDENCY_VERSIONS, values.values())):
        await Reconciler(engine, ctx, diag, view).reconcile(values, errors)
    return values, errors


async def lookup_and_claim(
    engine: Machinery,
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
            _bypass(engine, keys, diag)
            return {}, claim(engine, keys, ctx, diag, view, force=True)
        return await _read(engine, keys, ctx, diag, view)
    unknown = [key for key in keys if view.get(key) is None]
    if unknown:
        if force_refresh:
            _bypass(engine, unknown, diag)
            claim(engine, unknown, ctx, diag, view, force=True)
        else:
            await _read(engine, unknown, ctx, diag, view)
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


def _bypass(engine: Machinery, keys: Sequence[ResourceKey], diag: DiagnosticsCollector) -> None:
    """A revalidation bypasses the cache for ``keys``: each counts as a miss."""
    diag.cache_misses += len(keys)
    if engine.report.enabled:
        engine.report.cache_bypassed(keys)


async def _read(
    engine: Machinery,
    keys: Sequence[ResourceKey],
    ctx: FetchContext,
    diag: DiagnosticsCollector,
    view: BuildView,
) -> tuple[dict[ResourceKey, SnapshotValue[Any]], dict[ResourceKey, Flight]]:
    """One cache read of ``keys``: fresh hits are served (a refresh-ahead may be scheduled),
    usable values of STALE_WHILE_REVALIDATE keys are served stale (a refresh scheduled),
    anything else is claimed, its usable value kept as the stale-on-error candidate."""
    # A session stage reads the inputs of the derived values it serves afterwards, from
    # their recorded revisions (._inputs.keep_inputs): its first read is its keys only.
    cache = engine.cache
    reading = await cache.first_read(keys, engine.clock.now(), engine.policy_for)
    hits, ahead, needed, candidates, swr = reading
    if cache.batch_reads:
        diag.cache_batch_reads += 1
    diag.cache_hits += len(hits)
    diag.cache_misses += len(needed)
    if engine.report.enabled:
        report_lookups(engine.report, keys, hits, needed, swr)
    if ahead or swr:
        refresh_served(engine, hits, ahead, swr, ctx, diag)
    if view.empty:
        view.first_read, view.first_stale = hits, len(swr)
    else:
        view.entries.update(hits)
    return hits, claim(engine, needed, ctx, diag, view, candidates=candidates) if needed else {}


def claim(
    engine: Machinery,
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
    flights = engine.flights
    wanted = keys if type(keys) is list else list(keys)
    found = list(map(flights.get, wanted))
    missing = found.count(None)
    claims: dict[ResourceKey, Flight]
    owned: list[ResourceKey]
    if not missing:  # every key joins (a stampede): no key by key split
        claims = dict(zip(wanted, cast("list[Flight]", found), strict=True))
        owned, joined = [], wanted
    elif missing == len(found):  # every key is owned (a cold build)
        claims, owned, joined = {}, wanted, []
    else:
        claims = {key: got for key, got in zip(wanted, found, strict=True) if got is not None}
        owned, joined = [key for key in wanted if key not in claims], list(claims)
    # A joiner with this deadline lets the work run at least that long (once per group).
    for group in {flight.group for flight in claims.values()}:
        group.extend(ctx.deadline_monotonic)
    if joined:
        view.joined.update(joined)
        diag.coalesced_requests += len(joined)
        if engine.report.metrics_on:
            engine.report.single_flight_joined(joined)
    if owned:
        started = flights.start(owned)
        claims.update(started)
        engine.start(started, ctx, diag, view, force=force, candidates=candidates)
    view.entries.update(claims)
    return claims
