"""Flights: the single-flight table. At most one resolution of a key is in flight, however
many builds ask; :class:`SingleFlight` is the one owner of every flight's state.

A :class:`Flight` is one key's in-progress resolution; it resolves with the outcome (a
``SnapshotValue`` or an ``Exception``, never an exception set on a future, so an unobserved
failure logs nothing) as soon as that key is done. Flights are grouped (one owned task
resolves all keys a build owns), and a group is cancelled only when no caller waits for any
of its keys any more.

The life of a flight (each arrow is one method of :class:`SingleFlight`)::

                 start()               running()
    (no flight) ---------> claimed -----------------> running
                              |                         |  \
                              |                         |   \\  release(): the last waiter
                              |   resolve()             |    \\ left; the group's task is
                              |   (not found, a value   |     \\ cancelled
                              |    another process      |      v
                              |    wrote)               |    abandoned --resolve()--+
                              v                         v                           |
                           resolved <-------------------+ resolve(): a value or an  |
                              ^                            error, as soon as the key|
                              +---------------------------------------------------- +
                                   (abandoned flights resolve "nobody waits")

- **claimed**: :meth:`~SingleFlight.start` entered the key (not ``done`` yet); builds that
  look the key up now join it instead of starting their own.
- **running**: :meth:`~SingleFlight.running` recorded the group's task and time window.
  Callers count as its waiters inside :meth:`~SingleFlight.waiting`; a derivation marks what it
  waits on with :meth:`~SingleFlight.wait_on`, so a wait that would close a cycle across builds
  can be refused (:mod:`._cycles`).
- **resolved**: :meth:`~SingleFlight.resolve` took the key out of the table (later callers read
  the cache) and set its outcome; every waiter reads it.
- **abandoned**: nobody waits for the group's unresolved keys (not a background refresh):
  :meth:`~SingleFlight.release` resolves them as failed, cancels the task, and releases the
  groups it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeAlias, final

from .._compat import Timeout
from ..core import Clock, FetchContext, ResourceKey, SnapshotValue, SourceUnavailableError
from ._counters import EngineCounters
from ._flight_deadline import joined_too_long

Outcome: TypeAlias = "SnapshotValue[Any] | Exception"

_SETTLE_SECONDS = 0.01
"""How long past its deadline a caller waits for a group cut at that same deadline to end."""


@final
class Raised(Exception):
    """The outcome of a flight whose work raised (a cache call failed, say): every caller
    waiting on it re-raises ``error`` as it is, instead of listing a per-key error."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


@final
class FlightGroup:
    """The flights one task resolves; ``waiters`` counts callers still interested."""

    __slots__ = (
        "flights",
        "holds",
        "keep_alive",
        "settled",
        "task",
        "unresolved",
        "waiters",
        "watchers",
        "window",
    )

    def __init__(self, *, keep_alive: bool) -> None:
        self.task: asyncio.Task[None] | None = None
        self.window: FlightWindow | None = None
        self.flights: list[Flight] = []
        # Groups this group's derivations wait on (one entry per hold). Abandoning this group
        # releases them at once: doomed work must not keep them, or start new ones, alive.
        self.holds: list[FlightGroup] = []
        self.unresolved = 0
        self.waiters = 0
        self.watchers: dict[Countdown, None] = {}  # callers waiting on some of its flights
        self.settled: dict[asyncio.Future[bool], None] = {}  # callers waiting on all it has left
        self.keep_alive = keep_alive  # background refreshes run with nobody waiting

    def extend(self, deadline_monotonic: float | None) -> None:
        """A caller with this deadline joined: let the work run at least that long."""
        if self.window is not None:
            self.window.extend(deadline_monotonic)

    @property
    def abandoned(self) -> bool:
        """True when nobody waits for keys the group has not resolved yet."""
        return self.waiters <= 0 and self.unresolved > 0 and not self.keep_alive


