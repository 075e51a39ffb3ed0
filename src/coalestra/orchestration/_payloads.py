"""Payloads: turning what a source returned into a :class:`SnapshotValue` (step 6 of a build).

:func:`normalize_payload` gives every source result one shape; :class:`ValueFactory`
validates ``observed_at`` (ObservationPolicy), isolates the payload at once (a source may keep
and mutate the object it returned), stamps authority rank, version and dependency versions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeAlias, final

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
from ..core._policies import FutureObservationError
from ..core._validation import ReadOnlyDict, frozen_mapping
from ..core._values import wrap_payload
from ..observability._instrumentation import Instrumentation
from ._copies import COPY_FAILURES, CopyFailed, SourceCopies
from ._gate import GateResult
from ._ledger import KeyLedger
from ._sources import RegisteredSource

Call: TypeAlias = "tuple[float, GateResult[Any], float | None, Mapping[ResourceKey, str]]"
"""What the values of one call share: when its payloads arrived (``now``), the call's result
(attempts, latency), the time to stamp payloads without ``observed_at`` with (``None``: now)
and the dependency versions (read-only)."""


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

    async def accept(
        self,
        source: RegisteredSource,
        payloads: Mapping[ResourceKey, SourcePayload[Any]],
        result: GateResult[Any],
        made: list[SnapshotValue[Any]],
        ledger: Callable[[], KeyLedger],
        diag: DiagnosticsCollector,
        *,
        versions: Mapping[ResourceKey, str] | None = None,
        oldest: float | None = None,
        ctx: FetchContext | None = None,
    ) -> set[ResourceKey]:
        """Make values of what one call returned; add the good ones to ``made`` (to commit
        with their level) and return their keys. A stale payload is kept in ``ledger()`` (made
        only then) as a last resort instead; a rejected one is recorded there as its failure.
        Payloads are copied first, the large ones off the loop in one job within ``ctx``'s deadline
        (see :mod:`._copies`)."""
        clock = self._clock
        copies, offloaded = self._copies.copy(source.name, payloads)
        if offloaded:
            timeout = None if ctx is None else ctx.remaining_seconds(clock)
            await self._copies.offload(source.name, payloads, offloaded, copies, timeout)
        accepted: set[ResourceKey] = set()
        # One call's payloads arrived together: one reading of the clock, one frozen mapping.
        call = (clock.now(), result, oldest, frozen_mapping("dependency_versions", versions))
        for key, payload in payloads.items():
            try:
                value = self.make(source, key, payload, copies[key], call)
            except (SourceProtocolError, PayloadIsolationError, *COPY_FAILURES) as error:
                self._rejected(source, key, error, result.attempts, ledger(), diag)
                continue
            # A value stamped with its oldest input's time (opt-in) is as old as that input;
            # that is not the deriver's fault.
            if value.stale and not (oldest is not None and payload.observed_at is None):
                policy = self._policy_for(key)
                if policy.ttl_seconds > 0.0:
                    ledger().keep_stale(source, value, policy)
                    continue
            made.append(value)
            accepted.add(key)
        if accepted and self._report.enabled:
            self._report_resolved(source, made[-len(accepted) :])
        return accepted

    @staticmethod
    def _rejected(
        source: RegisteredSource,
        key: ResourceKey,
        error: Exception,
        attempts: int,
        ledger: KeyLedger,
        diag: DiagnosticsCollector,
    ) -> None:
        """Record why :meth:`make` refused ``key``'s payload as the key's failure (a copy that
        missed the deadline counts as an exceeded deadline)."""
        if isinstance(error, FutureObservationError):
            diag.future_timestamp_rejections += 1
        if isinstance(error, SourceProtocolError):
            ledger.reject(key, source.name, error, attempts)
        else:
            ledger.fail_fetch(key, source.name, error, attempts)

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

    def make(
        self,
        source: RegisteredSource,
        key: ResourceKey,
        payload: SourcePayload[Any],
        copy: Any,
        call: Call,
    ) -> SnapshotValue[Any]:
        """The value ``source`` produced for ``key`` in ``call``, holding ``copy`` (the
        payload's copy, see :mod:`._copies`).

        Raises:
            SourceProtocolError: ``observed_at`` is not finite or too far in the future.
            PayloadIsolationError: the payload or its metadata cannot be copied.
            SnapshotDeadlineExceededError, PayloadCopySubsystemClosedError: its copy off the
                loop missed the deadline or was refused (the builder is closing).
        """
        now, result, oldest, dependency_versions = call
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
            result.latency_ms,
            result.attempts,
            metadata,
            rank,
            dependency_versions,
        )
