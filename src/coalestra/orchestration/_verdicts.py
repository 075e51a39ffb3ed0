"""What a source's payload becomes, in general: the value ``make`` stamps with its provenance
(``observed_at`` checked against the ObservationPolicy, authority rank, dependency versions),
what it means for its source's circuit (a success needs a valid, fresh payload, B-SRC-5), and
why a refused one failed its key. The base of ``_payloads.ValueFactory``, off the plain miss
path: a bare value from a plain call is made there directly (stamped on arrival: fresh).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeAlias

from ..core import (
    AuthorityPolicyProvider,
    Clock,
    DiagnosticsCollector,
    FreshnessPolicy,
    ObservationPolicy,
    PayloadIsolator,
    ResourceKey,
    SnapshotValue,
    SourcePayload,
    SourceProtocolError,
)
from ..core._policies import FutureObservationError
from ..core._validation import ReadOnlyDict
from ._copy_jobs import CopyFailed
from ._ledger import KeyLedger
from ._sources import RegisteredSource

Call: TypeAlias = "tuple[float, float, int, float | None, Mapping[ResourceKey, str]]"
"""What the values of one call share: when its payloads arrived, its latency (ms) and attempts,
the time to stamp payloads without ``observed_at`` with (``None``: now), the dependency
versions."""


class Verdicts:
    """Makes a value of any payload, judges payloads for their circuits, and records why a
    payload was refused."""

    __slots__ = ("_authority", "_clock", "_isolator", "_observation", "_policy_for")

    def __init__(
        self,
        *,
        clock: Clock,
        policy_for: Callable[[ResourceKey], FreshnessPolicy],
        observation: ObservationPolicy,
        authority: AuthorityPolicyProvider | None,
        isolator: PayloadIsolator,
    ) -> None:
        self._clock = clock
        self._policy_for = policy_for
        self._observation = observation
        self._authority = authority
        self._isolator = isolator

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

    def good(self, key: ResourceKey, payload: SourcePayload[Any]) -> bool:
        """True when ``payload`` counts as a success for its circuit (:meth:`fails_circuit`)."""
        if payload.observed_at is None:  # stamped on arrival: age 0, fresh
            return True
        return not self.fails_circuit(key, payload, self._clock.now())

    def circuit_successes(
        self, called: tuple[ResourceKey, ...], result: object
    ) -> Collection[ResourceKey]:
        """Keys whose payload is valid and fresh: a success for their circuits (B-SRC-5)."""
        if isinstance(result, SourcePayload):
            return called if self.good(called[0], result) else ()
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

    def make(
        self,
        source: RegisteredSource,
        key: ResourceKey,
        payload: SourcePayload[Any],
        copy: Any,
        call: Call,
    ) -> SnapshotValue[Any]:
        """The value ``source`` produced for ``key`` in ``call``, holding ``copy`` (its copy).

        Raises:
            SourceProtocolError: ``observed_at`` is not finite or too far in the future.
            PayloadIsolationError: the payload or its metadata cannot be copied.
            SnapshotDeadlineExceededError, PayloadCopySubsystemClosedError: its copy off the
                loop missed the deadline or was refused (the builder is closing).
        """
        now, latency_ms, attempts, oldest, dependency_versions = call
        observed = payload.observed_at
        if observed is None:
            observed = now if oldest is None else oldest
        # Kept as given, never clamped to now (a future stamp is served with age 0 and its skew).
        # A finite float not after now (the common case) has no skew: nothing to check or name.
        skew = 0.0
        if observed.__class__ is not float or not -math.inf < observed <= now:
            skew = self._observation.future_skew(
                observed, now, what=f"source observation for {key}"
            )
        metadata: Mapping[str, Any] = payload.metadata  # read-only already (SourcePayload's)
        if metadata:
            context = f"{key} from source {source.name!r}"
            metadata = self._isolator.freeze_metadata(metadata, context=context)
        if skew > 0.0:
            metadata = ReadOnlyDict({**metadata, "clock_skew_seconds": skew})
        if type(copy) is CopyFailed:
            raise copy.error
        age = now - observed if now > observed else 0.0
        rank = 0 if self._authority is None else self._authority.rank_for(key, source.name)
        return SnapshotValue._trusted(
            key,
            copy,
            source.name,
            observed,
            now,
            age,
            age > 0.0 and not self._policy_for(key).is_fresh(age),  # age 0: fresh, any TTL
            latency_ms,
            attempts,
            metadata,
            rank,
            dependency_versions,
        )
