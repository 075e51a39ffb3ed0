"""The values of the payload-copy runner: :class:`PayloadCopyHealth`, the two errors of its
controlled shutdown, and the checks of its settings (see :mod:`._copy_runner`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, final

from ._errors import CoalestraError
from ._validation import ReadOnlyDict, check_bool, check_float, check_int


class PayloadCopySubsystemClosedError(CoalestraError):
    """A copy was refused because its component's copy shutdown has started.

    ``component``: ``"builder"``, ``"cache"`` or ``"publisher"``.
    """

    def __init__(self, *, component: str) -> None:
        self.component = component
        super().__init__(f"payload copies of {component!r} are closed")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_closed_error, (self.component,))


def _closed_error(component: str) -> PayloadCopySubsystemClosedError:
    return PayloadCopySubsystemClosedError(component=component)


class PayloadCopyShutdownTimeoutError(CoalestraError, TimeoutError):
    """Copies were still running when the copy shutdown budget ran out (a ``TimeoutError`` too,
    like every timeout we raise, ``ObservabilityShutdownTimeoutError`` included).

    ``timeout_seconds``: the budget; ``active_components``: component name -> copies still
    running; ``active_copies``: their sum. The late copies go on; health reports
    ``payload_copy_shutdown_incomplete`` until they end.
    """

    def __init__(self, *, timeout_seconds: float, active_components: Mapping[str, int]) -> None:
        self.timeout_seconds = float(timeout_seconds)
        self.active_components: Mapping[str, int] = ReadOnlyDict(active_components)
        self.active_copies = sum(self.active_components.values())
        shown = ", ".join(f"{name}={count}" for name, count in self.active_components.items())
        super().__init__(
            f"payload copy shutdown timed out after {self.timeout_seconds} s with "
            f"{self.active_copies} copies still running ({shown})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_timeout_error, (self.timeout_seconds, dict(self.active_components)))


def _timeout_error(timeout: float, active: dict[str, int]) -> PayloadCopyShutdownTimeoutError:
    return PayloadCopyShutdownTimeoutError(timeout_seconds=timeout, active_components=active)


@final
@dataclass(frozen=True, slots=True)
class PayloadCopyHealth:
    """One copy component's state and cumulative counters (times in milliseconds)."""

    run_in_thread: bool
    max_concurrency: int
    active_copies: int = 0
    waiting_for_capacity: int = 0
    peak_active_copies: int = 0
    peak_waiting_for_capacity: int = 0
    started_count: int = 0
    completed_count: int = 0
    failure_count: int = 0
    timeout_count: int = 0
    capacity_timeout_count: int = 0
    capacity_wait_count: int = 0
    average_wait_ms: float = 0.0
    max_wait_ms: float = 0.0
    average_duration_ms: float = 0.0
    max_duration_ms: float = 0.0
    accepting_copies: bool = True
    shutdown_started: bool = False
    shutdown_complete: bool = False
    shutdown_incomplete: bool = False
    shutdown_timeout_count: int = 0
    active_at_last_shutdown_timeout: int = 0


def check_copy_settings(run_in_thread: object, max_concurrency: object) -> None:
    """Validate ``run_payload_copies_in_thread`` (bool or None) and ``max_copy_concurrency``
    (an int >= 1, not a bool).

    Raises:
        TypeError, ValueError: naming the argument.
    """
    if run_in_thread is not None:
        check_bool("run_payload_copies_in_thread", run_in_thread)
    check_int("max_copy_concurrency", max_concurrency, minimum=1)


def check_copy_timeout(name: str, value: object) -> float:
    """A copy shutdown budget: a finite number of seconds > 0 (NaN and inf refused).

    Raises:
        TypeError: not a number (a bool included). ValueError: not finite, or <= 0.
    """
    return check_float(name, value, positive=True)
