"""Time. :class:`SystemClock` is the one place in the library that reads real time.

Everything else (TTLs, ages, deadlines, backoff, circuit recovery) asks an injected
:class:`Clock`, so tests can run on virtual time and never sleep.
"""

from __future__ import annotations

import time
from typing import Protocol, final, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """A source of time.

    ``now()`` is wall-clock time in seconds since the epoch: it stamps ``observed_at`` and
    ``fetched_at`` and is compared with timestamps from sources. ``monotonic()`` never goes
    backwards and measures durations and deadlines; it must tick at the rate of the event loop's
    own clock, because waits are scheduled on the loop as relative delays.
    """

    def now(self) -> float:
        """Return wall-clock seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Return seconds on a clock that never goes backwards."""
        ...


@final
class SystemClock:
    """The real clock: ``time.time()`` and ``time.monotonic()``."""

    __slots__ = ()

    def now(self) -> float:
        """Return ``time.time()``."""
        return time.time()

    def monotonic(self) -> float:
        """Return ``time.monotonic()`` (what asyncio's default event loop uses too)."""
        return time.monotonic()

    def __repr__(self) -> str:
        return "SystemClock()"


def check_clock(clock: object) -> Clock:
    """Return ``clock`` if it implements :class:`Clock`; otherwise raise ``TypeError``."""
    if not isinstance(clock, Clock):
        raise TypeError("clock must provide now() and monotonic() methods (the Clock protocol)")
    return clock
