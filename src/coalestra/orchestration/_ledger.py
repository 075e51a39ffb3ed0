"""Per-group bookkeeping of why keys failed, and of stale data kept as a last resort."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, final

from ..core import (
    DependencyCycleError,
    FreshnessPolicy,
    ResourceKey,
    ResourceResolutionError,
    SnapshotDeadlineExceededError,
    SnapshotValue,
    SourceFailure,
    SourceUnavailableError,
)
from ._gate import GateResult
from ._sources import RegisteredSource


@final
class KeyLedger:
    """What went wrong for each key of one flight group, source by source."""

    __slots__ = ("_cycles", "_failures", "_stale")

    def __init__(self) -> None:
        self._failures: dict[ResourceKey, list[SourceFailure]] = {}
        self._stale: dict[ResourceKey, SnapshotValue[Any]] = {}
        self._cycles: dict[ResourceKey, DependencyCycleError] = {}

    def fail(self, key: ResourceKey, source: str, error: BaseException, attempts: int = 1) -> None:
        """Record that ``source`` failed for ``key``."""
        failure = SourceFailure.from_exception(source, error, attempts)
        self._failures.setdefault(key, []).append(failure)

    def fail_cycle(self, key: ResourceKey, source: str, cycle: DependencyCycleError) -> None:
        """``key`` sits on a dependency cycle: that, not the failures, is its error."""
        self._cycles[key] = cycle
        self.fail(key, source, cycle)

    def fail_all(
        self, source: RegisteredSource, keys: Iterable[ResourceKey], result: GateResult[Any]
    ) -> list[ResourceKey]:
        """A gated call failed: every key of it failed at ``source``; return them."""
        failed = self.fail_blocked(source, result)
        error = result.error or SourceUnavailableError(f"{source.name} returned nothing")
        for key in keys:
            if key not in result.blocked:
                self.fail(key, source.name, error, result.attempts)
                failed.append(key)
        return failed

    def fail_blocked(self, source: RegisteredSource, result: GateResult[Any]) -> list[ResourceKey]:
        """Keys an open circuit kept from the call; return them."""
        for key, error in result.blocked.items():
            self.fail(key, source.name, error, 0)
        return list(result.blocked)

    def keep_stale(self, source: RegisteredSource, value: SnapshotValue[Any]) -> None:
        """A stale payload fails this source for the key but stays the fallback of last resort."""
        held = self._stale.get(value.key)
        if held is None or value.observed_at > held.observed_at:
            self._stale[value.key] = value
        stale = SourceUnavailableError(f"{source.name} returned data {value.age_seconds:.3f}s old")
        self.fail(value.key, source.name, stale, value.attempts)

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

    def error_for(self, key: ResourceKey, *, deadline_passed: bool) -> Exception:
        """The error to report for ``key`` once no source is left to try."""
        cycle = self._cycles.get(key)
        if cycle is not None:
            return cycle
        failures = tuple(self._failures.get(key, ()))
        if deadline_passed:
            tried = "; ".join(failure.format(max_message_length=120) for failure in failures[:3])
            detail = f" ({tried})" if tried else ""
            return SnapshotDeadlineExceededError(
                f"deadline passed before {key} was resolved{detail}"
            )
        return ResourceResolutionError(key, failures)
