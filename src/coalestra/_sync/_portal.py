"""One event loop in one owned daemon thread, and the portal every blocking call goes through.

Like anyio's ``BlockingPortal``: :meth:`LoopPortal.start` schedules a coroutine function on the
loop from any thread and returns a :class:`concurrent.futures.Future`; :meth:`LoopPortal.call`
does that and waits, cancelling the coroutine if the wait itself ends early (a timeout, or an
interrupt such as ``KeyboardInterrupt``). Nothing else crosses threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, final

from .._compat import TIMEOUT_ERRORS
from ..core._closed import SYNC_BUILDER_CLOSED, ClosedError

T = TypeVar("T")
P = ParamSpec("P")

# Real seconds the stopping loop thread gives leftover tasks to finish cancelling, and the
# default executor's threads to wind down, before it closes the loop regardless: a task that
# ignores cancellation must not keep close() (or interpreter exit) waiting forever.
_CLEANUP_SECONDS = 5.0

_numbers = itertools.count(1)


def loop_running_here() -> bool:
    """True when the calling thread is running an event loop."""
    # The fast, non-raising form of get_running_loop(): this runs on every blocking call.
    return asyncio._get_running_loop() is not None


def caller_may_block(what: str, loop_thread: threading.Thread | None = None) -> None:
    """Raise ``RuntimeError`` when the calling thread runs an event loop: blocking it would
    stall that loop, and on the facade's own loop thread it would deadlock."""
    if loop_thread is not None and threading.current_thread() is loop_thread:
        raise RuntimeError(
            f"{what} blocks and cannot run on the synchronous facade's own event-loop thread "
            "(for example inside a source or a callback): use the async API there"
        )
    if loop_running_here():
        raise RuntimeError(
            f"{what} blocks and cannot be called from a running event loop: "
            "await the async SnapshotBuilder API instead"
        )


@final
class LoopPortal:
    """A persistent event loop running in one daemon thread, started at construction.

    Thread-safe: any number of threads may ``start`` and ``call`` at once. After :meth:`stop`
    both raise :class:`SessionClosedError`, and callers still waiting get it too.
    """

    __slots__ = ("_lock", "_loop", "_open", "_thread")

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._open = True
        self._thread = threading.Thread(
            target=self._run, name=f"coalestra-sync-{next(_numbers)}", daemon=True
        )
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        """The loop's thread."""
        return self._thread

    @property
    def running(self) -> bool:
        """True until :meth:`stop` is called."""
        return self._open

    def in_loop_thread(self) -> bool:
        """True when called from the loop's own thread."""
        return threading.current_thread() is self._thread

    def start(
        self, function: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Schedule ``function(*args, **kwargs)`` on the loop; never blocks.

        Cancelling the returned future cancels the coroutine on the loop.

        Raises:
            SessionClosedError: the portal was stopped.
        """
        with self._lock:  # so that nothing is scheduled once stop() has begun
            if not self._open:
                raise ClosedError(SYNC_BUILDER_CLOSED)
            return asyncio.run_coroutine_threadsafe(function(*args, **kwargs), self._loop)

    def call(
        self, function: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``function(*args, **kwargs)`` on the loop and return its result (or raise its
        exception) in the calling thread.

        Raises:
            RuntimeError: called from a thread running an event loop (this one's included).
            SessionClosedError: the portal is stopped, or stopped while the call ran.
        """
        caller_may_block("this call", self._thread)
        return self.result(self.start(function, *args, **kwargs))

    def call_within(
        self,
        timeout: float,
        function: Callable[P, Coroutine[Any, Any, T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Like :meth:`call`, waiting at most ``timeout`` seconds.

        Raises:
            TimeoutError: the call did not finish in time; it was cancelled on the loop.
        """
        caller_may_block("this call", self._thread)
        return self.result(self.start(function, *args, **kwargs), timeout)

    def result(self, future: concurrent.futures.Future[T], timeout: float | None = None) -> T:
        """Wait for ``future``; if the wait (not the work) ends early, cancel the work."""
        try:
            return future.result(timeout)
        except TIMEOUT_ERRORS:  # 3.10: concurrent.futures.TimeoutError is not yet TimeoutError
            if future.done() and not future.cancelled():
                return future.result()  # it finished meanwhile, or raised TimeoutError itself
            future.cancel()
            raise TimeoutError(f"the call did not finish within {timeout} s; cancelled") from None
        except concurrent.futures.CancelledError:
            if not self._open:
                raise ClosedError(SYNC_BUILDER_CLOSED) from None
            raise
        except BaseException:
            future.cancel()  # an interrupt while waiting: leave no orphan work on the loop
            raise

    def stop(self) -> None:
        """Refuse new work, cancel what is left on the loop, stop it and (unless called from
        the loop thread itself) join the thread. Idempotent."""
        with self._lock:
            was_open, self._open = self._open, False
        if was_open:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if not self.in_loop_thread():
            self._thread.join()

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                _cancel_leftovers(loop)
            finally:
                asyncio.set_event_loop(None)
                loop.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    # Work started just before stop() may still be a callback in the ready queue: one turn
    # turns it into a task, so it is cancelled below rather than lost with its caller waiting.
    loop.run_until_complete(asyncio.sleep(0))
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=_CLEANUP_SECONDS))
    loop.run_until_complete(loop.shutdown_asyncgens())
    shutdown = asyncio.wait_for(loop.shutdown_default_executor(), _CLEANUP_SECONDS)
    # On timeout a worker thread is stuck in user code: it cannot be stopped; do not wait.
    with contextlib.suppress(TimeoutError):
        loop.run_until_complete(shutdown)
