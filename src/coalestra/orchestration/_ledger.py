"""Per-group bookkeeping of why keys failed, and of stale data kept as a last resort."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any, final

from .._compat import BaseExceptionGroup
from ..core import (
    DependencyCycleError,
    FreshnessPolicy,
    ResourceKey,
    ResourceNotFound,
    ResourceNotFoundError,
    ResourceResolutionError,
    SnapshotValue,
    SourceFailure,
    SourceUnavailableError,
)
from ..core._validation import ReadOnlyDict
from ..observability._instrumentation import Instrumentation
from ._gate import GateResult
from ._sources import RegisteredSource


class StaleSourceData(SourceUnavailableError):
    """Internal: a source returned data already past its TTL (B-SRC-3 names it so)."""


@final
class KeyLedger:
    """What went wrong for each key of one flight group, source by source."""

    __slots__ = ("_failed", "_failures", "_not_found", "_order", "_report", "_stale")

    def __init__(self, report: Instrumentation, order: Mapping[str, int]) -> None:
        self._report = report  # source outcomes are reported as they are recorded
        self._order = order  # source name -> position in the priority chain
        self._failures: dict[ResourceKey, list[SourceFailure]] = {}
        self._stale: dict[ResourceKey, SnapshotValue[Any]] = {}
        self._not_found: set[ResourceKey] = set()  # keys some source said do not exist
        self._failed: set[ResourceKey] = set()  # keys with any other failure

    def fail(self, key: ResourceKey, source: str, error: BaseException, attempts: int = 1) -> None:
        """Record that ``source`` failed (or said "not found") for ``key``."""
        failure = SourceFailure.from_exception(source, error, attempts)
        self._failures.setdefault(key, []).append(failure)
        (self._not_found if isinstance(error, ResourceNotFound) else self._failed).add(key)

    def not_found(self, key: ResourceKey) -> bool:
        """True when every source asked for ``key`` said it does not exist."""
        return key in self._not_found and key not in self._failed

    def fail_fetch(
        self, key: ResourceKey, source: str, error: BaseException, attempts: int = 1
    ) -> None:
        """``source`` was asked for ``key`` and failed: record and report it."""
        self.fail(key, source, error, attempts)
        report = self._report
        if report.enabled:
            report.fetched(source, "failure")
            report.source_failed(key, source, error)

    def reject(self, key: ResourceKey, source: str, error: BaseException, attempts: int) -> None:
        """``source`` answered for ``key`` with a timestamp that is refused."""
        self.fail(key, source, error, attempts)
        report = self._report
        if report.enabled:
            report.fetched(source, "invalid_timestamp")
            report.payload_rejected(key, source, error)

    def last_error_type(self, key: ResourceKey) -> str:
        """The error type of the last failure recorded for ``key`` (``""``: none)."""
        failures = self._failures.get(key)
        return failures[-1].error_type if failures else ""

    def fail_cycle(self, key: ResourceKey, source: str, cycle: DependencyCycleError) -> None:
        """``key`` closed a dependency cycle at ``source`` (no call was made: attempts 0)."""
        self.fail(key, source, cycle, 0)

    def fail_all(
        self, source: RegisteredSource, keys: Iterable[ResourceKey], result: GateResult[Any]
    ) -> list[ResourceKey]:
        """A gated call failed: every key of it failed at ``source``; return them."""
        failed = self.fail_blocked(source, result)
        error = result.error or SourceUnavailableError(f"{source.name} returned nothing")
        blocked = len(failed)
        for key in keys:
            if key not in result.blocked:
                self.fail(key, source.name, error, result.attempts)
                failed.append(key)
        report = self._report
        if report.enabled and len(failed) > blocked:
            status = "not_found" if isinstance(error, ResourceNotFound) else "failure"
            report.fetched(source.name, status, len(failed) - blocked)
            if report.events_on:
                for key in failed[blocked:]:
                    report.source_failed(key, source.name, error)
        return failed

    def fail_blocked(self, source: RegisteredSource, result: GateResult[Any]) -> list[ResourceKey]:
        """Keys an open circuit kept from the call; return them."""
        report = self._report
        for key, error in result.blocked.items():
            self.fail(key, source.name, error, 0)
            if report.events_on:
                report.circuit_open(source.name, key, error)
        if result.blocked and report.metrics_on:
            report.fetched(source.name, "circuit_open", len(result.blocked))
        return list(result.blocked)

    def keep_stale(
        self, source: RegisteredSource, value: SnapshotValue[Any], policy: FreshnessPolicy
    ) -> None:
        """A stale payload fails this source for the key but stays the fallback of last resort."""
        held = self._stale.get(value.key)
        if held is None or value.observed_at > held.observed_at:
            self._stale[value.key] = value
        ttl = policy.ttl_seconds
        stale = StaleSourceData(f"age {value.age_seconds:.3f}s exceeds ttl {ttl:.3f}s")
        self.fail(value.key, source.name, stale, value.attempts)
        report = self._report
        if report.enabled:
            report.fetched(source.name, "stale")
            report.source_failed(value.key, source.name, stale)

    def take_usable_stale(
        self,
        keys: Iterable[ResourceKey],
        policy_for: Callable[[ResourceKey], FreshnessPolicy],
        now: float,
    ) -> list[SnapshotValue[Any]]:
        """The stale data kept for ``keys`` that their policies let be served on error."""
        usable: list[SnapshotValue[Any]] = []
        for key in keys:
            held = self._stale.pop(key, None)
            if held is None:
                continue
            policy = policy_for(key)
            if policy.allow_stale_on_error and policy.is_usable(now - held.observed_at):
                usable.append(held)
        return usable

    def error_for(self, key: ResourceKey) -> Exception:
        """The error to report for ``key`` once no source is left to try: always a
        :class:`ResourceResolutionError` listing every failure (B-TIME-1), deadline ones and
        a dependency cycle the key closed (B-SRC-8) included; a :class:`ResourceNotFoundError`
        when every source asked said the resource does not exist."""
        # In the order tried (B-SRC-3): a supports() failure is found before any call is made,
        # and keys fork down their chains concurrently, so record order is not chain order.
        order = self._order
        failures = tuple(
            sorted(self._failures.get(key, ()), key=lambda failure: order.get(failure.source, -1))
        )
        if self.not_found(key):
            return ResourceNotFoundError(key, failures)
        return ResourceResolutionError(key, failures)


INTERNAL_SOURCE = "snapshot-builder"
"""The ``source`` of a failure no source call made (a resolution stopped or out of time)."""


def as_resolution_error(key: ResourceKey, error: Exception) -> Exception:
    """``error`` as a :class:`ResourceResolutionError` for ``key`` (B-TIME-1): a bare error
    becomes its single failure, under :data:`INTERNAL_SOURCE`, with no attempt."""
    if isinstance(error, ResourceResolutionError):
        return error
    return ResourceResolutionError(key, (SourceFailure.from_exception(INTERNAL_SOURCE, error, 0),))


def raised_error(reason: BaseException | None) -> Exception | None:
    """The error a group's work raised, out of its task groups (None: cancelled or ended)."""
    while isinstance(reason, BaseExceptionGroup):
        inner = [e for e in reason.exceptions if not isinstance(e, asyncio.CancelledError)]
        reason = inner[0] if inner else None
    return reason if isinstance(reason, Exception) else None


def stale_fallback(
    candidate: SnapshotValue[Any], error: Exception, now: float, policy: FreshnessPolicy
) -> SnapshotValue[Any] | None:
    """``candidate`` served on error (B-CACHE-16), if it is still within its stale window."""
    age = max(0.0, now - candidate.observed_at)
    if age > policy.max_stale_seconds:
        return None
    metadata = {
        **candidate.metadata,
        "fallback_error_type": type(error).__name__,
        "fallback_error": str(error),
    }
    return candidate._served(now, age, True, ReadOnlyDict(metadata))
