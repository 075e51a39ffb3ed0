"""The bounded payload-copy runner: where copies that leave the event loop run, and how they stop.

One runner serves one owner (a builder, a cache, a stand-alone publisher) under a fixed name,
its *component* (``"builder"``, ``"cache"``, ``"publisher"``). It runs copy *jobs*: a job is a
plain function copying one or more payloads. A job runs in a worker thread when the runner
offloads (``run_in_thread``), else inline; either way it holds one of ``max_concurrency``
slots while it runs. The owners decide what becomes a job: copies that stay inline on the event
loop (small or immutable payloads, the cache's hits) never reach the runner and cost nothing.

Lifecycle:

1. **accepting**: jobs are taken; a caller waits for a slot at most until its deadline
   (``timeout``), and waits for a thread job at most until then too. Either wait expiring
   raises :class:`SnapshotDeadlineExceededError` (counted in ``capacity_timeout_count`` or
   ``timeout_count``); a thread job outliving its caller keeps its slot until it really ends.
2. **shutting down** (:meth:`PayloadCopyRunner.begin_shutdown`): new jobs are refused with
   :class:`PayloadCopySubsystemClosedError`, callers waiting for a slot get that error at once,
   running jobs get the shutdown budget (:func:`shut_down_runners`).
3. **complete**: no job runs any more. When the budget ran out first the runner is
   **incomplete** (``shutdown_incomplete``, ``shutdown_timeout_count``,
   ``active_at_last_shutdown_timeout``) until its last late job ends; then it flips to
   complete on its own (:meth:`PayloadCopyRunner.wait_closed` waits for that).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, final

from ._clock import Clock, SystemClock
from ._copy_health import (
    PayloadCopyHealth,
    PayloadCopyShutdownTimeoutError,
    PayloadCopySubsystemClosedError,
    check_copy_settings,
    check_copy_timeout,
)
from ._errors import SnapshotDeadlineExceededError

T = TypeVar("T")


@final
class PayloadCopyRunner:
    """Runs copy jobs for one component, at most ``max_concurrency`` at once (module docstring).

    Args:
        component: the component's name (in errors and health).
        run_in_thread: run jobs in worker threads (else inline, still bounded and counted).
        max_concurrency: the most jobs running at once (>= 1, validated by the owner).
        clock: measures waits and durations (default: ``SystemClock()``).
    """

    __slots__ = (
        "_active",
        "_clock",
        "_idle",
        "_waiters",
        "_waiting",
        "accepting",
        "active_at_last_shutdown_timeout",
        "capacity_timeouts",
        "capacity_waits",
        "completed",
        "component",
        "failures",
        "max_concurrency",
        "max_duration",
        "max_wait",
        "peak_active",
        "peak_waiting",
        "run_in_thread",
        "shutdown_complete",
        "shutdown_incomplete",
        "shutdown_started",
        "shutdown_timeouts",
        "started",
        "timeouts",
        "total_duration",
        "total_wait",
    )

    def __init__(
        self,
        component: str,
        *,
        run_in_thread: bool,
        max_concurrency: int,
        clock: Clock | None = None,
    ) -> None:
        self._clock = SystemClock() if clock is None else clock
        self.component = component
        self.run_in_thread = run_in_thread
        self.max_concurrency = max_concurrency
        self._active = 0
        self._waiting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._idle: list[asyncio.Future[None]] = []
        self.accepting = True
        self.shutdown_started = self.shutdown_complete = self.shutdown_incomplete = False
        self.started = self.completed = self.failures = self.timeouts = 0
        self.capacity_timeouts = self.capacity_waits = self.shutdown_timeouts = 0
        self.peak_active = self.peak_waiting = self.active_at_last_shutdown_timeout = 0
        self.total_wait = self.max_wait = self.total_duration = self.max_duration = 0.0

    @property
    def active(self) -> int:
        """Jobs running now (a job outliving its caller included)."""
        return self._active

    def check_open(self) -> None:
        """Raise :class:`PayloadCopySubsystemClosedError` once shutdown has started."""
        if not self.accepting:
            raise PayloadCopySubsystemClosedError(component=self.component)

    async def run(self, job: Callable[[], T], *, timeout: float | None = None) -> T:
        """Run ``job`` in a slot, in a worker thread when the runner offloads, and return its
        result. ``timeout`` (seconds, e.g. what is left of a snapshot deadline) bounds the wait
        for a slot and for a thread job together.

        Raises:
            PayloadCopySubsystemClosedError: shutdown has started (before or while waiting).
            SnapshotDeadlineExceededError: ``timeout`` passed first.
            Exception: whatever ``job`` raised.
        """
        self.check_open()
        monotonic = self._clock.monotonic
        begun = monotonic()
        await self._acquire(timeout)
        if timeout is not None:
            timeout = max(0.0, timeout - (monotonic() - begun))
        self.started += 1
        if not self.run_in_thread:
            clock = monotonic()
            try:
                result = job()
            except BaseException:
                self._finish(clock, failed=True)
                raise
            self._finish(clock, failed=False)
            return result
        return await self._run_in_thread(job, timeout)

    async def _run_in_thread(self, job: Callable[[], T], timeout: float | None) -> T:
        clock = self._clock.monotonic()
        try:
            task: asyncio.Future[T] = asyncio.ensure_future(asyncio.to_thread(job))
        except BaseException:
            self._finish(clock, failed=True)
            raise
        # The slot is given back when the thread ends, not when this caller stops waiting: a
        # caller cannot stop a thread, so the slot stays taken (and the job active) until then.
        task.add_done_callback(lambda done: self._finish(clock, failed=_failed(done)))
        finished, _ = await asyncio.wait((task,), timeout=timeout)
        if not finished:
            self.timeouts += 1
            raise SnapshotDeadlineExceededError(
                f"snapshot deadline exceeded while copying payloads ({self.component})"
            )
        return task.result()

    async def _acquire(self, timeout: float | None) -> None:
        if self._active < self.max_concurrency and not self._waiters:
            self._take()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._waiting += 1
        self.capacity_waits += 1
        self.peak_waiting = max(self.peak_waiting, self._waiting)
        begun = self._clock.monotonic()
        try:
            await asyncio.wait((waiter,), timeout=timeout)
        except BaseException:
            self._give_up(waiter)
            raise
        finally:
            self._waiting -= 1
            waited = self._clock.monotonic() - begun
            self.total_wait += waited
            self.max_wait = max(self.max_wait, waited)
        if not waiter.done():
            self._give_up(waiter)
            self.capacity_timeouts += 1
            raise SnapshotDeadlineExceededError(
                f"snapshot deadline exceeded while waiting for payload copy capacity "
                f"({self.component})"
            )
        waiter.result()  # the slot was handed over, or shutdown started: raises then

    def _give_up(self, waiter: asyncio.Future[None]) -> None:
        """A waiter leaves: drop it, and pass on a slot it was handed meanwhile."""
        if waiter.done():
            if not waiter.cancelled() and waiter.exception() is None:
                self._release()
            return
        waiter.cancel()
        self._waiters.remove(waiter)

    def _take(self) -> None:
        self._active += 1
        self.peak_active = max(self.peak_active, self._active)

    def _finish(self, clock: float, *, failed: bool) -> None:
        elapsed = self._clock.monotonic() - clock
        self.total_duration += elapsed
        self.max_duration = max(self.max_duration, elapsed)
        if failed:
            self.failures += 1
        else:
            self.completed += 1
        self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the first waiter
                return
        self._active -= 1
        if self._active == 0:
            if self.shutdown_started:
                self.shutdown_complete, self.shutdown_incomplete = True, False
            idle, self._idle = self._idle, []
            for waiter in idle:
                if not waiter.done():
                    waiter.set_result(None)

    # -- shutdown ----------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Refuse new jobs and fail the callers waiting for a slot. Idempotent."""
        if self.shutdown_started:
            return
        self.accepting = False
        self.shutdown_started = True
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(PayloadCopySubsystemClosedError(component=self.component))
        if self._active == 0:
            self.shutdown_complete = True

    def end_shutdown(self) -> int:
        """The shutdown budget is spent: return how many jobs still run (0: complete). Jobs
        still running are counted as a shutdown timeout and leave the runner incomplete."""
        if self._active:
            self.shutdown_incomplete = True
            self.shutdown_timeouts += 1
            self.active_at_last_shutdown_timeout = self._active
            return self._active
        self.shutdown_complete = True
        return 0

    async def wait_closed(self) -> None:
        """Wait, without a budget, until no job runs (after :meth:`begin_shutdown`)."""
        while self._active:
            await self.when_idle()

    def when_idle(self) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle.append(waiter)
        return waiter

    def health(self) -> PayloadCopyHealth:
        """The current state and counters."""
        ended = self.completed + self.failures
        return PayloadCopyHealth(
            run_in_thread=self.run_in_thread,
            max_concurrency=self.max_concurrency,
            active_copies=self._active,
            waiting_for_capacity=self._waiting,
            peak_active_copies=self.peak_active,
            peak_waiting_for_capacity=self.peak_waiting,
            started_count=self.started,
            completed_count=self.completed,
            failure_count=self.failures,
            timeout_count=self.timeouts,
            capacity_timeout_count=self.capacity_timeouts,
            capacity_wait_count=self.capacity_waits,
            average_wait_ms=self.total_wait * 1000.0 / self.capacity_waits
            if self.capacity_waits
            else 0.0,
            max_wait_ms=self.max_wait * 1000.0,
            average_duration_ms=self.total_duration * 1000.0 / ended if ended else 0.0,
            max_duration_ms=self.max_duration * 1000.0,
            accepting_copies=self.accepting,
            shutdown_started=self.shutdown_started,
            shutdown_complete=self.shutdown_complete,
            shutdown_incomplete=self.shutdown_incomplete,
            shutdown_timeout_count=self.shutdown_timeouts,
            active_at_last_shutdown_timeout=self.active_at_last_shutdown_timeout,
        )


