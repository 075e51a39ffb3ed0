"""The circuit breaker: per-circuit failure counting, fail-fast while open, one probe at a time.

Life of a circuit (one per :class:`CircuitIdentity`)::

    CLOSED --(failure_threshold consecutive failures)--> OPEN
    OPEN   --(recovery_timeout_seconds pass)-----------> HALF_OPEN  (derived from time)
    HALF_OPEN: the first caller becomes the probe; others fail fast while it runs
        probe success -> CLOSED          probe failure or abandoned -> OPEN (new opened_at)
        probe skipped (deadline, queue timeout) -> HALF_OPEN with the probe slot free again

An outcome recorded while an open circuit has no probe out comes from a call admitted before
the circuit opened. It never moves the circuit: only time leads from OPEN to HALF_OPEN (a late
failure is still counted in ``failures``; a late success is ignored). This is Polly's rule, and
it keeps a slow straggler from closing a circuit that fresher evidence opened.

All state lives in plain dicts touched without an ``await``: on one event loop, the loop is the
lock. The ``async`` methods of the public contract are thin wrappers over synchronous methods
the engine calls directly (:meth:`CircuitBreaker.enter` and friends).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import final

from ..core import CircuitOpenError, Clock, ResourceKey, SystemClock
from ..core._clock import check_clock
from ..core._validation import ReadOnlyDict, check_enum, check_str
from ._policy import CircuitBreakerPolicy
from ._scope import CircuitIdentity, CircuitScope, IdentityMaker, check_identity
from ._state import CircuitRecord, CircuitSnapshot, CircuitState


@final
class CircuitBreaker:
    """Circuit breakers for many sources, one circuit per :class:`CircuitIdentity`.

    Each call names its policy (:class:`CircuitBreakerPolicy`); without one the breaker uses
    ``default_policy``, or else a policy built from ``failure_threshold`` and
    ``recovery_timeout_seconds``. The policy's scope decides which circuit a call belongs to;
    its threshold applies when a failure is recorded, its recovery timeout when the circuit
    opens. A disabled policy never opens a circuit and never refuses a call.

    Memory stays bounded by the circuits that have failed: a closed circuit with no failures
    is not tracked at all, so a ``RESOURCE`` scope over millions of healthy keys costs nothing.

    Use one breaker from one event loop (it is not thread-safe, and needs no lock there).

    Args:
        failure_threshold: consecutive failures that open a circuit, ``>= 1``.
        recovery_timeout_seconds: how long an open circuit refuses calls; finite, ``>= 0``.
        clock: the time source; only ``clock.monotonic()`` is read (default: ``SystemClock``).
        default_policy: the policy for calls that name none (overrides the two numbers above).

    Raises:
        TypeError, ValueError: an argument has the wrong type or is out of range.
    """

    __slots__ = ("_circuits", "_clock", "_default_policy", "_identity", "_open_count")

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        recovery_timeout_seconds: float = 10.0,
        clock: Clock | None = None,
        default_policy: CircuitBreakerPolicy | None = None,
    ) -> None:
        built = CircuitBreakerPolicy(
            failure_threshold=failure_threshold,
            recovery_timeout_seconds=recovery_timeout_seconds,
        )
        if default_policy is not None and not isinstance(default_policy, CircuitBreakerPolicy):
            raise TypeError(
                "default_policy must be a CircuitBreakerPolicy or None, "
                f"got {type(default_policy).__name__}"
            )
        self._default_policy = built if default_policy is None else default_policy
        self._clock: Clock = SystemClock() if clock is None else check_clock(clock)
        self._circuits: dict[CircuitIdentity, CircuitRecord] = {}
        self._open_count = 0
        self._identity = IdentityMaker()

    @property
    def default_policy(self) -> CircuitBreakerPolicy:
        """The policy used by calls that pass none."""
        return self._default_policy

    # -- identity ---------------------------------------------------------------------------

    def identity_for(
        self,
        source: str,
        *,
        key: ResourceKey | None = None,
        scope: CircuitScope | None = None,
    ) -> CircuitIdentity:
        """Return the identity of ``source``'s circuit for ``key`` under ``scope``.

        Args:
            source: the source name.
            key: the key being fetched; required unless the scope is ``SOURCE``.
            scope: the circuit scope (or its string value); default: the default policy's.

        Raises:
            TypeError: ``source`` is not a string or ``key`` not a ResourceKey.
            ValueError: ``source`` is empty, ``scope`` is unknown, or ``key`` is missing for a
                scope that needs it.
        """
        if scope is None:
            chosen = self._default_policy.scope
        else:
            chosen = check_enum("scope", scope, CircuitScope)
        return self._identity(source, key, chosen)

    def _policy(self, policy: CircuitBreakerPolicy | None) -> CircuitBreakerPolicy:
        if policy is None:
            return self._default_policy
        if not isinstance(policy, CircuitBreakerPolicy):
            raise TypeError(
                f"policy must be a CircuitBreakerPolicy or None, got {type(policy).__name__}"
            )
        return policy

    def _named(
        self, source: str, key: ResourceKey | None, policy: CircuitBreakerPolicy | None
    ) -> tuple[CircuitIdentity, CircuitBreakerPolicy]:
        """The circuit a call of the async contract names, and the policy that applies to it."""
        active = self._policy(policy)
        return self._identity(source, key, active.scope), active

    # -- synchronous fast path --------------------------------------------------------------

    def enter(
        self,
        source: str,
        key: ResourceKey | None = None,
        policy: CircuitBreakerPolicy | None = None,
    ) -> CircuitIdentity:
        """Pass the circuit gate for one call, or raise; the non-async twin of
        :meth:`before_call`.

        Returns the identity to hand to :meth:`succeed`, :meth:`fail`, :meth:`abandon` or
        :meth:`skip` once the call's outcome is known. Exactly one of them must follow an
        admitted call, or a half-open circuit's probe slot stays taken.

        Raises:
            CircuitOpenError: the circuit is open, or half-open with its probe still out.
            TypeError, ValueError: as for :meth:`identity_for`, or ``policy`` is not a policy.
        """
        active = self._policy(policy)
        identity = self._identity(source, key, active.scope)
        if active.enabled:
            record = self._circuits.get(identity)
            if record is not None and record.opened:
                self._admit_while_open(identity, record)
        return identity

    def tracks(self, identity: CircuitIdentity) -> bool:
        """True when ``identity``'s circuit has a record (failures counted, or open). A
        closed circuit without failures has none: entering it or recording a success there
        changes nothing, so the engine skips both (a cheap test on every source call)."""
        return identity in self._circuits if self._circuits else False  # no hash if none

    def _admit_while_open(self, identity: CircuitIdentity, record: CircuitRecord) -> None:
        now = self._clock.monotonic()
        if now < record.recovers_at:
            raise CircuitOpenError(f"circuit is open for {identity}")
        if record.probe_active:
            raise CircuitOpenError(f"half-open probe already active for {identity}")
        record.probe_active = True

    def succeed(
        self, identity: CircuitIdentity, policy: CircuitBreakerPolicy | None = None
    ) -> None:
        """Record that an admitted call succeeded; the non-async twin of
        :meth:`record_success`. Closes a half-open circuit whose probe this was.

        Raises:
            TypeError: ``identity`` or ``policy`` has the wrong type.
        """
        active = self._policy(policy)
        record = self._circuits.get(check_identity(identity))
        if record is None or not active.enabled:
            return
        if not record.opened or record.probe_active:
            self._drop(identity)
        # Otherwise a straggler admitted before the circuit opened: see the module docstring.

    def fail(self, identity: CircuitIdentity, policy: CircuitBreakerPolicy | None = None) -> None:
        """Record that an admitted call failed; the non-async twin of :meth:`record_failure`.

        Counts a consecutive failure; opens a closed circuit at ``policy.failure_threshold``
        and re-opens a half-open circuit whose probe this was.

        Raises:
            TypeError: ``identity`` or ``policy`` has the wrong type.
        """
        active = self._policy(policy)
        check_identity(identity)
        if not active.enabled:
            return
        record = self._circuits.get(identity)
        if record is None:
            record = self._circuits[identity] = CircuitRecord()
        record.failures += 1
        if record.opened:
            if record.probe_active:
                record.open(self._clock.monotonic(), active.recovery_timeout_seconds)
        elif record.failures >= active.failure_threshold:
            record.open(self._clock.monotonic(), active.recovery_timeout_seconds)
            self._open_count += 1

    def abandon(
        self, identity: CircuitIdentity, policy: CircuitBreakerPolicy | None = None
    ) -> None:
        """Record that an admitted call was given up (cancelled, its result discarded); the
        non-async twin of :meth:`record_abandoned`.

        A half-open circuit whose probe this was re-opens (``opened_at`` = now): nobody learnt
        that the source recovered, so the next probe waits a full recovery timeout. Otherwise
        nothing is counted.

        Raises:
            TypeError: ``identity`` or ``policy`` has the wrong type.
        """
        active = self._policy(policy)
        record = self._circuits.get(check_identity(identity))
        if record is not None and record.opened and record.probe_active:
            record.open(self._clock.monotonic(), active.recovery_timeout_seconds)

    def skip(self, identity: CircuitIdentity) -> None:
        """Record that an admitted call was not made, or ended for reasons that are not the
        source's (the build's deadline, a capacity queue timeout); the non-async twin of
        :meth:`record_skipped`. Frees a half-open circuit's probe slot; counts nothing.

        Raises:
            TypeError: ``identity`` is not a CircuitIdentity.
        """
        record = self._circuits.get(check_identity(identity))
        if record is not None:
            record.probe_active = False

    def open_circuit_count(self) -> int:
        """Return how many circuits are open or half-open (a counter read, for health)."""
        return self._open_count

    def tracked_circuit_count(self) -> int:
        """Return how many circuits hold state (open, half-open, or closed with failures)."""
        return len(self._circuits)

    def _drop(self, identity: CircuitIdentity) -> None:
        record = self._circuits.pop(identity, None)
        if record is not None and record.opened:
            self._open_count -= 1

    # -- the async contract -----------------------------------------------------------------

    async def before_call(
        self,
        source: str,
        *,
        key: ResourceKey | None = None,
        policy: CircuitBreakerPolicy | None = None,
    ) -> CircuitIdentity:
        """Pass the circuit gate before calling ``source`` for ``key``.

        Returns the identity of the circuit that admitted the call. After an admitted call,
        record exactly one outcome: ``record_success``, ``record_failure``,
        ``record_abandoned`` or ``record_skipped`` (with the same key and policy).

        Raises:
            CircuitOpenError: the circuit is open, or half-open with its probe still out. The
                message names the source, scope and discriminator.
            TypeError, ValueError: as for :meth:`identity_for`, or ``policy`` is not a policy.
        """
        return self.enter(source, key, policy)

    async def record_success(
        self,
        source: str,
        *,
        key: ResourceKey | None = None,
        policy: CircuitBreakerPolicy | None = None,
    ) -> None:
        """Record a successful call: resets the failure count and closes a probing circuit.

        Raises:
            TypeError, ValueError: as for :meth:`before_call`.
        """
        self.succeed(*self._named(source, key, policy))

    async def record_failure(
        self,
        source: str,
        *,
        key: ResourceKey | None = None,
        policy: CircuitBreakerPolicy | None = None,
    ) -> None:
        """Record a failed call: may open the circuit, or re-open a probing one.

        Raises:
            TypeError, ValueError: as for :meth:`before_call`.
        """
        self.fail(*self._named(source, key, policy))

    async def record_abandoned(
        self,
        source: str,
        *,
        key: ResourceKey | None = None,
        policy: CircuitBreakerPolicy | None = None,
    ) -> None:
        """Record that an admitted call was cancelled or its result discarded. A half-open
        circuit whose probe this was re-opens, with ``opened_at`` set to now; otherwise nothing
        is counted.

        Raises:
            TypeError, ValueError: as for :meth:`before_call`.
        """
        self.abandon(*self._named(source, key, policy))

    async def record_skipped(
        self,
        source: str,
        *,
        key: ResourceKey | None = None,
        policy: CircuitBreakerPolicy | None = None,
    ) -> None:
        """Record that the gate admitted a call that was then not made (e.g. the deadline
        passed first): frees the half-open probe slot, counts nothing.

        Raises:
            TypeError, ValueError: as for :meth:`before_call`.
        """
        self.skip(self._named(source, key, policy)[0])

    async def reset(
        self,
        source: str | None = None,
        *,
        key: ResourceKey | None = None,
        policy: CircuitBreakerPolicy | None = None,
    ) -> None:
        """Forget circuit state, closing the circuits concerned.

        * ``reset()``: every circuit.
        * ``reset(source)``: every circuit of ``source``, whatever its scope.
        * ``reset(source, key=key)``: the one circuit ``key`` maps to under ``policy``'s scope.

        Raises:
            ValueError: ``key`` is given without ``source``; or as for :meth:`before_call`.
            TypeError: as for :meth:`before_call`.
        """
        active = self._policy(policy)
        if source is None:
            if key is not None:
                raise ValueError("reset: key requires source")
            self._circuits.clear()
            self._open_count = 0
        elif key is None:
            check_str("source", source)
            for identity in [ident for ident in self._circuits if ident.source == source]:
                self._drop(identity)
        else:
            self._drop(self._identity(source, key, active.scope))

    async def snapshot(self) -> Mapping[CircuitIdentity, CircuitSnapshot]:
        """Return a read-only view of every tracked circuit (untracked ones are closed with no
        failures)."""
        now = self._clock.monotonic()
        return ReadOnlyDict(
            {identity: record.snapshot(now) for identity, record in self._circuits.items()}
        )

    async def state_for(
        self,
        source: str,
        *,
        key: ResourceKey | None = None,
        policy: CircuitBreakerPolicy | None = None,
    ) -> CircuitState:
        """Return the state of the circuit ``key`` maps to under ``policy``'s scope.

        Raises:
            TypeError, ValueError: as for :meth:`before_call`.
        """
        identity = self._named(source, key, policy)[0]
        record = self._circuits.get(identity)
        if record is None:
            return CircuitState.CLOSED
        return record.state(self._clock.monotonic())

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(default_policy={self._default_policy!r}, "
            f"tracked={len(self._circuits)}, open={self._open_count})"
        )
