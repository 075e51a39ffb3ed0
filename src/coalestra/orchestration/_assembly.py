"""A build, end to end, around the engine: :class:`Builds` makes a build's context and hands
its keys to the engine; then the outcomes become a :class:`Snapshot` (``assemble``), checked
for consistency and acceptance, raising for required failures (carrying the partial snapshot,
so nothing resolved is lost), and the build is reported as it finished."""

from __future__ import annotations

import math
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, final

from ..core import (
    Clock,
    DiagnosticsCollector,
    FetchContext,
    ResourceKey,
    Snapshot,
    SnapshotAcceptanceError,
    SnapshotAcceptancePolicy,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotValue,
)
from ..core._acceptance import TtlFor, evaluate_acceptance
from ..core._closed import BUILDER_CLOSED, ClosedError
from ..core._snapshot import key_tuple
from ..core._validation import EMPTY_MAPPING, ReadOnlyDict, frozen_mapping
from ..observability._instrumentation import Instrumentation
from ..observability._tracing import Span, Tracer, describe_build
from ._engine import Engine
from ._view import BuildView


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
    *,
    snapshot_id: str,
    created_at: float,
    diag: DiagnosticsCollector,
    duration_ms: float,
) -> Snapshot:
    """Build the snapshot in request order, with frozen diagnostics."""
    if not errors and len(values) == len(keys) and list(values) == list(keys):
        # Every key resolved, already in request order (a warm build): no re-keying needed.
        resources: Mapping[ResourceKey, SnapshotValue[Any]] = ReadOnlyDict(values)
    else:
        resources = {key: values[key] for key in keys if key in values}
    failed = {key: errors[key] for key in keys if key in errors} if errors else EMPTY_MAPPING
    diag.requested_resources += len(keys)
    diag.resolved_resources += len(resources)
    diag.failed_resources += len(failed)
    # Comprehensions: on Python 3.11+ their slot reads beat map() over an attrgetter.
    diag.stale_values += len([value for value in resources.values() if value.stale])
    observed = [value.observed_at for value in resources.values()]
    skew_ms = (max(observed) - min(observed)) * 1000.0 if observed else 0.0
    return Snapshot(
        snapshot_id=snapshot_id,
        created_at=created_at,
        resources=resources,
        errors=failed,
        diagnostics=diag.freeze(duration_ms=duration_ms, observation_skew_ms=skew_ms),
    )


def check_consistency(
    snapshot: Snapshot,
    policy: SnapshotConsistencyPolicy | None,
    required: Collection[ResourceKey],
    optional: Collection[ResourceKey],
) -> None:
    """Raise :class:`SnapshotConsistencyError` when the scoped values were observed too far
    apart. The scope is the resolved required keys, plus resolved optional ones when the
    policy says; a skew equal to the limit passes."""
    if policy is None:
        return
    scope = list(required)
    if policy.include_optional_resources:
        scope += optional
    error = skew_violation(snapshot.resources, scope, policy, snapshot)
    if error is not None:
        raise error


def skew_violation(
    values: Mapping[ResourceKey, SnapshotValue[Any]],
    scope: Iterable[ResourceKey],
    policy: SnapshotConsistencyPolicy,
    snapshot: Snapshot,
) -> SnapshotConsistencyError | None:
    """The violation of ``policy`` by the values of ``scope`` found in ``values``, if any,
    carrying ``snapshot`` (which need not hold those values: a failed revalidation reports
    the state it kept)."""
    present = [(values[key].observed_at, key) for key in scope if key in values]
    if len(present) < 2:
        return None
    oldest = min(present, key=lambda item: item[0])
    newest = max(present, key=lambda item: item[0])
    skew = newest[0] - oldest[0]
    if skew <= policy.max_observation_skew_seconds:
        return None
    return SnapshotConsistencyError(
        keys=tuple(key for _, key in present),
        oldest_key=oldest[1],
        oldest_observed_at=oldest[0],
        newest_key=newest[1],
        newest_observed_at=newest[0],
        observation_skew_seconds=skew,
        max_observation_skew_seconds=policy.max_observation_skew_seconds,
        snapshot=snapshot,
    )


def raise_for_required(snapshot: Snapshot, required: Collection[ResourceKey]) -> None:
    """Raise :class:`SnapshotBuildError` with the partial snapshot if a required key failed."""
    if not snapshot.errors:
        return
    errors = {key: snapshot.errors[key] for key in required if key in snapshot.errors}
    if errors:
        raise SnapshotBuildError(errors, snapshot=snapshot)