async def shut_down_runners(runners: Mapping[str, PayloadCopyRunner], timeout: float) -> None:
    """Stop every runner (new copies refused, waiters failed at once), then give the running
    copies ``timeout`` seconds in total.

    Raises:
        PayloadCopyShutdownTimeoutError: copies still ran when the budget ran out (the runners
            report an incomplete shutdown until they end).
    """
    for runner in runners.values():
        runner.begin_shutdown()
    busy = [runner.when_idle() for runner in runners.values() if runner.active]
    if busy:
        await asyncio.wait(busy, timeout=timeout)
    late: dict[str, int] = {}
    for name, runner in runners.items():
        still = runner.end_shutdown()
        if still:
            late[name] = still
    if late:
        raise PayloadCopyShutdownTimeoutError(timeout_seconds=timeout, active_components=late)


def _failed(task: asyncio.Future[Any]) -> bool:
    """True when a thread job ended with an error (retrieved here, so an abandoned failure is
    not logged as lost)."""
    return task.cancelled() or task.exception() is not None


__all__ = [
    "PayloadCopyHealth",
    "PayloadCopyRunner",
    "PayloadCopyShutdownTimeoutError",
    "PayloadCopySubsystemClosedError",
    "check_copy_settings",
    "check_copy_timeout",
    "shut_down_runners",
]
