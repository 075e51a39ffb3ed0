"""The state shared by a synchronous facade and its session and publisher facades.

It holds no reference to the public facade objects, so a ``weakref.finalize`` on the facade can
close it when the facade is collected or the interpreter exits with the facade still open.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any, ParamSpec, Protocol, TypeVar, final

from .._compat import TIMEOUT_ERRORS
from ..core import (
    ObservabilityShutdownTimeoutError,
    PayloadCopyShutdownTimeoutError,
    PayloadIsolator,
)
from ..core._closed import SYNC_BUILDER_CLOSED, ClosedError
from ..core._validation import check_float
from ..orchestration import SnapshotBuilder
from ._backlog import SubmissionBacklog
from ._portal import LoopPortal, caller_may_block, loop_running_here

T = TypeVar("T")
P = ParamSpec("P")

# Builders ever driven by a facade. asyncio primitives bind to the first loop that uses them,
# so a builder can serve one facade's loop only, even after that facade closed.
_bound: weakref.WeakSet[SnapshotBuilder] = weakref.WeakSet()
_bound_lock = threading.Lock()


def bind(builder: SnapshotBuilder) -> None:
    """Reserve ``builder`` for one facade.

    Raises:
        ValueError: another facade already drives it.
    """
    with _bound_lock:
        if builder in _bound:
            raise ValueError(
                "builder is already driven by another SyncSnapshotBuilder; "
                "a builder can run on one event loop only"
            )
        _bound.add(builder)


async def run_sync(function: Callable[[], T]) -> T:
    """Run a synchronous function on the loop thread (the builder's state lives there)."""
    return function()


class BacklogView:
    """The backlog counters, for the facade parts that keep their :class:`FacadeCore` in
    ``_core`` (the builder facade and its publisher share one backlog)."""

    __slots__ = ()
    _core: FacadeCore

    @property
    def pending_submissions(self) -> int:
        """Submissions accepted by the facade and not finished yet."""
        return self._core.backlog.pending

    @property
    def max_pending_submissions(self) -> int:
        """The most pending submissions; beyond it ``SubmissionBacklogFullError``."""
        return self._core.backlog.limit


@final
class FacadeCore:
    """The loop thread, the submission backlog and the builder of one facade."""

    __slots__ = (
        "_close_lock",
        "_closing",
        "backlog",
        "builder",
        "close_builder",
        "isolator",
        "portal",
        "shutdown_timeout",
    )

    def __init__(
        self,
        builder: SnapshotBuilder,
        *,
        close_builder: bool,
        shutdown_timeout: float,
        max_pending: int,
    ) -> None:
        self.builder = builder
        self.isolator: PayloadIsolator = builder.payload_isolator
        self.close_builder = close_builder
        self.shutdown_timeout = shutdown_timeout
        self.backlog = SubmissionBacklog(max_pending)
        self._closing = False
        self._close_lock = threading.Lock()
        self.portal = LoopPortal()

    @property
    def closed(self) -> bool:
        """True once closing has begun."""
        return self._closing

    def stopped(self) -> bool:
        """True once the loop was told to stop (closing is over or abandoned)."""
        return not self.portal.running

    def check_open(self) -> None:
        """Raise ``RuntimeError("SyncSnapshotBuilder is closed")`` once the facade is closing."""
        if self._closing:
            raise ClosedError(SYNC_BUILDER_CLOSED)

    def call(
        self, function: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run a coroutine function on the loop and wait for its outcome (the one portal all
        blocking facade methods use)."""
        self.check_open()
        return self.portal.call(function, *args, **kwargs)

    def submit(
        self, function: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Accept a non-blocking submission into the bounded backlog."""
        return self.backlog.submit(lambda: self.portal.start(function, *args, **kwargs))

    def flush(self, timeout_seconds: float | None) -> None:
        """Wait for the submissions accepted before this call; cancel nothing.

        Raises:
            TimeoutError: some are still pending after ``timeout_seconds``.
            ValueError: ``timeout_seconds`` is not positive.
        """
        self.check_open()
        if timeout_seconds is not None:
            timeout_seconds = check_float("timeout_seconds", timeout_seconds, minimum=None)
            if timeout_seconds <= 0:
                raise ValueError("timeout_seconds must be positive")
        caller_may_block("flush_submissions()", self.portal.thread)
        unfinished = self.backlog.wait(timeout_seconds)
        if unfinished:
            raise TimeoutError(f"Timed out waiting for {unfinished} non-blocking submission(s)")

    # -- shutdown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting submissions, drain them (up to ``shutdown_timeout``), cancel the
        rest, close the builder (or, when not owned, wait for its refreshes), again up to
        ``shutdown_timeout``, stop the loop and join its thread. Idempotent."""
        if self.stopped():
            return
        caller_may_block("SyncSnapshotBuilder.close()", self.portal.thread)
        with self._close_lock:  # a concurrent close() returns once this one is done
            if self.stopped():
                return
            self._closing = True
            self.backlog.close()
            if self.backlog.wait(self.shutdown_timeout):
                self.backlog.cancel_all()
            try:
                self.portal.call(self._wind_down)
            finally:
                self.portal.stop()

    async def _wind_down(self) -> None:
        builder, budget = self.builder, self.shutdown_timeout
        # The facade's budget is also the builder's copy and observability shutdown budget.
        closing = partial(
            builder.aclose,
            copy_shutdown_timeout_seconds=budget,
            observability_shutdown_timeout_seconds=budget,
        )
        step = closing() if self.close_builder else builder.wait_for_refreshes()
        try:
            try:
                await asyncio.wait_for(step, budget)
            except (ObservabilityShutdownTimeoutError, PayloadCopyShutdownTimeoutError):
                raise  # TimeoutErrors too, but not the refreshes' one: they reach close()
            except TIMEOUT_ERRORS:  # 3.10: asyncio.TimeoutError is not yet TimeoutError
                # Refreshes outlived the timeout: an owned builder cancels them and closes; a
                # borrowed one keeps them (they end with the loop).
                if self.close_builder:
                    await closing(cancel_refreshes=True)
        finally:
            if self.close_builder:
                # A copy or buffer shutdown timeout propagates from close(), but the loop
                # thread stops only after the late copies and buffer workers have finished.
                await builder.wait_for_background_shutdown()

    def finalize(self) -> None:
        """The facade was collected, or the interpreter exits, with the facade open."""
        if self.stopped():
            return
        if self.portal.in_loop_thread() or loop_running_here():
            self._abandon()  # this thread must not block: shut down without waiting
        else:
            self.close()

    def _abandon(self) -> None:
        self._closing = True
        self.backlog.close()
        self.backlog.cancel_all()
        self.portal.start(self._wind_down_and_stop)

    async def _wind_down_and_stop(self) -> None:
        try:
            await self._wind_down()
        finally:
            self.portal.stop()  # from the loop thread: schedules the stop, joins nothing


class FacadeOwner(Protocol):
    """What a sync publisher or session needs of the ``SyncSnapshotBuilder`` that made it: its
    facade state. Their published signatures say ``owner: 'SyncSnapshotBuilder'``; they name the
    builder by this protocol under that name, so they never import the module that imports them.
    """

    @property
    def _core(self) -> FacadeCore: ...
