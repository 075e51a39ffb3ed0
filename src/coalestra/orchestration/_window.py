"""The time window of one flight group: its context, and a deadline that joiners can extend.

A flight starts under its owner's deadline. A caller with a later deadline (or none) that
joins it extends the window, so the flight goes on for that caller instead of ending at the
owner's deadline; timeouts already running are moved to the new deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import final

from .._compat import Timeout
from ..core import Clock, FetchContext


@final
class FlightWindow:
    """The current context of a flight group and the deadline-bound timeouts running in it."""

    __slots__ = ("_clock", "_watched", "ctx", "followers")

    def __init__(self, ctx: FetchContext, clock: Clock) -> None:
        self.ctx = ctx
        self._clock = clock
        # scope -> (deadline, own limit), both in the loop's time
        self._watched: dict[Timeout, tuple[float | None, float | None]] = {}
        self.followers: list[FlightWindow] = []  # shared batch calls serving this group

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or ``None`` without one."""
        return self.ctx.remaining_seconds(self._clock)

    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self.ctx.expired(self._clock)

    @contextmanager
    def watch(self, scope: Timeout, budget: float, own: float | None) -> Iterator[None]:
        """Keep ``scope`` (started with ``budget`` seconds, the tighter of the wait's ``own``
        limit and the deadline) on the deadline while inside."""
        when = scope.when()
        assert when is not None
        started = when - budget  # in loop time, read off the timeout: no clock read here
        remaining = self.remaining()
        self._watched[scope] = (
            None if remaining is None else started + remaining,
            None if own is None else started + own,
        )
        try:
            yield
        finally:
            del self._watched[scope]

    def extend(self, deadline_monotonic: float | None) -> None:
        """Move the deadline later (``None``: no deadline); never earlier."""
        for follower in self.followers:
            follower.extend(deadline_monotonic)
        current = self.ctx.deadline_monotonic
        if current is None or (deadline_monotonic is not None and deadline_monotonic <= current):
            return
        shift = None if deadline_monotonic is None else deadline_monotonic - current
        wall = self.ctx.deadline_at
        self.ctx = dataclasses.replace(
            self.ctx,
            deadline_monotonic=deadline_monotonic,
            deadline_at=None if shift is None or wall is None else wall + shift,
        )
        for scope, (deadline_at, own_at) in list(self._watched.items()):
            moved = None if shift is None or deadline_at is None else deadline_at + shift
            self._watched[scope] = (moved, own_at)
            limits = [at for at in (moved, own_at) if at is not None]
            with contextlib.suppress(RuntimeError):  # already fired: that wait is over anyway
                scope.reschedule(min(limits) if limits else None)
