"""Multi-stage sessions: one identity, creation time, deadline and pinned-value memo.

A stage (``resolve`` / ``resolve_request``) acquires only the keys the session has not resolved
yet, through the builder's shared engine (cache, single-flight, capacity); whatever it resolves
is pinned, so later stages see the same revision whatever the cache or the publisher did
meanwhile. Every stage returns the whole session so far: every pinned value and every stored
error. ``revalidate`` is the one way to replace pinned values, and it is all or nothing.
Operations of one session run one at a time (a session is a sequential unit of work;
serializing them is what makes a revalidation's commit atomic with respect to the other
stages, and lets ``close()`` wait for the operation in flight).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, final

from ..core import (
    DiagnosticsCollector,
    FetchContext,
    RequestDegradationPolicy,
    ResourceKey,
    Snapshot,
    SnapshotAcceptanceError,
    SnapshotAcceptancePolicy,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotRequest,
    SnapshotResult,
    SnapshotValue,
)
from ..core._acceptance import evaluate_acceptance
from ..core._closed import BUILDER_CLOSED, ClosedError, session_closed
from ..core._validation import check_bool
from ._assembly import check_acceptance, check_consistency, requested_keys, skew_violation
from ._engine import Engine
from ._inputs import declared_dependencies
from ._pinning import PinnedMemo, ordered_union, resolved_closure
from ._revalidation import Errors, Refreshed, Values, refresh
from ._trying import check_try_arguments, resolve_trying
from ._view import BuildView


@final
@dataclass(frozen=True, slots=True)
class _Outcome:
    """How a revalidation ended: the snapshot to return (or carried by ``error``)."""

    snapshot: Snapshot
    refreshed: Refreshed
    committed: bool
    error: SnapshotBuildError | None = None


@final
class SnapshotSession:
    """A multi-stage unit of work over one builder: one id, creation time, deadline and memo.

    Create it with :meth:`SnapshotBuilder.session`. Every stage returns the accumulated session
    snapshot: the values and stored errors of every stage so far. Values resolved by a stage
    stay pinned: later stages return the same revision (no source call, no cache read) even
    when the cache or the publisher has a newer one; new builds and new sessions do see newer
    revisions. Errors are stored too, until a ``retry_errors=True`` stage names their keys
    again. The session's absolute deadline is shared by every stage. Read capacity is the
    builder's, shared with every other build and session. Diagnostics accumulate across the
    session's operations.

    Args:
        engine: the builder's engine (its cache, single-flight table, sources and limits).
        context: the session's context (id, creation time, deadline, metadata).

    Raises:
        TypeError: ``context`` or ``engine`` has the wrong type.
    """

    __slots__ = (
        "_closed",
        "_context",
        "_diag",
        "_engine",
        "_lock",
        "_memo",
        "_requested",
    )

    def __init__(self, *, engine: Engine, context: FetchContext) -> None:
        if not isinstance(context, FetchContext):
            raise TypeError(f"context must be a FetchContext, got {type(context).__name__}")
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be an Engine, got {type(engine).__name__}")
        self._context = context
        self._engine = engine
        self._memo = PinnedMemo()
        self._diag = DiagnosticsCollector()  # accumulates across the session's operations
        self._requested: dict[ResourceKey, None] = {}  # distinct keys requested so far
        self._lock = asyncio.Lock()  # binds to a loop only when an operation has to wait
        self._closed = False

    def _declared_dependencies(self, key: ResourceKey) -> tuple[ResourceKey, ...]:
        return declared_dependencies(self._engine, key)

    # -- identity ----------------------------------------------------------------------------

    @property
    def context(self) -> FetchContext:
        """The context handed to every source call of the session (id, deadline, metadata)."""
        return self._context

    @property
    def snapshot_id(self) -> str:
        """The id of every snapshot the session returns."""
        return self._context.snapshot_id

    @property
    def created_at(self) -> float:
        """Wall-clock time the session was created (the ``created_at`` of its snapshots)."""
        return self._context.requested_at

    @property
    def closed(self) -> bool:
        """True once the session or its builder is closed."""
        return self._closed or self._engine.closed

    def _check_open(self) -> None:
        if self._closed:
            raise session_closed()
        if self._engine.closed:
            raise ClosedError(BUILDER_CLOSED)

    # -- stages ------------------------------------------------------------------------------

    async def resolve(
        self, keys: Iterable[ResourceKey], *, strict: bool = True, retry_errors: bool = False
    ) -> Snapshot:
        """Resolve ``keys`` as a stage and return the accumulated session snapshot.

        Args:
            keys: the resources of this stage (duplicates are resolved once). Keys already
                resolved are returned as pinned; keys with a stored error keep it.
            strict: raise when any of ``keys`` failed (``False``: failures are only listed
                in ``snapshot.errors``).
            retry_errors: acquire again keys whose earlier attempt failed.

        Raises:
            SnapshotBuildError: with ``strict=True``, a key of this stage failed;
                ``error.errors`` holds those keys only, ``error.snapshot`` the whole session
                (successful values are pinned all the same).
            SessionClosedError: the session was closed.
            RuntimeError: the builder is closed ("SnapshotBuilder is closed").
            TypeError: ``keys`` is not an iterable of ResourceKey, or a flag is not a bool.
            ValueError: ``keys`` is empty.
        """
        self._check_open()
        check_bool("strict", strict)
        check_bool("retry_errors", retry_errors)
        ordered = requested_keys(keys)
        return await self._stage(ordered, ordered if strict else (), (), None, strict, retry_errors)

    async def resolve_request(
        self, request: SnapshotRequest, *, retry_errors: bool = False
    ) -> Snapshot:
        """Resolve a :class:`SnapshotRequest` as a stage; return the accumulated snapshot.

        Everything is resolved (and pinned) first. Then required failures raise; then the
        request's consistency policy is checked over the resolved required keys (plus the
        optional ones with ``include_optional_resources``).

        Raises:
            SnapshotBuildError: a required key failed (``error.snapshot``: the whole session).
            SnapshotConsistencyError: the request's consistency policy was violated.
            SessionClosedError, RuntimeError: as :meth:`resolve`.
            TypeError: ``request`` is not a SnapshotRequest.
        """
        self._check_open()
        if not isinstance(request, SnapshotRequest):
            raise TypeError(f"request must be a SnapshotRequest, got {type(request).__name__}")
        check_bool("retry_errors", retry_errors)
        return await self._stage(
            request.keys,
            request.required,
            request.optional,
            request.consistency_policy,
            True,
            retry_errors,
            acceptance=request.acceptance_policy,
        )

    async def try_resolve_request(
        self,
        request: SnapshotRequest,
        *,
        retry_errors: bool = False,
        degradation_policy: RequestDegradationPolicy | None = None,
    ) -> SnapshotResult:
        """Resolve ``request`` as a stage without raising for failed keys, an inconsistent
        group or rejected values: classify them with ``degradation_policy`` (default
        :class:`RequestDegradationPolicy`) into an accepted, degraded or rejected
        :class:`SnapshotResult`. A :class:`CoalestraError` of the stage (a closed session, for
        instance) becomes a rejected result carrying it.

        Raises:
            TypeError: ``request``, ``retry_errors`` or ``degradation_policy`` has a wrong type.
        """
        request, policy = check_try_arguments(request, degradation_policy)
        check_bool("retry_errors", retry_errors)
        engine = self._engine
        policy_for = engine.policy_for
        return await resolve_trying(
            lambda: self._stage(request.keys, (), (), None, False, retry_errors),
            request,
            policy,
            now=engine.clock.now,
            ttl_for=lambda key: policy_for(key).ttl_seconds,
            report=engine.report,
        )

    async def _stage(
        self,
        keys: Sequence[ResourceKey],
        required: Sequence[ResourceKey],
        optional: Sequence[ResourceKey],
        consistency: SnapshotConsistencyPolicy | None,
        strict: bool,
        retry_errors: bool,
        acceptance: SnapshotAcceptancePolicy | None = None,
    ) -> Snapshot:
        async with self._lock:
            self._check_open()
            started = self._engine.clock.monotonic()
            self._requested.update(dict.fromkeys(keys))
            memo = self._memo
            # A key read earlier only as a dependency is shown as the revision the session's
            # derived values were computed from, never read again.
            memo.promote(keys)
            missing = memo.missing(keys, retry_errors=retry_errors)
            if missing:
                # Derivations take their dependencies from the pinned values first, so the
                # session never shows a derived value next to another revision of its input.
                values, errors, readings = await self._acquire(
                    missing, force_refresh=False, pinned={**memo.inputs, **memo.values}
                )
                self._check_open()  # the builder closed meanwhile: pin nothing
                memo.pin(values, errors)
                memo.remember_inputs(values.values(), readings)
                self._diag.stale_values += sum(1 for value in values.values() if value.stale)
            snapshot = self._accumulated(started)
        report = self._engine.report
        try:
            failed = {key: snapshot.errors[key] for key in required if key in snapshot.errors}
            if failed:
                raise SnapshotBuildError(failed, snapshot=snapshot)
            try:
                check_consistency(snapshot, consistency, required, optional)
            except SnapshotConsistencyError as error:
                report.consistency_failed(self.snapshot_id, error)
                raise
            if acceptance is not None:
                self._accept(snapshot, acceptance, required, optional)
        except SnapshotBuildError:
            report.session_resolved(
                snapshot,
                requested=len(keys),
                stage_failed=True,
                strict=strict,
                retry_errors=retry_errors,
            )
            raise
        report.session_resolved(
            snapshot,
            requested=len(keys),
            stage_failed=False,
            strict=strict,
            retry_errors=retry_errors,
        )
        return snapshot

    def _accept(
        self,
        snapshot: Snapshot,
        policy: SnapshotAcceptancePolicy,
        required: Sequence[ResourceKey],
        optional: Sequence[ResourceKey],
    ) -> None:
        engine = self._engine
        policy_for = engine.policy_for
        check_acceptance(
            snapshot,
            policy,
            required,
            optional,
            now=engine.clock.now(),
            ttl_for=lambda key: policy_for(key).ttl_seconds,
            report=engine.report,
        )

    async def _acquire(
        self,
        keys: Sequence[ResourceKey],
        *,
        force_refresh: bool,
        pinned: Mapping[ResourceKey, SnapshotValue[Any]] | None = None,
    ) -> tuple[Values, Errors, Values]:
        """Resolve ``keys`` under the session's context (and so its deadline): the values,
        the errors, and every revision read on the way (dependencies included)."""
        engine = self._engine
        if engine.closed:
            raise ClosedError(BUILDER_CLOSED)
        # Derivations take their dependencies from ``pinned`` first (the session's values), so
        # a stage never derives from a revision other than the one the session shows.
        view = BuildView(pinned, session=True)
        values, errors = await engine.resolve(
            keys, self._context, self._diag, view, force_refresh=force_refresh
        )
        return values, errors, view.readings()

    def _accumulated(
        self, started: float | None, transient: Mapping[ResourceKey, Exception] | None = None
    ) -> Snapshot:
        """The whole session as a snapshot of isolated copies: pinned values and stored
        errors (plus ``transient`` errors of a failed revalidation, which are not stored)."""
        memo, engine = self._memo, self._engine
        errors = memo.errors if not transient else {**memo.errors, **transient}
        keys = ordered_union(list(memo.values), list(errors))
        resources = memo.copies(keys, engine.isolator, self.snapshot_id)
        observed = [value.observed_at for value in resources.values()]
        diag = self._diag
        diag.requested_resources = len(self._requested)
        diag.resolved_resources = len(resources)
        diag.failed_resources = len(errors)
        duration = 0.0 if started is None else (engine.clock.monotonic() - started) * 1000.0
        return Snapshot(
            snapshot_id=self.snapshot_id,
            created_at=self.created_at,
            resources=resources,
            errors={key: errors[key] for key in keys if key in errors},
            diagnostics=diag.freeze(
                duration_ms=duration,
                observation_skew_ms=(max(observed) - min(observed)) * 1000.0 if observed else 0.0,
            ),
        )

    # -- revalidation ------------------------------------------------------------------------

    async def revalidate(
        self,
        keys: Iterable[ResourceKey],
        *,
        strict: bool = True,
        force_refresh: bool = False,
        consistency_policy: SnapshotConsistencyPolicy | None = None,
        acceptance_policy: SnapshotAcceptancePolicy | None = None,
    ) -> Snapshot:
        """Re-resolve ``keys`` and every pinned value derived from them, all or nothing.

        The affected keys are ``keys`` plus every resolved key whose dependency versions
        include an affected key, transitively; the targets are ``keys`` plus the affected keys
        the session shows. They skip the session's memo: by default they read the shared
        cache, so the newest cached or published revision wins; with ``force_refresh=True``
        they bypass the cache and are fetched (or derived) again. Only keys the session shows
        are replaced: revalidating an internal dependency refreshes the values derived from
        it, without adding it. Unrelated values keep their version.

        Either every target is committed, or nothing is: the session keeps its previous state
        and this call's errors are not stored. A successful revalidation clears its targets'
        stored errors.

        Args:
            keys: resources already resolved in this session, requested by a stage or resolved
                as a dependency.
            strict: raise when a target fails; ``False`` returns the retained state plus this
                call's errors.
            force_refresh: bypass the shared cache.
            consistency_policy: bound the observation skew of ``keys``' new values before
                anything is committed.
            acceptance_policy: check the candidate state (the session's values with the new
                ones swapped in) before anything is committed, with ``keys`` as the required
                set: explicit rules also check pinned keys that were not revalidated, and
                requirement keys absent from the session count as missing.

        Returns:
            The accumulated session snapshot.

        Raises:
            SnapshotBuildError: with ``strict=True``, a target failed; ``error.snapshot`` is
                the retained state plus this call's errors.
            SnapshotConsistencyError: the new values violate ``consistency_policy``; always
                raised, even with ``strict=False``; ``error.snapshot`` is the previous state.
            SnapshotAcceptanceError: the candidate state violates ``acceptance_policy``;
                always raised, even with ``strict=False``; nothing is committed and
                ``error.snapshot`` is the retained previous state.
            ValueError: ``keys`` is empty, or names a key this session never resolved (raised
                before any work).
            SessionClosedError, RuntimeError: as :meth:`resolve`.
            TypeError: a bad argument.
        """
        self._check_open()
        _check_revalidation(strict, force_refresh, consistency_policy, acceptance_policy)
        selected = requested_keys(keys)
        async with self._lock:
            outcome = await self._revalidate(
                selected, strict, force_refresh, consistency_policy, acceptance_policy
            )
        return _returned(outcome, strict)

    async def _revalidate(
        self,
        selected: Sequence[ResourceKey],
        strict: bool,
        force_refresh: bool,
        consistency: SnapshotConsistencyPolicy | None,
        acceptance: SnapshotAcceptancePolicy | None,
    ) -> _Outcome:
        """One revalidation under the session's lock, counted and reported however it ends."""
        self._check_open()
        self._check_resolved(selected)
        counters = self._engine.counters
        counters.revalidation_attempts += 1
        outcome: _Outcome | None = None
        try:
            outcome = await self._transact(selected, force_refresh, consistency, acceptance)
        finally:
            if outcome is None or not outcome.committed:
                counters.revalidation_failures += 1
            self._report_revalidation(
                selected, strict, force_refresh, outcome, acceptance is not None
            )
        return outcome

    def _check_resolved(self, selected: Sequence[ResourceKey]) -> None:
        memo = self._memo
        known = resolved_closure(memo.values, memo.errors, self._declared_dependencies)
        unknown = [key for key in selected if key not in known]
        if unknown:
            raise ValueError(
                "revalidation requires resources already resolved in this session: "
                + ", ".join(str(key) for key in unknown)
            )

    async def _transact(
        self,
        selected: Sequence[ResourceKey],
        force_refresh: bool,
        policy: SnapshotConsistencyPolicy | None,
        acceptance: SnapshotAcceptancePolicy | None = None,
    ) -> _Outcome:
        """Read the new revisions, then commit them all or keep the previous state."""
        started = self._engine.clock.monotonic()
        memo = self._memo

        readings: Values = {}  # every revision the revalidation read, dependencies included

        async def acquire(batch: Sequence[ResourceKey], force: bool) -> tuple[Values, Errors]:
            values, errors, read = await self._acquire(batch, force_refresh=force)
            readings.update(read)
            return values, errors

        got = await refresh(
            selected,
            # the remembered inputs too: a value derived anew from another revision of one
            # brings along every pinned value derived from that input
            {**memo.inputs, **memo.values},
            self._engine,
            acquire,
            force_refresh=force_refresh,
            readings=readings,
        )
        self._check_open()
        if got.errors:
            retained = self._accumulated(started, got.errors)
            return _Outcome(
                retained, got, False, SnapshotBuildError(dict(got.errors), snapshot=retained)
            )
        if policy is not None:
            previous = self._accumulated(started)
            violation = skew_violation(got.values, selected, policy, previous)
            if violation is not None:
                self._engine.report.consistency_failed(self.snapshot_id, violation)
                return _Outcome(previous, got, False, violation)
        shown = {key: value for key, value in got.values.items() if memo.shows(key)}
        if acceptance is not None:
            rejected = self._reject(selected, got.values, shown, acceptance)
            if rejected is not None:
                return _Outcome(self._accumulated(started), got, False, rejected)
        memo.commit(shown)
        memo.follow_inputs(shown.values(), {**readings, **got.values})
        self._diag.stale_values += sum(1 for value in shown.values() if value.stale)
        return _Outcome(self._accumulated(started), got, True)

    def _reject(
        self,
        selected: Sequence[ResourceKey],
        new: Mapping[ResourceKey, SnapshotValue[Any]],
        shown: Mapping[ResourceKey, SnapshotValue[Any]],
        policy: SnapshotAcceptancePolicy,
    ) -> SnapshotAcceptanceError | None:
        """The acceptance error of the candidate state, or ``None`` when it is acceptable."""
        engine = self._engine
        policy_for = engine.policy_for
        targets = {key: new[key] for key in selected if key in new}
        candidate = {**self._memo.values, **shown, **targets}
        violations = evaluate_acceptance(
            candidate,
            policy,
            selected,
            (),
            now=engine.clock.now(),
            ttl_for=lambda key: policy_for(key).ttl_seconds,
        )
        engine.report.acceptance_evaluated(self.snapshot_id, violations)
        if not violations:
            return None
        # The error carries the retained state: nothing was committed.
        return SnapshotAcceptanceError(violations=violations, snapshot=self._accumulated(None))

    def _report_revalidation(
        self,
        selected: Sequence[ResourceKey],
        strict: bool,
        force_refresh: bool,
        outcome: _Outcome | None,
        accepting: bool,
    ) -> None:
        report = self._engine.report
        if not report.enabled:
            return
        got = None if outcome is None else outcome.refreshed
        committed = outcome is not None and outcome.committed
        refreshed = 0
        if committed and got is not None:
            refreshed = sum(1 for key in got.values if self._memo.shows(key))
        report.session_revalidated(
            self.snapshot_id,
            requested=len(selected),
            affected=len(selected) if got is None else len(got.order),
            refreshed=refreshed,
            failed=0 if got is None else len(got.errors),
            committed=committed,
            strict=strict,
            force_refresh=force_refresh,
            consistency_failed=outcome is not None
            and isinstance(outcome.error, SnapshotConsistencyError),
            acceptance_failed=(
                outcome is not None and isinstance(outcome.error, SnapshotAcceptanceError)
            )
            if accepting
            else None,
        )

    def snapshot(self) -> Snapshot:
        """The accumulated session snapshot: every pinned value and stored error (isolated
        copies).

        Raises:
            SessionClosedError, RuntimeError: as :meth:`resolve`.
        """
        self._check_open()
        return self._accumulated(None)

    async def snapshot_async(self) -> Snapshot:
        """:meth:`snapshot`, its copies made through the builder's copy runner: in a worker
        thread when the builder offloads copies and a pinned payload needs one (one job for
        the whole snapshot), inline otherwise. It waits for a running stage to finish.

        Raises:
            SessionClosedError, RuntimeError: as :meth:`resolve`.
            PayloadCopySubsystemClosedError: the builder's copies are shutting down.
        """
        self._check_open()
        async with self._lock:
            self._check_open()
            copies = self._engine.copies
            if not copies.wanted_for(self._memo.values.values()):
                return self._accumulated(None)
            return await copies.runner.run(partial(self._accumulated, None))

    # -- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the session once the operation in flight (if any) has finished, and forget
        its pinned values; later calls raise ``SessionClosedError("SnapshotSession is
        closed")``. Idempotent; the builder stays open."""
        if self._closed:
            return
        async with self._lock:
            self._closed = True
            self._memo.clear()

    async def __aenter__(self) -> SnapshotSession:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._memo.values)} pinned"
        return f"<SnapshotSession {self.snapshot_id!r} {state}>"


def _check_revalidation(
    strict: object, force_refresh: object, consistency: object, acceptance: object
) -> None:
    """``revalidate``'s argument checks, before any work.

    Raises:
        TypeError: a flag is not a bool, or a policy is of the wrong type.
    """
    check_bool("strict", strict)
    check_bool("force_refresh", force_refresh)
    if consistency is not None and not isinstance(consistency, SnapshotConsistencyPolicy):
        raise TypeError("consistency_policy must be a SnapshotConsistencyPolicy or None")
    if acceptance is not None and not isinstance(acceptance, SnapshotAcceptancePolicy):
        raise TypeError("acceptance_policy must be a SnapshotAcceptancePolicy or None")


def _returned(outcome: _Outcome, strict: bool) -> Snapshot:
    """What ``revalidate`` returns, or the error it raises: a failed target with ``strict``;
    a consistency or acceptance violation always."""
    error = outcome.error
    if error is not None and (
        strict or isinstance(error, (SnapshotConsistencyError, SnapshotAcceptanceError))
    ):
        raise error
    return outcome.snapshot
