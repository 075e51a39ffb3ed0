"""Payloads: from what a source returned to each reader's :class:`SnapshotValue` (step 6).

:func:`normalize_payload` gives every source result one shape; :class:`SourceCopies` copies the
payloads at once (a source may keep and mutate what it returned; large ones off the loop, see
:mod:`._copy_jobs`); :class:`ValueFactory` validates ``observed_at`` (ObservationPolicy) and
stamps authority rank, version and dependency versions; :func:`hand_out` copies for readers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Protocol, final

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
from ..core._validation import EMPTY_MAPPING, ReadOnlyDict, frozen_mapping
from ..core._values import wrap_payload
from ..observability._instrumentation import Instrumentation
from ._copy_jobs import COPY_FAILURES, CopyFailed, CopyJobs
from ._gate import GateResult
from ._ledger import KeyLedger
from ._sources import RegisteredSource
from ._verdicts import Call, Verdicts


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

    def offloads(self, values: Iterable[SnapshotValue[Any]], mutable: Iterable[bool]) -> bool:
        """True when copying ``values`` goes to the runner: it offloads, and one of them is
        large (with ``True``: mutable) -- small and immutable values are copied inline.
        ``mutable``: whether each one's payload needs a copy at all (judged by the caller)."""
        if not self.runner.run_in_thread:
            return False
        if self._offload_all:
            return any(mutable)
        for value, copied in zip(values, mutable, strict=True):
            if copied and is_large(value.value):
                return True
        return False

    def copy(
        self, source: str, payloads: Mapping[ResourceKey, SourcePayload[Any]]
    ) -> tuple[dict[ResourceKey, Any], list[ResourceKey]]:
        """The copy of every payload copied on the loop (an immutable one with the built-in
        copier: itself), made before the caller yields (a source may mutate what it returned
        from its next loop callback on), and the keys whose payloads go to the runner instead
        (:meth:`offload`: large ones, or with ``True`` every mutable one); each payload is
        judged once. A key whose copy failed maps to a :class:`CopyFailed` (fails here only)."""
        made: dict[ResourceKey, Any] = {}
        offloaded: list[ResourceKey] = []
        copy_one = self.copy_one
        for key, payload in payloads.items():
            copy = copy_one(source, key, payload.value)
            if copy is OFFLOADED:
                offloaded.append(key)
            else:
                made[key] = copy
        return made, offloaded

    def copy_one(self, source: str, key: ResourceKey, value: Any) -> Any:
        """:meth:`copy` for one payload ``value``: its copy, a :class:`CopyFailed`, or
        :data:`OFFLOADED` (it goes to the runner)."""
        isolator = self._isolator
        if not isolator.needs_copy(value):
            return value
        if self.runner.run_in_thread and (self._offload_all or is_large(value)):
            return OFFLOADED
        try:
            return isolator.payload_copier(value)
        except Exception as error:  # named here: no text is made per key otherwise
            where = f"{key} from source {source!r}"
            return CopyFailed(isolation_error(where, value, error))


OFFLOADED = object()
"""What :meth:`SourceCopies.copy_one` returns for a payload it leaves to the runner."""


