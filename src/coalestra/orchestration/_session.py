"""Multi-stage sessions: one identity, creation time, deadline and pinned-value memo.

A stage (``resolve`` / ``resolve_request``) acquires only the keys the session has not pinned
yet, through the builder's shared engine (cache, single-flight, capacity); whatever it resolves
is pinned, so later stages see the same revision whatever the cache or the publisher did
meanwhile. ``revalidate`` is the one way to replace pinned values, and it is transactional.
Stages of one session run one at a time (a session is a sequential unit of work; serializing
them is what makes a revalidation's commit atomic with respect to the other stages).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, final

from ..core import (
    DiagnosticsCollector,
    FetchContext,
    ResourceKey,
    SessionClosedError,
    Snapshot,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotDeadlineExceededError,
    SnapshotRequest,
    SnapshotValue,
    SourceUnavailableError,
)
from ..core._validation import check_bool
from ._assembly import assemble, check_consistency, raise_for_required, requested_keys
from ._ledger import as_resolution_error
from ._pinning import (
    PinnedMemo,
    dependents,
    mixed_revision_errors,
    ordered_union,
    stale_dependencies,
)
from ._runtime import ResolutionRuntime

if TYPE_CHECKING:
    from ._builder import SnapshotBuilder

Values = dict[ResourceKey, SnapshotValue[Any]]
Errors = dict[ResourceKey, Exception]

# Rounds a revalidation may take to catch a dependency that changed while a derived value was
# being recomputed from it; past that the derived value fails rather than mix two revisions.
_MAX_ROUNDS = 3


@final
class SnapshotSession:
    """A multi-stage unit of work over one builder: one id, creation time, deadline and memo.

    Create it with :meth:`SnapshotBuilder.session`. Values resolved by a stage stay pinned:
    later stages return the same revision (no source call, no cache read) even when the cache
    or the publisher has a newer one; new builds and new sessions do see newer revisions.
    Errors are remembered too (``retry_errors=True`` retries them). The session's absolute
    deadline bounds every stage; once it has passed, keys not pinned yet fail with
    :class:`SnapshotDeadlineExceededError` without being acquired. Read capacity is the
    builder's, shared with every other build and session.

    Args:
        builder: the builder the session belongs to.
        context: the session's context (id, creation time, deadline, metadata).
        runtime: the builder's resolution machinery.

    Raises:
        TypeError: ``context`` or ``runtime`` has the wrong type.
    """

    __slots__ = ("_builder", "_closed", "_context", "_lock", "_memo", "_runtime")

    def __init__(
        self, *, builder: SnapshotBuilder, context: FetchContext, runtime: ResolutionRuntime
    ) -> None:
        if not isinstance(context, FetchContext):
            raise TypeError(f"context must be a FetchContext, got {type(context).__name__}")
        if not isinstance(runtime, ResolutionRuntime):
            raise TypeError(f"runtime must be a ResolutionRuntime, got {type(runtime).__name__}")
        self._builder = builder
        self._context = context
        self._runtime = runtime
        self._memo = PinnedMemo()
        self._lock = asyncio.Lock()  # binds to a loop only when a stage has to wait for it
        self._closed = False

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
        return self._closed or self._runtime.closed

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError(f"session {self.snapshot_id!r} is closed")
        if self._runtime.closed:
            raise SessionClosedError(f"the builder of session {self.snapshot_id!r} is closed")

    # -- stages ------------------------------------------------------------------------------

    async def resolve(
        self, keys: Iterable[ResourceKey], *, strict: bool = True, retry_errors: bool = False
    ) -> Snapshot:
        """Resolve ``keys`` (pinned ones are returned as pinned) into a snapshot of them.

        Args:
            keys: the resources of this stage (duplicates are resolved once).
            strict: raise when any of ``keys`` failed (``False``: failures are only listed
                in ``snapshot.errors``).
            retry_errors: acquire again keys whose earlier attempt failed (otherwise the
                remembered error is returned).

        Raises:
            SnapshotBuildError: with ``strict=True``, a key failed; ``error.snapshot`` holds the
                stage's partial snapshot (successful values are pinned all the same).
            SessionClosedError: the session or its builder is closed.
            TypeError: ``keys`` is not an iterable of ResourceKey, or a flag is not a bool.
        """
        self._check_open()
        check_bool("strict", strict)
        check_bool("retry_errors", retry_errors)
        ordered = requested_keys(keys)
        return await self._stage(
            ordered, ordered if strict else (), (), None, retry_errors, strict=strict
        )

    async def resolve_request(
        self, request: SnapshotRequest, *, retry_errors: bool = False
    ) -> Snapshot:
        """Resolve a :class:`SnapshotRequest` as a stage: only required failures raise.

        Values are pinned even when the request's consistency policy rejects the group; use
        :meth:`revalidate` (which checks the policy before committing) to replace them.

        Raises:
            SnapshotBuildError: a required key failed (with the stage's partial snapshot).
            SnapshotConsistencyError: the request's consistency policy was violated.
            SessionClosedError: the session or its builder is closed.
            TypeError, ValueError: ``request`` is not a SnapshotRequest, or names no key.
        """
        self._check_open()
        if not isinstance(request, SnapshotRequest):
            raise TypeError(f"request must be a SnapshotRequest, got {type(request).__name__}")
        if not request.keys:
            raise ValueError("request must name at least one required or optional key")
        check_bool("retry_errors", retry_errors)
        return await self._stage(
            request.keys,
            request.required,
            request.optional,
            request.consistency_policy,
            retry_errors,
            strict=True,
        )

    async def _stage(
        self,
        keys: Sequence[ResourceKey],
        required: Sequence[ResourceKey],
        optional: Sequence[ResourceKey],
        consistency: SnapshotConsistencyPolicy | None,
        retry_errors: bool,
        *,
        strict: bool,
    ) -> Snapshot:
        async with self._lock:
            self._check_open()
            started = self._runtime.clock.monotonic()
            diag = DiagnosticsCollector()
            memo = self._memo
            missing = memo.missing(keys, retry_errors=retry_errors)
            if missing:
                # Derivations take their dependencies from the pinned values first, so the
                # session never shows a derived value next to another revision of its input.
                values, errors = await self._acquire(
                    missing, diag, force_refresh=False, pinned=memo.values
                )
                self._check_open()  # closed meanwhile: pin nothing
                memo.pin(values, errors)
            snapshot = self._assemble(keys, memo.values, memo.errors, diag, started)
        report = self._runtime.engine.report
        try:
            check_consistency(snapshot, consistency, required, optional)
        except SnapshotConsistencyError as error:
            report.consistency_failed(snapshot.snapshot_id, error)
            report.session_resolved(
                snapshot,
                requested=len(keys),
                stage_failed=True,
                strict=strict,
                retry_errors=retry_errors,
            )
            raise
        failed = any(key in snapshot.errors for key in required)
        report.session_resolved(
            snapshot,
            requested=len(keys),
            stage_failed=failed,
            strict=strict,
            retry_errors=retry_errors,
        )
        raise_for_required(snapshot, required)
        return snapshot

    async def _acquire(
        self,
        keys: Sequence[ResourceKey],
        diag: DiagnosticsCollector,
        *,
        force_refresh: bool,
        pinned: Mapping[ResourceKey, SnapshotValue[Any]] | None = None,
    ) -> tuple[Values, Errors]:
        ctx, runtime = self._context, self._runtime
        if ctx.expired(runtime.clock):
            # The session's budget is spent: start no work that could only time out.
            runtime.counters.deadline_exceeded += len(keys)
            return {}, {
                key: as_resolution_error(
                    key,
                    SnapshotDeadlineExceededError(
                        f"deadline of session {ctx.snapshot_id!r} passed before {key} was resolved"
                    ),
                )
                for key in keys
            }
        return await runtime.resolve(keys, ctx, diag, force_refresh=force_refresh, pinned=pinned)

    def _assemble(
        self,
        keys: Sequence[ResourceKey],
        values: Mapping[ResourceKey, SnapshotValue[Any]],
        errors: Mapping[ResourceKey, Exception],
        diag: DiagnosticsCollector,
        started: float,
    ) -> Snapshot:
        ctx, runtime = self._context, self._runtime
        copies = self._memo.copies(keys, runtime.isolator, ctx.snapshot_id, values)
        return assemble(
            keys,
            copies,
            errors,
            snapshot_id=ctx.snapshot_id,
            created_at=ctx.requested_at,
            diag=diag,
            duration_ms=(runtime.clock.monotonic() - started) * 1000.0,
        )

    # -- revalidation ------------------------------------------------------------------------

    async def revalidate(
        self,
        keys: Iterable[ResourceKey],
        *,
        strict: bool = True,
        force_refresh: bool = False,
        consistency_policy: SnapshotConsistencyPolicy | None = None,
    ) -> Snapshot:
        """Re-resolve ``keys`` and every pinned derived value depending on them, atomically.

        By default the newest shared-cache or published revisions are read; with
        ``force_refresh=True`` the selected keys bypass the cache and go through the source
        chain again (with no fallback to the cached revision if that fails). Selected derived
        keys and pinned derived values depending on the selected keys are then re-read: the
        cache drops a derived revision whose dependency changed, so they are re-derived from
        the new revisions (a derivation whose dependencies did not change is not re-run).
        Either every affected value is committed, or the session keeps its previous state. A
        derived value is never committed next to a revision of a dependency other than the one
        it was computed from (a pinned dependency it was recomputed from a newer revision of is
        committed with it).

        Args:
            keys: the resources to revalidate (they need not be pinned yet).
            strict: raise when the attempt fails; ``False`` returns the retained values plus
                this call's errors (which are not remembered by the session).
            force_refresh: bypass the shared cache.
            consistency_policy: bound the observation skew of the refreshed group before it is
                committed (the selected keys; the derived ones too with
                ``include_optional_resources=True``).

        Returns:
            A snapshot of the selected and affected keys.

        Raises:
            SnapshotBuildError: with ``strict=True``, a key failed (previous state retained).
            SnapshotConsistencyError: the refreshed group violates ``consistency_policy``;
                always raised, even with ``strict=False``; the previous state is retained and
                ``error.snapshot`` shows the rejected revisions.
            SessionClosedError: the session or its builder is closed.
            TypeError: a bad argument.
        """
        self._check_open()
        check_bool("strict", strict)
        check_bool("force_refresh", force_refresh)
        if consistency_policy is not None and not isinstance(
            consistency_policy, SnapshotConsistencyPolicy
        ):
            raise TypeError("consistency_policy must be a SnapshotConsistencyPolicy or None")
        selected = requested_keys(keys)
        async with self._lock:
            self._check_open()
            counters = self._runtime.counters
            counters.revalidation_attempts += 1
            committed = False
            outcome: Snapshot | None = None
            inconsistent = False
            try:
                outcome, committed = await self._transact(
                    selected, strict, force_refresh, consistency_policy
                )
            except SnapshotConsistencyError as error:
                inconsistent = True
                self._runtime.engine.report.consistency_failed(self.snapshot_id, error)
                outcome = error.snapshot
                raise
            except SnapshotBuildError as error:
                outcome = error.snapshot
                raise
            finally:
                if not committed:
                    counters.revalidation_failures += 1
                self._report_revalidation(
                    selected, outcome, committed, strict, force_refresh, inconsistent
                )
        return outcome

    def _report_revalidation(
        self,
        selected: Sequence[ResourceKey],
        outcome: Snapshot | None,
        committed: bool,
        strict: bool,
        force_refresh: bool,
        inconsistent: bool,
    ) -> None:
        report = self._runtime.engine.report
        if not report.enabled:
            return
        resolved = 0 if outcome is None else len(outcome.resources)
        failed = 0 if outcome is None else len(outcome.errors)
        report.session_revalidated(
            self.snapshot_id,
            requested=len(selected),
            affected=resolved + failed,
            refreshed=resolved if committed else 0,
            failed=failed,
            committed=committed,
            strict=strict,
            force_refresh=force_refresh,
            consistency_failed=inconsistent,
        )

    async def _transact(
        self,
        selected: Sequence[ResourceKey],
        strict: bool,
        force_refresh: bool,
        policy: SnapshotConsistencyPolicy | None,
    ) -> tuple[Snapshot, bool]:
        """Acquire the new revisions, then commit them all or keep the previous state."""
        started = self._runtime.clock.monotonic()
        diag = DiagnosticsCollector()
        order, values, errors = await self._refresh(selected, force_refresh, diag)
        self._check_open()
        if errors:
            pinned = self._memo.values
            # A selected key that resolved but was never pinned is not retained either: say
            # why it is missing, so every selected key is a value or an error.
            uncommitted = {
                key: SourceUnavailableError(f"{key} resolved, but the revalidation failed")
                for key in selected
                if key not in pinned and key not in errors
            }
            errors = {**errors, **uncommitted}
            retained = self._assemble(order, pinned, errors, diag, started)
            if strict:
                raise SnapshotBuildError(dict(retained.errors), snapshot=retained)
            return retained, False
        snapshot = self._assemble(order, values, {}, diag, started)
        chosen = set(selected)
        check_consistency(snapshot, policy, selected, [k for k in order if k not in chosen])
        self._memo.commit(values)
        return snapshot, True

    async def _refresh(
        self, selected: Sequence[ResourceKey], force_refresh: bool, diag: DiagnosticsCollector
    ) -> tuple[list[ResourceKey], Values, Errors]:
        """Resolve the selected keys, then the pinned values derived from them, until no new
        derived value was computed from a revision other than the one it would be committed
        beside. Returns ``(keys in order, new values, errors)``."""
        pinned, declared = self._memo.values, self._runtime.declared_dependencies
        order: list[ResourceKey] = list(selected)
        values: Values = {}
        wanted: Sequence[ResourceKey] = selected
        forced, derived = self._split_forced(selected, force_refresh)
        for _ in range(_MAX_ROUNDS):
            following = dependents(wanted, {**pinned, **values}, declared)
            # Dependencies first, then a normal read of what derives from them: the cache drops
            # a derived entry whose dependency revision changed, so it is re-derived from the
            # revisions just written (and one whose dependencies did not change is kept).
            for batch, force in ((forced, force_refresh), ([*derived, *following], False)):
                if not batch:
                    continue
                order = ordered_union(order, batch)
                got, errors = await self._acquire(batch, diag, force_refresh=force)
                values.update(got)
                if errors:
                    return order, values, errors
            wanted = stale_dependencies(values.values(), {**pinned, **values})
            if not wanted:
                return order, values, {}
            # Later rounds re-read (never force) what changed under a derived value.
            forced, derived, force_refresh = list(wanted), [], False
        return order, values, mixed_revision_errors(values, {**pinned, **values})

    def _split_forced(
        self, selected: Sequence[ResourceKey], force_refresh: bool
    ) -> tuple[list[ResourceKey], list[ResourceKey]]:
        """``(keys to acquire with force_refresh, derived keys to re-read after them)``.

        A forced re-derivation is stamped with its oldest dependency's observation time, often
        the cached revision's own: the cache would keep that revision as an equal-time
        duplicate even when a dependency changed. Reading the derived key normally, after its
        dependencies, re-derives exactly when a dependency changed.
        """
        if not force_refresh:
            return list(selected), []
        pinned, runtime = self._memo.values, self._runtime
        derived = [
            key
            for key in selected
            if (bool(pinned[key].dependency_versions) if key in pinned else runtime.is_derived(key))
        ]
        return [key for key in selected if key not in derived], derived

    def snapshot(self) -> Snapshot:
        """Everything pinned so far, plus the remembered errors (isolated copies).

        Raises:
            SessionClosedError: the session or its builder is closed.
        """
        self._check_open()
        memo = self._memo
        keys = ordered_union(list(memo.values), list(memo.errors))
        return self._assemble(
            keys, memo.values, memo.errors, DiagnosticsCollector(), self._runtime.clock.monotonic()
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the session and forget its pinned values; later calls raise
        :class:`SessionClosedError`. Idempotent; the builder stays open."""
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
