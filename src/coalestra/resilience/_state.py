"""Circuit state: the public state values, and the mutable record kept per tracked circuit."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import final

from ..core._validation import check_bool, check_enum, check_float, check_int


class CircuitState(str, Enum):
    """Where a circuit is in its cycle.

    * ``CLOSED``: calls go through; consecutive failures are counted.
    * ``OPEN``: calls fail fast with :class:`~coalestra.CircuitOpenError` until the recovery
      timeout has passed.
    * ``HALF_OPEN``: the recovery timeout has passed; one probe call at a time is admitted,
      and its outcome closes or re-opens the circuit.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@final
@dataclass(frozen=True, slots=True)
class CircuitSnapshot:
    """A point-in-time view of one circuit.

    Args:
        state: the circuit's state at the time of the snapshot.
        failures: consecutive failures recorded since the circuit was last closed (it keeps
            counting failed probes while the circuit cycles between open and half-open).
        opened_at: the breaker clock's ``monotonic()`` time the circuit last opened; ``0.0``
            while it is closed.
        half_open_probe_active: True while the one admitted half-open probe is running.

    Raises:
        TypeError, ValueError: a field has the wrong type, ``failures`` is negative, or
            ``opened_at`` is NaN or infinite.
    """

    state: CircuitState
    failures: int
    opened_at: float
    half_open_probe_active: bool

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "state", check_enum("state", self.state, CircuitState))
        check_int("failures", self.failures, minimum=0)
        setattr_(self, "opened_at", check_float("opened_at", self.opened_at, minimum=None))
        check_bool("half_open_probe_active", self.half_open_probe_active)


@final
class CircuitRecord:
    """The mutable state of one tracked circuit (internal to :class:`CircuitBreaker`).

    Only circuits with something to remember are tracked: a closed circuit with no failures
    has no record. ``OPEN`` vs ``HALF_OPEN`` is not stored but derived from the time, so a
    circuit reads as half-open the moment its recovery timeout passes, with no timer.
    """

    __slots__ = ("failures", "opened", "opened_at", "probe_active", "recovers_at")

    def __init__(self) -> None:
        self.failures = 0
        self.opened = False
        self.opened_at = 0.0
        self.recovers_at = 0.0
        self.probe_active = False

    def open(self, now: float, recovery_timeout_seconds: float) -> None:
        """Open (or re-open) at ``now``; the recovery timeout is fixed at opening."""
        self.opened = True
        self.opened_at = now
        self.recovers_at = now + recovery_timeout_seconds
        self.probe_active = False

    def state(self, now: float) -> CircuitState:
        """Return the state at monotonic time ``now``."""
        if not self.opened:
            return CircuitState.CLOSED
        return CircuitState.HALF_OPEN if now >= self.recovers_at else CircuitState.OPEN

    def snapshot(self, now: float) -> CircuitSnapshot:
        """Return the public view at monotonic time ``now``."""
        return CircuitSnapshot(
            self.state(now),
            self.failures,
            self.opened_at if self.opened else 0.0,
            self.probe_active,
        )
