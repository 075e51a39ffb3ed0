"""Declared transport timeouts of blocking sources: construction checks, pre-flight, violations.

A protected blocking source (see :func:`~coalestra.inspect_source_timeout_guarantee`) promises
that its transport gives up after ``transport_timeout_seconds``. Two checks hold it to that:

* **pre-flight**, after the capacity slot and before the call: a call whose transport timeout
  does not fit in the time left (the source timeout, or the build's deadline when that is
  closer) is not started, since its worker thread would outlive the build;
* **violation detection**, after the call: one that ran longer than its transport timeout plus
  a grace (or that our own timeout had to stop) is counted, reported, and its result still used.

Only protected sources are checked: :class:`RegisteredSource` carries a ``transport_timeout``
only for them, decided once at registration, so other sources' calls never reach this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, final

from ..concurrency._controller import CapacityLease
from ..core import (
    Clock,
    ResourceKey,
    SnapshotDeadlineExceededError,
    SourceTimeoutError,
)
from ..core._source_timeouts import SourceTimeoutGuarantee, SourceTimeoutGuaranteeStatus
from ..core._validation import ReadOnlyDict
from ..observability._instrumentation import Instrumentation
from ._counters import EngineCounters
from ._flights import FlightWindow
from ._sources import RegisteredSource, SourceKind

DEFAULT_TRANSPORT_GRACE: Final = 0.05
"""``source_transport_timeout_grace_seconds``: how late a call may end before it counts."""
DEFAULT_DISPATCH_GRACE: Final = 0.0
"""``source_deadline_dispatch_grace_seconds``: how far a transport timeout may exceed the time
left before the deadline and the call still be started."""

SNAPSHOT_DEADLINE: Final = "snapshot_deadline"
"""The ``reason`` of a rejection (0.6.4 also names ``source_timeout``, which a protected source
cannot hit here: its transport timeout is below its source timeout, and the call timeout is
counted from the moment the call starts)."""
COMPLETED_LATE: Final = "completed_late"
FAILED_LATE: Final = "failed_late"
COALESTRA_TIMEOUT: Final = "coalestra_timeout"


@final
@dataclass(frozen=True, slots=True)
class SourceTimeoutSummary:
    """The builder's sources' guarantees, by name in priority order, and their counts: the
    static part of the health snapshot, computed once."""

    guarantees: Mapping[str, SourceTimeoutGuarantee]
    blocking: int
    protected: int
    unsafe: int
    undeclared: int


def check_source_timeouts(
    sources: tuple[RegisteredSource, ...], *, require: bool | None, allow_unsafe: bool
) -> SourceTimeoutSummary:
    """Apply the builder's declaration rules to its registered sources and summarize them.

    ``require`` (``require_source_timeout_declarations``) refuses sources that declare nothing
    (``None``, the default, and ``False`` accept them); without ``allow_unsafe`` a blocking
    source must be protected.

    Raises:
        ValueError: a source breaks a rule; the message names it and what to declare.
    """
    guarantees = {source.name: source.timeout_guarantee for source in sources}
    for name, guarantee in guarantees.items():
        status = guarantee.status
        if require and status is SourceTimeoutGuaranteeStatus.UNDECLARED:
            raise ValueError(
                f"source {name!r} declares no blocking_io and "
                "require_source_timeout_declarations=True: declare blocking_io=False, or "
                "blocking_io=True with its transport_timeout_seconds"
            )
        if guarantee.blocking_io and not guarantee.protected and not allow_unsafe:
            raise ValueError(
                f"blocking source {name!r} is not protected ({status.value}): "
                f"{_remedy(guarantee)}, or pass allow_unsafe_blocking_sources=True"
            )
    values = guarantees.values()
    blocking = sum(guarantee.blocking_io for guarantee in values)
    protected = sum(guarantee.protected for guarantee in values)
    return SourceTimeoutSummary(
        guarantees=ReadOnlyDict(guarantees),
        blocking=blocking,
        protected=protected,
        unsafe=blocking - protected,
        undeclared=sum(not guarantee.declaration_present for guarantee in values),
    )


def _remedy(guarantee: SourceTimeoutGuarantee) -> str:
    status = guarantee.status
    if status is SourceTimeoutGuaranteeStatus.UNSAFE_NOT_OFFLOADED:
        return "run its blocking I/O in a worker thread (run_sync_in_thread=True, a sync function)"
    if status is SourceTimeoutGuaranteeStatus.UNSAFE_TIMEOUT_MISSING:
        return "declare its transport_timeout_seconds"
    return (
        f"make its transport_timeout_seconds ({guarantee.transport_timeout_seconds}) shorter "
        f"than its timeout_seconds ({guarantee.source_timeout_seconds})"
    )


@final
class TransportGuard:
    """Pre-flight and violation checks of protected sources' calls, and their counters.

    Args:
        clock: the builder's clock (budgets and elapsed times are read on it).
        counters: the builder's counters (deadline rejections and violations are counted).
        report: where metrics and events go.
        transport_grace: ``source_transport_timeout_grace_seconds``.
        dispatch_grace: ``source_deadline_dispatch_grace_seconds``.
    """

    __slots__ = ("_clock", "_counters", "_dispatch_grace", "_report", "_transport_grace")

    def __init__(
        self,
        *,
        clock: Clock,
        counters: EngineCounters,
        report: Instrumentation,
        transport_grace: float = DEFAULT_TRANSPORT_GRACE,
        dispatch_grace: float = DEFAULT_DISPATCH_GRACE,
    ) -> None:
        self._clock = clock
        self._counters = counters
        self._report = report
        self._transport_grace = transport_grace
        self._dispatch_grace = dispatch_grace

    def preflight(
        self,
        source: RegisteredSource,
        window: FlightWindow,
        keys: tuple[ResourceKey, ...],
        lease: CapacityLease,
    ) -> None:
        """Let the call start only if its transport timeout fits in the time it may take: the
        smaller of the source timeout and the time left before the deadline.

        A protected source's transport timeout is below its own timeout (checked when the
        builder is made), so only the deadline can leave too little time. Up to the dispatch
        grace beyond it, the call still starts and is reported as deadline pressure.

        Raises:
            SnapshotDeadlineExceededError: the deadline leaves too little time (counted in
                ``deadline_exceeded_count``); ``lease`` is released first.
        """
        transport = source.transport_timeout
        assert transport is not None  # the gate calls this for protected sources only
        budget = window.remaining()
        own = source.timeout_seconds
        if budget is None or (own is not None and own <= budget) or transport < budget:
            return
        gap = transport - budget
        if budget > 0.0 and gap < self._dispatch_grace:
            self._report.dispatch_under_deadline_pressure(
                source.name, _resource(keys), transport, budget, self._dispatch_grace, gap
            )
            return
        lease.release()
        self._counters.deadline_exceeded += 1
        self._report.transport_budget_rejected(
            source.name, SNAPSHOT_DEADLINE, _resource(keys), transport, budget
        )
        raise SnapshotDeadlineExceededError(
            f"snapshot deadline leaves source {source.name} too little time for its transport "
            f"timeout{_where(source, keys)}: budget={budget:.3f}s, "
            f"transport_timeout={transport:.3f}s, gap={gap:.3f}s"
        )

    def observe(
        self,
        source: RegisteredSource,
        keys: tuple[ResourceKey, ...],
        elapsed: float,
        outcome: BaseException | None,
    ) -> None:
        """Count a call that overran its transport timeout by more than the grace, or that
        our own timeout stopped (always counted). A cancelled call is not judged."""
        transport = source.transport_timeout
        assert transport is not None
        if isinstance(outcome, SourceTimeoutError):
            verdict = COALESTRA_TIMEOUT
        elif elapsed <= transport + self._transport_grace:
            return
        elif outcome is None:
            verdict = COMPLETED_LATE
        elif isinstance(outcome, Exception):
            verdict = FAILED_LATE
        else:
            return  # cancelled: whoever cancelled it decided, not the transport
        counters = self._counters
        counters.transport_violations += 1
        by_source = counters.transport_violations_by_source
        by_source[source.name] = by_source.get(source.name, 0) + 1
        self._report.transport_timeout_violated(
            source.name, verdict, _resource(keys), transport, elapsed, self._transport_grace
        )


def timeout_health(summary: SourceTimeoutSummary, counters: EngineCounters) -> dict[str, Any]:
    """The ``BuilderHealth`` fields of source timeout declarations, by field name."""
    return {
        "source_timeout_guarantees": summary.guarantees,
        "blocking_source_count": summary.blocking,
        "protected_blocking_source_count": summary.protected,
        "unsafe_blocking_source_count": summary.unsafe,
        "undeclared_source_timeout_count": summary.undeclared,
        "source_transport_timeout_violation_count": counters.transport_violations,
        "source_transport_timeout_violations": dict(counters.transport_violations_by_source),
    }


def _resource(keys: tuple[ResourceKey, ...]) -> str:
    """The ``resource`` of an event: the key, or the keys of a batch call, comma-separated."""
    return ", ".join(map(str, keys))


def _where(source: RegisteredSource, keys: tuple[ResourceKey, ...]) -> str:
    """The key a message names; batch calls name none (as the gate's timeouts, B-TIME-3)."""
    if source.kind is SourceKind.BATCH or len(keys) != 1:
        return ""
    return f" while resolving {keys[0]}"