def check_acceptance(
    snapshot: Snapshot,
    policy: SnapshotAcceptancePolicy,
    required: Collection[ResourceKey],
    optional: Collection[ResourceKey],
    *,
    now: float,
    ttl_for: TtlFor,
    report: Instrumentation,
) -> None:
    """Raise :class:`SnapshotAcceptanceError` (carrying ``snapshot``) when the resolved values
    break ``policy``; report the evaluation either way. Called only when a policy is given."""
    violations = evaluate_acceptance(
        snapshot.resources, policy, required, optional, now=now, ttl_for=ttl_for
    )
    report.acceptance_evaluated(snapshot.snapshot_id, violations)
    if violations:
        raise SnapshotAcceptanceError(violations=violations, snapshot=snapshot)


@final
class Builds:
    """The builds of one builder; ``closed`` once its ``aclose()`` began."""

    __slots__ = ("_clock", "_engine", "_report", "_tracer", "closed")

    def __init__(
        self, engine: Engine, clock: Clock, report: Instrumentation, tracer: Tracer
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
            snapshot = await self._resolve_snapshot(keys, ctx)
            # Required failures first; the consistency check covers a complete group only.
            failed = bool(snapshot.errors) and any(key in snapshot.errors for key in required)
            if not failed:
                try:
                    check_consistency(snapshot, consistency, required, optional)
                except SnapshotConsistencyError as error:
                    self._report.consistency_failed(snapshot.snapshot_id, error)
                    self._finish(snapshot, span, "inconsistent", strict)
                    raise
            self._finish(snapshot, span, "failed" if failed else _completeness(snapshot), strict)
            raise_for_required(snapshot, required)
            if acceptance is not None:
                self._accept(snapshot, acceptance, required, optional)
        return snapshot

    def _accept(
        self,
        snapshot: Snapshot,
        policy: SnapshotAcceptancePolicy,
        required: Sequence[ResourceKey],
        optional: Sequence[ResourceKey],
    ) -> None:
        policy_for = self._engine.policy_for
        check_acceptance(
            snapshot,
            policy,
            required,
            optional,
            now=self._clock.now(),
            ttl_for=lambda key: policy_for(key).ttl_seconds,
            report=self._report,
        )

    async def _resolve_snapshot(self, keys: Sequence[ResourceKey], ctx: FetchContext) -> Snapshot:
        diag = DiagnosticsCollector()
        started = self._clock.monotonic()
        values, errors = await self.resolve_keys(keys, ctx, diag)
        return assemble(
            keys,
            values,
            errors,
            snapshot_id=ctx.snapshot_id,
            created_at=ctx.requested_at,
            diag=diag,
            duration_ms=(self._clock.monotonic() - started) * 1000.0,
        )

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
        budget = _check_deadline(deadline_seconds)
        if snapshot_id is not None and not isinstance(snapshot_id, str):
            raise TypeError(f"snapshot_id must be a str, got {type(snapshot_id).__name__}")
        now, monotonic = self._clock.now(), self._clock.monotonic()
        return FetchContext(
            requested_at=now,
            deadline_at=None if budget is None else now + budget,
            deadline_monotonic=None if budget is None else monotonic + budget,
            metadata=frozen_mapping("metadata", metadata),
            snapshot_id=uuid.uuid4().hex if snapshot_id is None else snapshot_id,
        )

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
        return await self._engine.resolve(
            keys, ctx, diag, BuildView() if view is None else view, force_refresh=force_refresh
        )


def _check_deadline(deadline_seconds: object) -> float | None:
    """``None``, or the budget in seconds: a finite number > 0 (B-TIME-5).

    Raises:
        TypeError: not a number.
        ValueError: ``"deadline_seconds must be positive"`` (NaN included), or not finite.
    """
    if deadline_seconds is None:
        return None
    if isinstance(deadline_seconds, bool) or not isinstance(deadline_seconds, (int, float)):
        raise TypeError(f"deadline_seconds must be a number, got {type(deadline_seconds).__name__}")
    if not deadline_seconds > 0:  # written so that NaN fails too
        raise ValueError("deadline_seconds must be positive")
    if math.isinf(deadline_seconds):
        raise ValueError("deadline_seconds must be finite")
    return float(deadline_seconds)


def _completeness(snapshot: Snapshot) -> str:
    return "partial" if snapshot.errors else "complete"
