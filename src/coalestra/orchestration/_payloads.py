"""Payloads: from what a source returned to each reader's :class:`SnapshotValue` (step 6).

:func:`normalize_payload` gives every source result one shape; :class:`SourceCopies` copies the
payloads at once (a source may keep and mutate what it returned; large ones off the loop, see
:mod:`._copy_jobs`); :class:`ValueFactory` validates ``observed_at`` (ObservationPolicy) and
stamps authority rank, version and dependency versions; :func:`hand_out` copies for readers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Protocol, TypeAlias, final

from ..cache._copying import is_large
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
from ..core._isolation import isolation_error, located
from ..core._policies import FutureObservationError
from ..core._validation import ReadOnlyDict, frozen_mapping
from ..core._values import wrap_payload
from ..observability._instrumentation import Instrumentation
from ._copy_jobs import COPY_FAILURES, CopyFailed, CopyJobs
from ._gate import GateResult
from ._ledger import KeyLedger
from ._sources import RegisteredSource

Call: TypeAlias = "tuple[float, GateResult[Any], float | None, Mapping[ResourceKey, str]]"
"""What the values of one call share: when its payloads arrived, the call's result, the time to
stamp payloads without ``observed_at`` with (``None``: now), the dependency versions."""


def normalize_payload(result: object) -> SourcePayload[Any]:
    """A source may return a bare value; wrap it so the engine sees one shape."""
    if type(result) is SourcePayload:
        return result
    return wrap_payload(result)


@final
class SourceCopies(CopyJobs):
    """Decides which source payloads are copied off the loop (in jobs, :class:`CopyJobs`),
    and copies the others inline."""

    __slots__ = ()

    def offloads(self, values: Iterable[SnapshotValue[Any]]) -> bool:
        """True when copying ``values`` goes to the runner: it offloads, and one of them is
        large (with ``True``: mutable) -- small and immutable values are copied inline."""
        if not self.runner.run_in_thread:
            return False
        needs_copy = self._isolator.needs_copy
        return any(
            needs_copy(value.value) and (self._offload_all or is_large(value.value))
            for value in values
        )

    def copy(
        self, source: str, payloads: Mapping[ResourceKey, SourcePayload[Any]]
    ) -> tuple[dict[ResourceKey, Any], list[ResourceKey]]:
        """The copy of every payload copied on the loop (an immutable one with the built-in
        copier: itself), made before the caller yields (a source may mutate what it returned
        from its next loop callback on), and the keys whose payloads go to the runner instead
        (:meth:`offload`: large ones, or with ``True`` every mutable one); each payload is
        judged once. A key whose copy failed maps to a :class:`CopyFailed` (fails here only)."""
        isolator = self._isolator
        copier, needs_copy = isolator.payload_copier, isolator.needs_copy
        offload, offload_all = self.runner.run_in_thread, self._offload_all
        made: dict[ResourceKey, Any] = {}
        offloaded: list[ResourceKey] = []
        for key, payload in payloads.items():
            value = payload.value
            if not needs_copy(value):
                made[key] = value
            elif offload and (offload_all or is_large(value)):
                offloaded.append(key)
            else:
                try:
                    made[key] = copier(value)
                except Exception as error:  # named here: no text is made per key otherwise
                    where = f"{key} from source {source!r}"
                    made[key] = CopyFailed(isolation_error(where, value, error))
        return made, offloaded


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
        Payloads are copied first, the large ones off the loop in one job within ``ctx``'s
        deadline (see :mod:`._copy_jobs`)."""
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
            self._report.resolved_values(source.name, source.kind.value, made[-len(accepted) :])
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


class Readers(Protocol):
    """What a reader's copy needs of the engine (the engine's ``Machinery`` has it)."""

    @property
    def copies(self) -> SourceCopies: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def isolator(self) -> PayloadIsolator: ...
    def policy_for(self, key: ResourceKey, /) -> FreshnessPolicy: ...
    @property
    def constant_policy(self) -> FreshnessPolicy | None: ...


