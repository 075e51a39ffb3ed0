"""Payloads: turning what a source returned into a :class:`SnapshotValue` (step 6 of a build).

:func:`normalize_payload` gives every source result one shape; :class:`ValueFactory`
validates ``observed_at`` (ObservationPolicy), isolates the payload at once (a source may keep
and mutate the object it returned), stamps authority rank, version and dependency versions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any, final

from ..core import (
    AuthorityPolicyProvider,
    Clock,
    DiagnosticsCollector,
    FetchContext,
    FreshnessPolicy,
    ObservationPolicy,
    PayloadIsolationError,
    PayloadIsolator,
    ResourceKey,
    SnapshotValue,
    SourcePayload,
    SourceProtocolError,
)
from ..core._isolation import located
from ..core._policies import FutureObservationError
from ..core._validation import EMPTY_MAPPING, frozen_mapping
from ..core._values import wrap_payload
from ..observability._instrumentation import Instrumentation
from ._copies import COPY_FAILURES, Copied, CopyFailed, SourceCopies
from ._gate import GateResult
from ._ledger import KeyLedger
from ._sources import RegisteredSource


def normalize_payload(result: object) -> SourcePayload[Any]:
    """A source may return a bare value; wrap it so the engine sees one shape."""
    if type(result) is SourcePayload:
        return result
    return wrap_payload(result)


@final
class ValueFactory:
    """Makes snapshot values from source payloads; the one place provenance is stamped."""

    __slots__ = (
        "_authority",
        "_clock",
        "_copies",
        "_isolator",
        "_observation",
        "_policy_for",
        "_report",
    )

    def __init__(
        self,
        *,
        clock: Clock,
        policy_for: Callable[[ResourceKey], FreshnessPolicy],
        observation: ObservationPolicy,
        authority: AuthorityPolicyProvider | None,
        isolator: PayloadIsolator,
        report: Instrumentation,
        copies: SourceCopies,
    ) -> None:
        self._report = report
        self._clock = clock
        self._policy_for = policy_for
        self._observation = observation
        self._authority = authority
        self._isolator = isolator
        self._copies = copies

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

    def circuit_successes(
        self, called: tuple[ResourceKey, ...], result: object
    ) -> Collection[ResourceKey]:
        """Keys whose payload is valid and fresh: a success for their circuits (B-SRC-5)."""
        now = self._clock.now()
        if isinstance(result, SourcePayload):
            return () if self.fails_circuit(called[0], result, now) else called
        assert isinstance(result, Mapping)
        return [key for key, item in result.items() if not self.fails_circuit(key, item, now)]

    def circuit_successes_not_found(
        self, called: tuple[ResourceKey, ...], result: object
    ) -> Collection[ResourceKey]:
        """As :meth:`circuit_successes`, for a batch source whose omissions mean "not found":
        an omitted key was answered, so it is a success for its circuit group too."""
        assert isinstance(result, Mapping)
        answered = self.circuit_successes(called, result)
        return [*answered, *(key for key in called if key not in result)]

    async def accept(
        self,
        source: RegisteredSource,
        payloads: Mapping[ResourceKey, SourcePayload[Any]],
        result: GateResult[Any],
        made: list[SnapshotValue[Any]],
        ledger: KeyLedger,
        diag: DiagnosticsCollector,
        *,
        versions: Mapping[ResourceKey, str] | None = None,
        oldest: float | None = None,
        ctx: FetchContext | None = None,
    ) -> set[ResourceKey]:
        """Make values of what one call returned; add the good ones to ``made`` (to commit
        with their level) and return their keys. A stale payload is kept in ``ledger`` as a
        last resort instead; a rejected one is recorded there as the key's failure. Large
        payloads are first copied off the loop in one job, within ``ctx``'s deadline (see
        :mod:`._copies`)."""
        copied = None
        offloaded = self._copies.wanted(payloads)
        if offloaded:
            timeout = None if ctx is None else ctx.remaining_seconds(self._clock)
            copied = await self._copies.copy(source.name, payloads, offloaded, timeout)
        accepted: list[SnapshotValue[Any]] = []
        for key, payload in payloads.items():
            value = self._make_or_fail(
                source, key, payload, result, ledger, diag, versions, oldest, copied
            )
            if value is None:
                continue
            # A value stamped with its oldest input's time (opt-in) is as old as that input;
            # that is not the deriver's fault.
            inherited = oldest is not None and payload.observed_at is None
            if value.stale and not inherited:
                policy = self._policy_for(key)
                if policy.ttl_seconds > 0.0:
                    ledger.keep_stale(source, value, policy)
                    continue
            accepted.append(value)
        made.extend(accepted)
        if accepted and self._report.enabled:
            self._report_resolved(source, accepted)
        return {value.key for value in accepted}

    def _report_resolved(self, source: RegisteredSource, made: list[SnapshotValue[Any]]) -> None:
        report = self._report
        report.fetched(source.name, "success", len(made))
        if report.events_on:
            kind = source.kind.value
            for value in made:
                report.resolved(
                    value.key,
                    source.name,
                    latency_ms=value.latency_ms,
                    attempts=value.attempts,
                    source_kind=kind,
                    authority_rank=value.authority_rank,
                )

    def _make_or_fail(
        self,
        source: RegisteredSource,
        key: ResourceKey,
        payload: SourcePayload[Any],
        result: GateResult[Any],
        ledger: KeyLedger,
        diag: DiagnosticsCollector,
        versions: Mapping[ResourceKey, str] | None,
        oldest: float | None,
        copied: Copied | None,
    ) -> SnapshotValue[Any] | None:
        """:meth:`make`, or ``None`` with the rejection recorded as the key's failure (a copy
        that missed the deadline counts as an exceeded deadline)."""
        try:
            return self.make(
                source,
                key,
                payload,
                attempts=result.attempts,
                latency_ms=result.latency_ms,
                default_observed_at=oldest,
                dependency_versions=versions or EMPTY_MAPPING,
                copied=copied,
            )
        except (SourceProtocolError, PayloadIsolationError, *COPY_FAILURES) as error:
            if isinstance(error, FutureObservationError):
                diag.future_timestamp_rejections += 1
            if isinstance(error, SourceProtocolError):
                ledger.reject(key, source.name, error, result.attempts)
            else:
                ledger.fail_fetch(key, source.name, error, result.attempts)
            return None

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
        copied: Copied | None = None,
    ) -> SnapshotValue[Any]:
        """Build the value ``source`` produced for ``key``; ``copied`` holds payload copies
        already made (see :mod:`._copies`).

        Raises:
            SourceProtocolError: ``observed_at`` is not finite or too far in the future.
            PayloadIsolationError: the payload or its metadata cannot be copied.
            SnapshotDeadlineExceededError, PayloadCopySubsystemClosedError: its copy off the
                loop missed the deadline or was refused (the builder is closing).
        """
        now = self._clock.now()
        observed = payload.observed_at
        if observed is None:
            observed = now if default_observed_at is None else default_observed_at
        # Kept as given, never clamped to now (a future stamp is served with age 0 and its skew).
        # A finite float not after now (the common case) has no skew: nothing to check or name.
        if observed.__class__ is float and -math.inf < observed <= now:
            skew = 0.0
        else:
            what = f"source observation for {key}"
            skew = self._observation.future_skew(observed, now, what=what)
        metadata: Mapping[str, Any] = payload.metadata
        if metadata:
            context = f"{key} from source {source.name!r}"
            metadata = self._isolator.freeze_metadata(metadata, context=context)
        if skew > 0.0:
            metadata = {**metadata, "clock_skew_seconds": skew}
        age = max(0.0, now - observed)
        rank = 0 if self._authority is None else self._authority.rank_for(key, source.name)
        if copied is not None and key in copied:
            copy = copied[key]
            if type(copy) is CopyFailed:
                raise copy.error
        else:
            try:
                copy = self._isolator.copy(payload.value, context="")
            except PayloadIsolationError as error:  # named here: no text made per key otherwise
                raise located(error, f"{key} from source {source.name!r}") from error.__cause__
        return SnapshotValue._trusted(
            key,
            copy,
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
