"""Multi-stage sessions: one identity, creation time, deadline and pinned-value memo.

A stage (``resolve`` / ``resolve_request``) acquires only the keys the session has not resolved
yet, through the builder's shared engine (cache, single-flight, capacity); whatever it resolves
is pinned, so later stages see the same revision whatever the cache or the publisher did
meanwhile. Every stage returns the whole session so far: every pinned value and every stored
error. ``revalidate`` is the one way to replace pinned values, and it is all or nothing.
Operations of one session run one at a time (a session is a sequential unit of work;
serializing them is what makes a revalidation's commit atomic with respect to the other
stages, and lets ``close()`` wait for the operation in flight).

This module is the public face; the work is in :mod:`._session_state` (what a session carries),
:mod:`._stage` (one stage), :mod:`._transaction` (one revalidation), :mod:`._revalidation` (what
it reads), :mod:`._pinning` (the memo) and :mod:`._inputs` (the inputs of derived values).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from types import TracebackType
from typing import final

from ..core import (
    FetchContext,
    RequestDegradationPolicy,
    ResourceKey,
    Snapshot,
    SnapshotAcceptancePolicy,
    SnapshotConsistencyPolicy,
    SnapshotRequest,
    SnapshotResult,
)
from ..core._validation import check_bool
from ._assembly import requested_keys
from ._session_state import SessionState
from ._stage import stage
from ._transaction import check_revalidation, returned, run_revalidation
from ._trying import check_try_arguments, resolve_trying
from ._wiring import Engine


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

    __slots__ = ("_engine", "_state")

    def __init__(self, *, engine: Engine, context: FetchContext) -> None:
        if not isinstance(context, FetchContext):
            raise TypeError(f"context must be a FetchContext, got {type(context).__name__}")
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be an Engine, got {type(engine).__name__}")
        self._engine = engine
        self._state = SessionState(engine, context)

    # -- identity ----------------------------------------------------------------------------

    @property
    def context(self) -> FetchContext:
        """The context handed to every source call of the session (id, deadline, metadata)."""
        return self._state.context

    @property
    def snapshot_id(self) -> str:
        """The id of every snapshot the session returns."""
        return self._state.snapshot_id

    @property
    def created_at(self) -> float:
        """Wall-clock time the session was created (the ``created_at`` of its snapshots)."""
        return self._state.context.requested_at

    @property
    def closed(self) -> bool:
        """True once the session or its builder is closed."""
        return self._state.closed or self._engine.closed

    def _check_open(self) -> None:
        self._state.check_open()

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
        return await stage(
            self._state, ordered, ordered if strict else (), (), None, strict, retry_errors
        )

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
        return await stage(
            self._state,
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
            lambda: stage(self._state, request.keys, (), (), None, False, retry_errors),
            request,
            policy,
            now=engine.clock.now,
            ttl_for=lambda key: policy_for(key).ttl_seconds,
            report=engine.report,
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
        check_revalidation(strict, force_refresh, consistency_policy, acceptance_policy)
        selected = requested_keys(keys)
        async with self._state.lock:
            outcome = await run_revalidation(
                self._state, selected, strict, force_refresh, consistency_policy, acceptance_policy
            )
        return returned(outcome, strict)

    def snapshot(self) -> Snapshot:
        """The accumulated session snapshot: every pinned value and stored error (isolated
        copies).

        Raises:
            SessionClosedError, RuntimeError: as :meth:`resolve`.
        """
        self._check_open()
        return self._state.accumulated(None)

    async def snapshot_async(self) -> Snapshot:
        """:meth:`snapshot`, its copies made through the builder's copy runner: in a worker
        thread when the builder offloads copies and a pinned payload needs one (one job for
        the whole snapshot), inline otherwise. It waits for a running stage to finish.

        Raises:
            SessionClosedError, RuntimeError: as :meth:`resolve`.
            PayloadCopySubsystemClosedError: the builder's copies are shutting down.
        """
        self._check_open()
        async with self._state.lock:
            self._check_open()
            copies = self._engine.copies
            state = self._state
            if not copies.wanted_for(state.memo.values.values()):
                return state.accumulated(None)
            return await copies.runner.run(partial(state.accumulated, None))

    # -- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the session once the operation in flight (if any) has finished, and forget
        its pinned values; later calls raise ``SessionClosedError("SnapshotSession is
        closed")``. Idempotent; the builder stays open."""
        state = self._state
        if state.closed:
            return
        async with self._state.lock:
            state.closed = True
            state.memo.clear()

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
        state = "closed" if self.closed else f"{len(self._state.memo.values)} pinned"
        return f"<SnapshotSession {self.snapshot_id!r} {state}>"