@final
class Flight:
    """One key's in-progress resolution: ``done`` once ``outcome`` is set (by
    :meth:`SingleFlight.resolve`). Its :attr:`future` is made only for a caller that awaits
    this one key (callers of many wait on the group): no future per key of a cold build."""

    __slots__ = ("_future", "done", "group", "key", "outcome", "waiting_on")

    def __init__(self, key: ResourceKey, group: FlightGroup):
        self.key = key
        self.group = group
        self.done = False
        self.outcome: Outcome = _UNRESOLVED  # read only once done
        self._future: asyncio.Future[Outcome] | None = None
        self.waiting_on: frozenset[ResourceKey] = _WAITING_ON_NONE

    @property
    def future(self) -> asyncio.Future[Outcome]:
        """A future of the outcome (made on first use; already done once the flight is)."""
        future = self._future
        if future is None:
            future = self._future = asyncio.get_running_loop().create_future()
            if self.done:
                future.set_result(self.outcome)
        return future


_WAITING_ON_NONE: frozenset[ResourceKey] = frozenset()  # shared: one object less per cold key
_UNRESOLVED: Outcome = SourceUnavailableError("unresolved")  # never read: see Flight.done


@final
class Countdown:
    """Wakes one caller once every flight it waits on is resolved: one wake-up per caller,
    where waiting on each flight's future costs a loop callback per key."""

    __slots__ = ("done", "left")

    def __init__(self, pending: Iterable[Flight], done: asyncio.Future[bool]) -> None:
        self.left = set(pending)  # flights hash by identity: no key hashing here
        self.done = done

    def resolved(self, flight: Flight) -> None:
        """``flight`` has its outcome; the last one wakes the caller."""
        left = self.left
        if flight in left:
            left.discard(flight)
            if not left and not self.done.done():
                self.done.set_result(True)


@final
class SingleFlight:
    """The table ``key -> Flight`` shared by every build and session of one builder."""

    __slots__ = ("_flights", "get")

    def __init__(self) -> None:
        self._flights: dict[ResourceKey, Flight] = {}
        # The flight of a key, if one is in progress (the table's own lookup: no call of ours).
        self.get = self._flights.get

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, key: object) -> bool:
        return key in self._flights

    def start(
        self, keys: Iterable[ResourceKey], *, keep_alive: bool = False, register: bool = True
    ) -> dict[ResourceKey, Flight]:
        """Create flights for ``keys`` in one new group; ``register``: enter them in the table
        (none may be in flight), else they are private to their caller (nobody can join)."""
        group = FlightGroup(keep_alive=keep_alive)
        started: dict[ResourceKey, Flight] = {}
        for key in keys:
            flight = Flight(key, group)
            if register:
                self._flights[key] = flight
            started[key] = flight
        group.unresolved = len(started)
        group.flights = list(started.values())
        return started

    def release(self, group: FlightGroup) -> None:
        """One waiter of ``group`` left. If nobody wants its remaining keys, cancel the work and
        take its flights out of the table now (a caller arriving now starts anew)."""
        group.waiters -= 1
        if not group.abandoned:
            return
        for flight in group.flights:
            if not flight.done:
                self.resolve(flight, SourceUnavailableError(f"{flight.key}: nobody waits"))
        if group.task is not None:
            group.task.cancel()
        held, group.holds = group.holds, []
        for other in held:
            self.release(other)

    @staticmethod
    def running(group: FlightGroup, task: asyncio.Task[None], window: FlightWindow) -> None:
        """``group`` is being resolved by ``task`` within ``window``."""
        group.task, group.window = task, window

    @contextmanager
    def waiting(
        self, claims: Mapping[ResourceKey, Flight], holder: FlightGroup | None = None
    ) -> Iterator[None]:
        """Count the caller as a waiter of the claimed flights' groups while inside.
        ``holder``: the group whose derivation waits; if it is abandoned meanwhile, its holds
        are released at that moment, not when its task unwinds (see :meth:`release`)."""
        groups = {flight.group for flight in claims.values()}
        for group in groups:
            group.waiters += 1
            if holder is not None:
                holder.holds.append(group)
        try:
            yield
        finally:
            for group in groups:
                if holder is None:
                    self.release(group)
                elif group in holder.holds:  # not already released with an abandoned holder
                    holder.holds.remove(group)
                    self.release(group)

    async def wait(
        self,
        claims: Mapping[ResourceKey, Flight],
        ctx: FetchContext,
        clock: Clock,
        counters: EngineCounters,
    ) -> dict[ResourceKey, Outcome]:
        """Wait for the claimed flights until ``ctx``'s own deadline; a flight still running
        then goes on for others, and this caller gets a (counted) deadline failure for it."""
        groups = {flight.group for flight in claims.values()}
        for group in groups:
            group.waiters += 1
        try:
            pending = [flight for flight in claims.values() if not flight.done]
            late = 0
            if pending and not await _resolved(pending, groups, ctx.remaining_seconds(clock)):
                await _let_ending_groups_finish(claims)
                late = sum(not flight.done for flight in claims.values())
            # Read outcomes before letting go: releasing may tear down flights nobody else wants.
            if late:
                outcomes = {
                    key: flight.outcome if flight.done else joined_too_long(key)
                    for key, flight in claims.items()
                }
            else:  # every flight is resolved
                outcomes = {key: flight.outcome for key, flight in claims.items()}
        finally:
            for group in groups:
                self.release(group)
        counters.deadline_exceeded += late
        return outcomes

    @staticmethod
    def wait_on(flight: Flight, keys: Iterable[ResourceKey]) -> None:
        """``flight``'s derivation now waits on the flights of ``keys`` (none: it stopped)."""
        flight.waiting_on = frozenset(keys)

    def resolve(self, flight: Flight, outcome: Outcome) -> None:
        """Finish ``flight``: leave the table first, so later callers read the cache instead."""
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        if not flight.done:
            group = flight.group
            group.unresolved -= 1
            flight.done, flight.outcome, future = True, outcome, flight._future
            if future is not None and not future.done():  # not cancelled by its awaiter
                future.set_result(outcome)
            for countdown in group.watchers:
                countdown.resolved(flight)
            if not group.unresolved:  # all resolved: no flight <-> group cycle for the collector
                group.flights, settled, group.settled = [], group.settled, {}
                for done in settled:
                    if not done.done():
                        done.set_result(True)


