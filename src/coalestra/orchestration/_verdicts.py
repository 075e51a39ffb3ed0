"""What a source's payload means before it becomes a value: for its source's circuit (a
success needs a valid, fresh payload, B-SRC-5) and, when it is refused, for its key's failures.
The base of ``_payloads.ValueFactory``, off the plain miss path: a payload without
``observed_at`` is stamped on arrival, fresh, and a plain miss refuses nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from ..core import (
    Clock,
    DiagnosticsCollector,
    FreshnessPolicy,
    ObservationPolicy,
    ResourceKey,
    SourcePayload,
    SourceProtocolError,
)
from ..core._policies import FutureObservationError
from ._ledger import KeyLedger
from ._sources import RegisteredSource


class Verdicts:
    """Judges payloads for their circuits, and records why a payload was refused."""

    __slots__ = ("_clock", "_observation", "_policy_for")

    def __init__(
        self,
        *,
        clock: Clock,
        policy_for: Callable[[ResourceKey], FreshnessPolicy],
        observation: ObservationPolicy,
    ) -> None:
        self._clock = clock
        self._policy_for = policy_for
        self._observation = observation

    def fails_circuit(self, key: ResourceKey, payload: SourcePayload[Any], now: float) -> bool:
        """True when a payload counts as a failed call on the source's circuit: its data is
        already past the key's TTL (a success needs ``age <= ttl``), or its ``observed_at`` is
        one ``ValueFactory.make`` rejects."""
        observed = payload.observed_at
        if observed is None:
            return False  # stamped with the time of arrival: age 0
        try:
            self._observation.future_skew(observed, now, what=str(key))
        except SourceProtocolError:
            return True
        return max(0.0, now - observed) > self._policy_for(key).ttl_seconds

    def circuit_successes(
        self, called: tuple[ResourceKey, ...], result: object
    ) -> Collection[ResourceKey]:
        """Keys whose payload is valid and fresh: a success for their circuits (B-SRC-5)."""
        if isinstance(result, SourcePayload):
            if result.observed_at is None:  # stamped on arrival: age 0, fresh
                return called
            return () if self.fails_circuit(called[0], result, self._clock.now()) else called
        assert isinstance(result, Mapping)
        now = self._clock.now()
        return [key for key, item in result.items() if not self.fails_circuit(key, item, now)]

    def circuit_successes_not_found(
        self, called: tuple[ResourceKey, ...], result: object
    ) -> Collection[ResourceKey]:
        """As :meth:`circuit_successes`, for a batch source whose omissions mean "not found":
        an omitted key was answered, so it is a success for its circuit group too."""
        assert isinstance(result, Mapping)
        answered = self.circuit_successes(called, result)
        return [*answered, *(key for key in called if key not in result)]

    @staticmethod
    def _rejected(
        source: RegisteredSource,
        key: ResourceKey,
        error: Exception,
        attempts: int,
        ledger: KeyLedger,
        diag: DiagnosticsCollector,
    ) -> None:
        """Record why ``ValueFactory.make`` refused ``key``'s payload as the key's failure (a
        copy that missed the deadline counts as an exceeded deadline)."""
        if isinstance(error, FutureObservationError):
            diag.future_timestamp_rejections += 1
        if isinstance(error, SourceProtocolError):
            ledger.reject(key, source.name, error, attempts)
        else:
            ledger.fail_fetch(key, source.name, error, attempts)
