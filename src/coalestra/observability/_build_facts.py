"""The facts of whole builds and sessions (built, resolved, revalidated, consistency, acceptance,
non-throwing requests): the part of :class:`~._instrumentation.Instrumentation` that reports
once per build or stage, never per key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import _names as names
from ._sinkcalls import SinkCalls


def _status(failed: bool) -> str:
    return "error" if failed else "success"


class BuildFacts(SinkCalls):
    """Build- and session-level facts (the base of ``Instrumentation``)."""

    __slots__ = ()

    def build_finished(
        self, snapshot: Any, *, build_failed: bool, strict: bool, resources: int
    ) -> None:
        """A build ended; ``build_failed``: it raised (a required key failed, or consistency)."""
        if self.metrics_on:
            status = _status(build_failed)
            self._safely(self._increment, names.SNAPSHOT_BUILD_TOTAL, 1, status=status)
            self._safely(self._increment, names.SESSION_RESOLVE_TOTAL, 1, status=status)
        if self.events_on:
            self._safely(
                self._emit,
                names.EVENT_SNAPSHOT_BUILT,
                snapshot_id=snapshot.snapshot_id,
                resources=resources,
                resolved=len(snapshot.resources),
                failed=len(snapshot.errors),
                build_failed=build_failed,
                strict=strict,
                diagnostics=snapshot.diagnostics,
            )

    def session_resolved(
        self,
        snapshot: Any,
        *,
        requested: int,
        stage_failed: bool,
        strict: bool,
        retry_errors: bool,
    ) -> None:
        """A session stage (``resolve`` / ``resolve_request``) ended."""
        self._count(names.SESSION_RESOLVE_TOTAL, status=_status(stage_failed))
        self._event(
            names.EVENT_SESSION_RESOLVED,
            snapshot_id=snapshot.snapshot_id,
            requested=requested,
            resolved=len(snapshot.resources),
            failed=len(snapshot.errors),
            total_resources=len(snapshot.resources) + len(snapshot.errors),
            strict=strict,
            retry_errors=retry_errors,
        )

    def session_revalidated(
        self,
        snapshot_id: str,
        *,
        requested: int,
        affected: int,
        refreshed: int,
        failed: int,
        committed: bool,
        strict: bool,
        force_refresh: bool,
        consistency_failed: bool,
        acceptance_failed: bool | None = None,
    ) -> None:
        """A session revalidation ended, committed or not. ``acceptance_failed`` is reported
        only for a revalidation with an acceptance policy (the 0.5.7 payload stays exact)."""
        extra = {} if acceptance_failed is None else {"acceptance_failed": acceptance_failed}
        self._count(names.SESSION_REVALIDATE_TOTAL, status=_status(not committed))
        self._event(
            names.EVENT_SESSION_REVALIDATED,
            snapshot_id=snapshot_id,
            requested=requested,
            affected=affected,
            refreshed=refreshed,
            failed=failed,
            committed=committed,
            retained_previous=not committed,
            strict=strict,
            force_refresh=force_refresh,
            consistency_failed=consistency_failed,
            **extra,
        )

    def consistency_failed(self, snapshot_id: str, error: Any) -> None:
        """A :class:`~coalestra.SnapshotConsistencyError` was raised."""
        self._count(names.CONSISTENCY_TOTAL, status="error", rule="observation_skew")
        self._event(
            names.EVENT_CONSISTENCY_FAILED,
            snapshot_id=snapshot_id,
            resources=tuple(str(key) for key in error.keys),
            oldest_resource=str(error.oldest_key),
            newest_resource=str(error.newest_key),
            observation_skew_ms=error.observation_skew_seconds * 1000.0,
            max_observation_skew_ms=error.max_observation_skew_seconds * 1000.0,
        )

    def acceptance_evaluated(self, snapshot_id: str, violations: Sequence[Any]) -> None:
        """An acceptance policy was evaluated; ``violations`` empty means accepted."""
        if not violations:
            self._count(names.ACCEPTANCE_TOTAL, status="success")
            return
        self._count(names.ACCEPTANCE_TOTAL, status="error")
        reasons = sorted({violation.reason.value for violation in violations})
        for reason in reasons:
            self._count(names.ACCEPTANCE_VIOLATION_TOTAL, reason=reason)
        self._event(
            names.EVENT_ACCEPTANCE_FAILED,
            snapshot_id=snapshot_id,
            violations=len(violations),
            reasons=",".join(reasons),
        )

    def try_request_resolved(self, result: Any) -> None:
        """A non-throwing request build ended with ``result`` (a SnapshotResult)."""
        state = result.state.value
        self._count(names.TRY_REQUEST_TOTAL, status=state)
        snapshot = result.snapshot
        self._event(
            names.EVENT_TRY_REQUEST_RESOLVED,
            snapshot_id=None if snapshot is None else snapshot.snapshot_id,
            state=state,
            reason=result.reason,
            allowed_actions=result.allowed_actions,
        )
