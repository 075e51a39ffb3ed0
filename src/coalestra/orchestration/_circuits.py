"""What one gated call records on its circuits (B-SRC-5, B-RES-3, B-RES-5, B-TIME-4).

Before an attempt, each distinct circuit of its keys is entered once (keys behind an open one are
kept out of the call); after it, each circuit entered records the attempt's outcome: a success,
a failure, or, when the attempt ended for reasons that are not the source's, an abandoned or
skipped probe.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TypeAlias, final

from ..core import (
    CircuitOpenError,
    ResourceKey,
    ResourceNotFound,
    SnapshotDeadlineExceededError,
    SourceQueueTimeoutError,
)
from ..resilience import CircuitBreaker, CircuitIdentity, CircuitScope
from ._flights import FlightWindow
from ._sources import RegisteredSource

Circuits: TypeAlias = dict[CircuitIdentity, Sequence[ResourceKey]]
"""The circuits an attempt entered, each with the keys of the call behind it."""

# The build's own limits ran out: the source was not (or not yet) at fault.
NOT_THE_SOURCES_FAULT = (SnapshotDeadlineExceededError, SourceQueueTimeoutError)


@final
class CallCircuits:
    """The circuit side of the gate: admission before an attempt, its record after."""

    __slots__ = ("_breaker", "_by_source")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._by_source: dict[str, CircuitIdentity] = {}  # each source's SOURCE-scope circuit

    def admit(
        self,
        source: RegisteredSource,
        keys: tuple[ResourceKey, ...],
        blocked: dict[ResourceKey, Exception],
    ) -> Circuits:
        """Pass each distinct circuit of ``keys`` once; keys behind open circuits go to
        ``blocked``. A circuit the breaker does not track (closed, no failures) is passed
        without asking it."""
        policy = source.resilience.circuit
        breaker = self._breaker
        if policy.scope is CircuitScope.SOURCE:
            identity = self._by_source.get(source.name)
            if identity is None:
                identity = breaker.identity_for(source.name, scope=CircuitScope.SOURCE)
                self._by_source[source.name] = identity
            if breaker.tracks(identity):
                try:
                    breaker.enter(source.name, None, policy)
                except CircuitOpenError as error:
                    blocked.update(dict.fromkeys(keys, error))
                    return {}
            return {identity: keys}
        groups: dict[CircuitIdentity, list[ResourceKey]] = {}
        for key in keys:
            identity = breaker.identity_for(source.name, key=key, scope=policy.scope)
            groups.setdefault(identity, []).append(key)
        admitted: Circuits = {}
        for members in groups.values():
            try:
                admitted[breaker.enter(source.name, members[0], policy)] = members
            except CircuitOpenError as error:
                blocked.update(dict.fromkeys(members, error))
        return admitted

    def failed(
        self,
        source: RegisteredSource,
        circuits: Circuits,
        error: BaseException,
        window: FlightWindow,
    ) -> None:
        """Record a failed attempt: a failure, unless it is not the source's fault (see
        :meth:`release`). A not-found answer shows the source is up: a success."""
        if isinstance(error, ResourceNotFound):
            policy = source.resilience.circuit
            for identity in circuits:
                self._breaker.succeed(identity, policy)
        elif isinstance(error, Exception) and not isinstance(error, NOT_THE_SOURCES_FAULT):
            policy = source.resilience.circuit
            for identity in circuits:
                self._breaker.fail(identity, policy)
        else:
            self.release(source, circuits, error, window)

    def release(
        self,
        source: RegisteredSource,
        circuits: Circuits,
        error: BaseException,
        window: FlightWindow,
    ) -> None:
        """An attempt ended for reasons that are not the source's: a cancellation abandons
        the call (a half-open probe re-opens its circuit); our own deadline or capacity wait
        skips it (the probe slot is only given back). Work cancelled because its deadline
        passed (its last waiter gave up at that moment) counts as the deadline."""
        breaker = self._breaker
        if isinstance(error, Exception) or window.expired():
            for identity in circuits:
                breaker.skip(identity)
        else:
            policy = source.resilience.circuit
            for identity in circuits:
                breaker.abandon(identity, policy)

    def succeeded(
        self, source: RegisteredSource, circuits: Circuits, good: Collection[ResourceKey]
    ) -> None:
        """A call returned: a circuit group succeeds if and only if one of its keys got a
        valid, fresh payload; omitted, stale and rejected keys count against it (B-SRC-5).
        A success on a circuit the breaker does not track changes nothing: skipped."""
        policy = source.resilience.circuit
        breaker = self._breaker
        for identity, members in circuits.items():
            if good is members or any(key in good for key in members):
                if breaker.tracks(identity):
                    breaker.succeed(identity, policy)
            else:
                breaker.fail(identity, policy)
