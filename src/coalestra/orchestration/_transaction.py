"""A session revalidation as one transaction: its argument checks, its read, its all-or-nothing
commit, and how it is counted and reported."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import final

from ..core import (
    ResourceKey,
    Snapshot,
    SnapshotAcceptanceError,
    SnapshotAcceptancePolicy,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
)
from ..core._validation import check_bool
from ._checks import acceptance_violations, skew_violation
from ._pinning import resolved_closure
from ._revalidation import Errors, Refreshed, Values, refresh
from ._session_state import SessionState


@final
@dataclass(frozen=True, slots=True)
class Outcome:
    """How a revalidation ended: the snapshot to return (or carried by ``error``)."""

    snapshot: Snapshot
    refreshed: Refreshed
    committed: bool
    error: SnapshotBuildError | None = None


def check_revalidation(
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


def returned(outcome: Outcome, strict: bool) -> Snapshot:
    """What ``revalidate`` returns, or the error it raises: a failed target with ``strict``;
    a consistency or acceptance violation always."""
    error = outcome.error
    if error is not None and (
        strict or isinstance(error, (SnapshotConsistencyError, SnapshotAcceptanceError))
    ):
        raise error
    return outcome.snapshot


async def run_revalidation(
    state: SessionState,
    selected: Sequence[ResourceKey],
    strict: bool,
    force_refresh: bool,
    consistency: SnapshotConsistencyPolicy | None,
    acceptance: SnapshotAcceptancePolicy | None,
) -> Outcome:
    """One revalidation under the session's lock, counted and reported however it ends."""
    state.check_open()
    _check_resolved(state, selected)
    counters = state.engine.counters
    counters.revalidation_attempts += 1
    outcome: Outcome | None = None
    try:
        outcome = await _transact(state, selected, force_refresh, consistency, acceptance)
    finally:
        if outcome is None or not outcome.committed:
            counters.revalidation_failures += 1
        _report(state, selected, strict, force_refresh, outcome, acceptance is not None)
    return outcome


def _check_resolved(state: SessionState, selected: Sequence[ResourceKey]) -> None:
    memo = state.memo
    known = resolved_closure(memo.values, memo.errors, state.declared_dependencies)
    unknown = [key for key in selected if key not in known]
    if unknown:
        raise ValueError(
            "revalidation requires resources already resolved in this session: "
            + ", ".join(str(key) for key in unknown)
        )


async def _transact(
    state: SessionState,
    selected: Sequence[ResourceKey],
    force_refresh: bool,
    policy: SnapshotConsistencyPolicy | None,
    acceptance: SnapshotAcceptancePolicy | None = None,
) -> Outcome:
    """Read the new revisions, then commit them all or keep the previous state."""
    started = state.engine.clock.monotonic()
    memo = state.memo

    readings: Values = {}  # every revision the revalidation read, dependencies included

    async def acquire(batch: Sequence[ResourceKey], force: bool) -> tuple[Values, Errors]:
        values, errors, read = await state.acquire(batch, force_refresh=force)
        readings.update(read)
        return values, errors

    got = await refresh(
        selected,
        # the remembered inputs too: a value derived anew from another revision of one
        # brings along every pinned value derived from that input
        {**memo.inputs, **memo.values},
        state.engine,
        acquire,
        force_refresh=force_refresh,
        readings=readings,
    )
    state.check_open()
    if got.errors:
        retained = state.accumulated(started, got.errors)
        return Outcome(
            retained, got, False, SnapshotBuildError(dict(got.errors), snapshot=retained)
        )
    if policy is not None:
        previous = state.accumulated(started)
        violation = skew_violation(got.values, selected, policy, previous)
        if violation is not None:
            state.engine.report.consistency_failed(state.snapshot_id, violation)
            return Outcome(previous, got, False, violation)
    shown = {key: value for key, value in got.values.items() if memo.shows(key)}
    if acceptance is not None:
        rejected = _reject(state, selected, got.values, shown, acceptance)
        if rejected is not None:
            return Outcome(state.accumulated(started), got, False, rejected)
    memo.commit(shown)
    memo.follow_inputs(shown.values(), {**readings, **got.values})
    state.diag.stale_values += sum(1 for value in shown.values() if value.stale)
    return Outcome(state.accumulated(started), got, True)


def _reject(
    state: SessionState,
    selected: Sequence[ResourceKey],
    new: Values,
    shown: Values,
    policy: SnapshotAcceptancePolicy,
) -> SnapshotAcceptanceError | None:
    """The acceptance error of the candidate state, or ``None`` when it is acceptable."""
    targets = {key: new[key] for key in selected if key in new}
    candidate = {**state.memo.values, **shown, **targets}
    violations = acceptance_violations(
        state.engine, candidate, policy, selected, (), state.snapshot_id
    )
    if not violations:
        return None
    # The error carries the retained state: nothing was committed.
    return SnapshotAcceptanceError(violations=violations, snapshot=state.accumulated(None))


def _report(
    state: SessionState,
    selected: Sequence[ResourceKey],
    strict: bool,
    force_refresh: bool,
    outcome: Outcome | None,
    accepting: bool,
) -> None:
    report = state.engine.report
    if not report.enabled:
        return
    got = None if outcome is None else outcome.refreshed
    committed = outcome is not None and outcome.committed
    refreshed = 0
    if committed and got is not None:
        refreshed = sum(1 for key in got.values if state.memo.shows(key))
    report.session_revalidated(
        state.snapshot_id,
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
