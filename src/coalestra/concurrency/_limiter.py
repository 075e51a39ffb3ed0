"""A FIFO-fair counting limiter whose slots survive cancellation, and its snapshot value."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import final

from ..core._validation import check_int


@final
@dataclass(frozen=True, slots=True)
class CapacitySnapshot:
    """A point-in-time reading of one limiter.

    Attributes:
        limit: the most slots that may be held at once (>= 1).
        in_use: slots held now (including slots granted to a waiter that has not resumed yet).
        waiting: callers queued for a slot.

    Raises:
        TypeError: a field is not an int.
        ValueError: ``limit`` < 1, or ``in_use``/``waiting`` < 0.
    """

    limit: int
    in_use: int
    waiting: int

    def __post_init__(self) -> None:
        check_int("limit", self.limit, minimum=1)
        check_int("in_use", self.in_use, minimum=0)
        check_int("waiting", self.waiting, minimum=0)


@final
class CapacityLimiter:
    """At most ``limit`` concurrent holders; waiters are served strictly first come, first served.

    Unlike ``asyncio.Semaphore`` (3.11), a released slot is *handed over* to the oldest waiter
    rather than put back for anyone to grab, so a newcomer can never overtake a queued caller.
    An uncontended :meth:`acquire` completes without suspending and without creating a future.
    Cancellation (including ``asyncio.timeout``) is safe at every point: a waiter cancelled while
    queued leaves the queue; a waiter cancelled after its slot was handed over passes the slot on.

    The limiter binds to no event loop at construction, so it may be created outside one; all
    calls must come from the one loop that uses it (it is not thread-safe).

    Args:
        limit: the number of slots (an int >= 1).

    Raises:
        TypeError: ``limit`` is not an int.
        ValueError: ``limit`` < 1.
    """

    __slots__ = ("_in_use", "_limit", "_waiters")

    def __init__(self, limit: int) -> None:
        if check_int("limit", limit) < 1:
            raise ValueError("capacity limit must be at least 1")
        self._limit = limit
        self._in_use = 0
        # Only futures not yet granted live here; a grant pops its future before resolving it.
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        return (
            f"CapacityLimiter(limit={self._limit}, in_use={self._in_use}, "
            f"waiting={len(self._waiters)})"
        )

    @property
    def limit(self) -> int:
        """The number of slots."""
        return self._limit

    @property
    def in_use(self) -> int:
        """Slots held now (a cheap synchronous read for health reports)."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Callers queued for a slot (a cheap synchronous read for health reports)."""
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take one slot, waiting in FIFO order while all are held.

        Raises:
            asyncio.CancelledError: the caller was cancelled (or timed out) while waiting; no slot
                is held afterwards.
        """
        # No barging past queued waiters: while anyone is queued every slot is held, because
        # release() hands a slot to the oldest waiter instead of freeing it.
        if self._in_use < self._limit:
            self._in_use += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            self._abandon(waiter)
            raise

    def try_take(self) -> bool:
        """Take one slot if one is free now (never waits, never barges past a waiter: while
        anyone is queued every slot is held); True when taken."""
        if self._in_use < self._limit:
            self._in_use += 1
            return True
        return False

    def _abandon(self, waiter: asyncio.Future[None]) -> None:
        """Undo a wait that ended in an exception (cancellation), keeping the books exact."""
        if waiter.done() and not waiter.cancelled():
            # The slot was handed to us before the cancellation reached us: pass it on, as
            # asyncio.Semaphore.acquire does, so it is neither leaked nor skipped.
            self.release()
            return
        # A release may already have discarded this cancelled future while looking for a taker.
        with suppress(ValueError):
            self._waiters.remove(waiter)

    def release(self) -> None:
        """Give one slot back, handing it straight to the oldest live waiter if there is one.

        Raises:
            RuntimeError: no slot is held (more releases than acquisitions).
        """
        if self._in_use <= 0:
            raise RuntimeError("CapacityLimiter.release() called without a matching acquire()")
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands; in_use stays the same
                return
        self._in_use -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the duration of an ``async with`` block.

        Raises:
            asyncio.CancelledError: cancelled while waiting for the slot (nothing is held).
        """
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def snapshot_now(self) -> CapacitySnapshot:
        """Return the current :class:`CapacitySnapshot` synchronously (cheap: three reads)."""
        return CapacitySnapshot(self._limit, self._in_use, len(self._waiters))

    async def snapshot(self) -> CapacitySnapshot:
        """Return the current :class:`CapacitySnapshot` (the async form of :meth:`snapshot_now`)."""
        return self.snapshot_now()