async def hand_out(
    engine: Readers,
    ready: Mapping[ResourceKey, SnapshotValue[Any]],
    ctx: FetchContext,
    joined: Collection[ResourceKey],
    values: dict[ResourceKey, SnapshotValue[Any]],
    errors: dict[ResourceKey, Exception],
) -> None:
    """The reader copies of a build's resolved flights (:func:`consume`) into ``values``, with
    one reading of the clock for all: inline, or in one job of the copy runner when one of
    them is large (:meth:`CopyJobs.hand_out`)."""
    now = engine.clock.now()
    isolator, snapshot_id = engine.isolator, ctx.snapshot_id
    # Each payload is judged once: immutable ones (a stampede's) are never offloaded.
    mutable = [isolator.needs_copy(value.value) for value in ready.values()]
    if not any(mutable) or not engine.copies.offloads(ready.values()):
        constant, policy_for = engine.constant_policy, engine.policy_for
        for (key, value), copy in zip(ready.items(), mutable, strict=True):
            observed = value.observed_at
            age = now - observed if now > observed else 0.0
            stale = value.stale or not (constant or policy_for(key)).is_fresh(age)
            clone = _reader_clone(isolator, value, snapshot_id, age, stale, copy)
            values[key] = _marked(clone) if joined and key in joined else clone
        return
    copies = [reader_copy(engine, value, ctx, key in joined, now) for key, value in ready.items()]
    await engine.copies.hand_out(copies, ready, ctx.remaining_seconds(engine.clock), values, errors)


def consume(
    engine: Readers, outcome: SnapshotValue[Any], ctx: FetchContext, *, coalesced: bool = False
) -> SnapshotValue[Any]:
    """A private copy of a flight's value for one reader, with its age as of now;
    ``coalesced``: the reader joined another build's flight (so the metadata says)."""
    age, stale = _reading(engine, outcome, engine.clock.now())
    isolator = engine.isolator
    mutable = isolator.needs_copy(outcome.value)
    clone = _reader_clone(isolator, outcome, ctx.snapshot_id, age, stale, mutable)
    return _marked(clone) if coalesced else clone


def reader_copy(
    engine: Readers, outcome: SnapshotValue[Any], ctx: FetchContext, coalesced: bool, now: float
) -> Callable[[], SnapshotValue[Any]]:
    """:func:`consume` at ``now`` in two steps: the policy is read now, on the loop; the
    returned function only copies (so it may run in a worker thread)."""
    age, stale = _reading(engine, outcome, now)
    isolator, snapshot_id = engine.isolator, ctx.snapshot_id
    mutable = isolator.needs_copy(outcome.value)

    def copy() -> SnapshotValue[Any]:
        clone = _reader_clone(isolator, outcome, snapshot_id, age, stale, mutable)
        return _marked(clone) if coalesced else clone

    return copy


def _reading(engine: Readers, outcome: SnapshotValue[Any], now: float) -> tuple[float, bool]:
    """What a reader's copy of ``outcome`` says at ``now``: its age, and whether it is stale."""
    observed = outcome.observed_at
    age = now - observed if now > observed else 0.0
    policy = engine.constant_policy or engine.policy_for(outcome.key)
    return age, outcome.stale or not policy.is_fresh(age)


def _reader_clone(
    isolator: PayloadIsolator,
    outcome: SnapshotValue[Any],
    snapshot_id: str,
    age: float,
    stale: bool,
    mutable: bool,
) -> SnapshotValue[Any]:
    """A reader's private copy of ``outcome`` read at ``age``; ``mutable``: its payload must be
    copied (:meth:`PayloadIsolator.needs_copy`)."""
    payload = outcome.value
    metadata = outcome.metadata
    if not mutable and not (metadata and isolator.metadata_needs_copy(metadata)):
        # Nothing to copy: a new value read now sharing both, as clone_snapshot_value would.
        from_cache = outcome.from_cache
        return outcome._evolve(payload, age_seconds=age, stale=stale, from_cache=from_cache)
    try:
        clone = isolator.clone_snapshot_value(
            outcome,
            context="",  # named below on failure: no text is made per key otherwise
            age_seconds=age,
            stale=stale,
        )
    except PayloadIsolationError as error:
        where = f"{outcome.key} in snapshot {snapshot_id!r}"
        raise located(error, where) from error.__cause__
    return clone


def _marked(clone: SnapshotValue[Any]) -> SnapshotValue[Any]:
    """``clone`` marked as read from another build's flight. The clone is new and unshared, its
    metadata already isolated: the mark is added without copying it again; with no other
    metadata, every such clone shares one read-only mapping (of an immutable value)."""
    metadata = clone.metadata
    marked = ReadOnlyDict({**metadata, "coalesced_request": True}) if metadata else _JOINED
    _set(clone, "metadata", marked)
    return clone


_JOINED: Mapping[str, Any] = ReadOnlyDict({"coalesced_request": True})
_set = object.__setattr__