@final
class ValueFactory(Verdicts):
    """Makes snapshot values from source payloads; the one place provenance is stamped."""

    __slots__ = ("_copies", "_report")

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
        super().__init__(
            clock=clock,
            policy_for=policy_for,
            observation=observation,
            authority=authority,
            isolator=isolator,
        )
        self._report = report
        self._copies = copies

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
        frozen = frozen_mapping("dependency_versions", versions)
        call = (clock.now(), result.latency_ms, result.attempts, oldest, frozen)
        for key, payload in payloads.items():
            if self._take(made, source, key, payload, copies[key], call, ledger, diag):
                accepted.add(key)
        if accepted and self._report.enabled:
            self._report.resolved_values(source.name, source.kind.value, made[-len(accepted) :])
        return accepted

    def accept_one(
        self,
        source: RegisteredSource,
        key: ResourceKey,
        result: object,
        latency_ms: float,
        made: list[SnapshotValue[Any]],
        ledger: Callable[[], KeyLedger],
        diag: DiagnosticsCollector,
    ) -> bool | None:
        """:meth:`accept` for what one single-key call returned in one attempt (a payload or
        a bare value), inline: True if its value went to ``made``; ``None`` (nothing done)
        when its copy belongs off the loop: then :meth:`accept` it."""
        if type(result) is SourcePayload:
            payload, metadata = result.value, result.metadata
            plain = result.observed_at is None and not metadata
        else:  # a bare value
            payload, metadata, plain = result, EMPTY_MAPPING, True
        copy = self._copies.copy_one(source.name, key, payload)
        if copy is OFFLOADED:
            return None
        now = self._clock.now()
        # What make makes of a payload stamped on arrival without metadata (a float clock):
        # observed now, age 0, fresh.
        if plain and type(copy) is not CopyFailed and now.__class__ is float and now > -math.inf:
            authority = self._authority
            rank = 0 if authority is None else authority.rank_for(key, source.name)
            fields = (now, now, 0.0, False, latency_ms, 1, metadata, rank, EMPTY_MAPPING)
            made.append(SnapshotValue._trusted(key, copy, source.name, *fields))
        elif not self._take(
            made,
            source,
            key,
            normalize_payload(result),
            copy,
            (now, latency_ms, 1, None, EMPTY_MAPPING),
            ledger,
            diag,
        ):
            return False
        report = self._report
        if report.metrics_on or report.events_on:  # report.enabled, without the property call
            report.resolved_values(source.name, source.kind.value, made[-1:])
        return True

    async def accept_later(
        self,
        made: list[SnapshotValue[Any]],
        source: RegisteredSource,
        key: ResourceKey,
        returned: object,
        latency_ms: float,
        ledger: Callable[[], KeyLedger],
        diag: DiagnosticsCollector,
        ctx: FetchContext,
    ) -> bool:
        """What :meth:`accept_one` left (its copy belongs off the loop): :meth:`accept`."""
        payload = normalize_payload(returned)
        result = GateResult(payload, None, (key,), attempts=1, latency_ms=latency_ms)
        return bool(await self.accept(source, {key: payload}, result, made, ledger, diag, ctx=ctx))

    def _take(
        self,
        made: list[SnapshotValue[Any]],
        source: RegisteredSource,
        key: ResourceKey,
        payload: SourcePayload[Any],
        copy: Any,
        call: Call,
        ledger: Callable[[], KeyLedger],
        diag: DiagnosticsCollector,
    ) -> bool:
        """Make ``key``'s value (see :meth:`accept`): True when it went to ``made``."""
        try:
            value = self.make(source, key, payload, copy, call)
        except (SourceProtocolError, PayloadIsolationError, *COPY_FAILURES) as error:
            self._rejected(source, key, error, call[2], ledger(), diag)
            return False
        # A value stamped with its oldest input's time (opt-in) is as old as that input;
        # that is not the deriver's fault.
        if value.stale and not (call[3] is not None and payload.observed_at is None):
            policy = self._policy_for(key)
            if policy.ttl_seconds > 0.0:
                ledger().keep_stale(source, value, policy)
                return False
        made.append(value)
        return True


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
    if not any(mutable) or not engine.copies.offloads(ready.values(), mutable):
        constant, policy_for = engine.constant_policy, engine.policy_for
        copier, metadata_needs_copy = isolator.payload_copier, isolator.metadata_needs_copy
        for (key, value), copy in zip(ready.items(), mutable, strict=True):
            observed = value.observed_at
            age = now - observed if now > observed else 0.0
            # FreshnessPolicy.is_fresh (a final class), inline: one call less per key
            stale = value.stale or age > (constant or policy_for(key)).ttl_seconds
            metadata = value.metadata
            if metadata and metadata_needs_copy(metadata):
                clone = _reader_clone(isolator, value, snapshot_id, age, stale, copy)
            else:  # _reader_clone's common case (at most the payload to copy), inline
                payload = value.value
                if copy:
                    try:
                        payload = copier(payload)
                    except Exception as error:
                        raise _copy_failed(value, snapshot_id, error) from error
                clone = value._evolve(
                    payload, age_seconds=age, stale=stale, from_cache=value.from_cache
                )
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
    if not (metadata and isolator.metadata_needs_copy(metadata)):
        # At most the payload to copy: a new value read now sharing the metadata (what
        # clone_snapshot_value makes, without judging the payload again).
        if mutable:
            try:
                payload = isolator.payload_copier(payload)
            except Exception as error:
                raise _copy_failed(outcome, snapshot_id, error) from error
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


def _copy_failed(outcome: SnapshotValue[Any], snapshot_id: str, error: Exception) -> Exception:
    """The error of a reader's copy of ``outcome``'s payload (text made on failure only)."""
    return isolation_error(f"{outcome.key} in snapshot {snapshot_id!r}", outcome.value, error)


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
