"""One session stage: pin what the session has not resolved yet, then check and report the
accumulated snapshot against the stage's required keys and policies."""

from __future__ import annotations

from collections.abc import Sequence

from ..core import (
    ResourceKey,
    Snapshot,
    SnapshotAcceptancePolicy,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
)
from ._checks import check_acceptance, check_consistency
from ._session_state import SessionState


async def stage(
    state: SessionState,
    keys: Sequence[ResourceKey],
    required: Sequence[ResourceKey],
    optional: Sequence[ResourceKey],
    consistency: SnapshotConsistencyPolicy | None,
    strict: bool,
    retry_errors: bool,
    acceptance: SnapshotAcceptancePolicy | None = None,
) -> Snapshot:
    """Run one stage: pin under the session's lock, then (outside it) raise when a required
    key failed or a policy is violated, and report the stage either way."""
    async with state.lock:
        snapshot = await _pin_missing(state, keys, retry_errors)
    report = state.engine.report

    def resolved(stage_failed: bool) -> None:
        report.session_resolved(
            snapshot,
            requested=len(keys),
            stage_failed=stage_failed,
            strict=strict,
            retry_errors=retry_errors,
        )

    try:
        failed = {key: snapshot.errors[key] for key in required if key in snapshot.errors}
        if failed:
            raise SnapshotBuildError(failed, snapshot=snapshot)
        try:
            check_consistency(snapshot, consistency, required, optional)
        except SnapshotConsistencyError as error:
            report.consistency_failed(state.snapshot_id, error)
            raise
        if acceptance is not None:
            check_acceptance(state.engine, snapshot, acceptance, required, optional)
    except SnapshotBuildError:
        resolved(True)
        raise
    resolved(False)
    return snapshot


async def _pin_missing(
    state: SessionState, keys: Sequence[ResourceKey], retry_errors: bool
) -> Snapshot:
    """Acquire and pin the stage's keys the session lacks; the accumulated snapshot."""
    state.check_open()
    started = state.engine.clock.monotonic()
    state.requested.update(dict.fromkeys(keys))
    memo = state.memo
    # A key read earlier only as a dependency is shown as the revision the session's
    # derived values were computed from, never read again.
    memo.promote(keys)
    missing = memo.missing(keys, retry_errors=retry_errors)
    if missing:
        # Derivations take their dependencies from the pinned values first, so the
        # session never shows a derived value next to another revision of its input.
        values, errors, readings = await state.acquire(
            missing, force_refresh=False, pinned={**memo.inputs, **memo.values}
        )
        state.check_open()  # the builder closed meanwhile: pin nothing
        memo.pin(values, errors)
        memo.remember_inputs(values.values(), readings)
        state.diag.stale_values += sum(1 for value in values.values() if value.stale)
    return state.accumulated(started)
