"""Payloads: turning what a source returned into a :class:`SnapshotValue` (step 6 of a build).

:func:`normalize_payload` gives every source result one shape; :class:`ValueFactory`
validates ``observed_at`` (ObservationPolicy), isolates the payload at once (a source may keep
and mutate the object it returned), stamps authority rank, version and dependency versions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, final

from ..core import (
    AuthorityPolicyProvider,
    Clock,
    FreshnessPolicy,
    ObservationPolicy,
    PayloadIsolator,
    ResourceKey,
    SnapshotValue,
    SourcePayload,
    SourceProtocolError,
)
from ..core._validation import EMPTY_MAPPING, frozen_mapping
from ..core._values import wrap_payload
from ._sources import RegisteredSource


def normalize_payload(result: object) -> SourcePayload[Any]:
    """A source may return a bare value; wrap it so the engine sees one shape."""
    if type(result) is SourcePayload:
        return result
    return wrap_payload(result)


@final
class ValueFactory:
    """Makes snapshot values from source payloads; the one place provenance is stamped."""

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
        one :meth:`make` rejects."""
        observed = payload.observed_at
        if observed is None:
            return False  # stamped with the time of arrival: age 0
        try:
            self._observation.future_skew(observed, now, what=str(key))
        except SourceProtocolError:
            return True
        return max(0.0, now - observed) > self._policy_for(key).ttl_seconds

    def make(
        self,
        source: RegisteredSource,
        key: ResourceKey,
        payload: SourcePayload[Any],
        *,
        attempts: int,
        latency_ms: float,
        default_observed_at: float | None = None,
        dependency_versions: Mapping[ResourceKey, str] = EMPTY_MAPPING,
    ) -> SnapshotValue[Any]:
        """Build the value ``source`` produced for ``key``.

        Raises:
            SourceProtocolError: ``observed_at`` is not finite or too far in the future.
            PayloadIsolationError: the payload or its metadata cannot be copied.
        """
        now = self._clock.now()
        context = f"{key} from source {source.name!r}"
        observed = payload.observed_at
        if observed is None:
            observed = now if default_observed_at is None else default_observed_at
        # Kept as given, never clamped to now (a future stamp is served with age 0 and its skew).
        skew = self._observation.future_skew(observed, now, what=f"source observation for {key}")
        metadata: Mapping[str, Any] = self._isolator.freeze_metadata(
            payload.metadata, context=context
        )
        if skew > 0.0:
            metadata = {**metadata, "clock_skew_seconds": skew}
        age = max(0.0, now - observed)
        rank = 0 if self._authority is None else self._authority.rank_for(key, source.name)
        return SnapshotValue._trusted(
            key,
            self._isolator.copy(payload.value, context=context),
            source.name,
            observed,
            now,
            age,
            not self._policy_for(key).is_fresh(age),
            latency_ms,
            attempts,
            frozen_mapping("metadata", metadata),
            rank,
            frozen_mapping("dependency_versions", dependency_versions),
        )