async def _resolved(
    pending: list[Flight], groups: set[FlightGroup], remaining: float | None
) -> bool:
    """Wait until every flight of ``pending`` is resolved (True) or ``remaining`` seconds pass
    (False), with one wake-up: by the group for a caller waiting on all of one group's
    unresolved flights (a stampede's joiner), else by a countdown."""
    done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    group = pending[0].group
    whole = len(groups) == 1 and len(pending) == group.unresolved  # ``groups``: of every claim
    countdown = None
    if whole:
        group.settled[done] = None
    else:
        countdown = Countdown(pending, done)
        for each in {flight.group for flight in pending}:
            each.watchers[countdown] = None
    timer = None if remaining is None else done.get_loop().call_later(remaining, _time_up, done)
    try:
        return await done
    finally:
        if timer is not None:
            timer.cancel()
        if countdown is None:
            group.settled.pop(done, None)
        else:
            for each in {flight.group for flight in pending}:
                del each.watchers[countdown]


def _time_up(done: asyncio.Future[bool]) -> None:
    if not done.done():
        done.set_result(False)


async def _let_ending_groups_finish(claims: Mapping[ResourceKey, Flight]) -> None:
    """At the deadline, wait a few loop turns (bounded) for a group cut at that same deadline
    to end (it writes what its level made, then resolves it): that value is not lost."""
    ending = {
        group.task
        for flight in claims.values()
        if not flight.done
        and (group := flight.group).task is not None
        and not group.task.done()
        and group.window is not None
        and group.window.expired()
    }
    if ending:
        await asyncio.wait(ending, timeout=_SETTLE_SECONDS)


@final
class FlightWindow:
    """The current context of a flight group and the deadline-bound timeouts running in it: a
    joiner with more time extends its deadline, and the timeouts already running move with it."""

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
