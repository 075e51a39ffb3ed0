"""Python 3.10 support: the asyncio pieces that arrived in 3.11, in one place.

On 3.11 and newer the public names here are the standard library's own: ``TaskGroup``,
``timeout`` / ``timeout_at`` / ``Timeout``, ``Runner``, ``BaseExceptionGroup`` /
``ExceptionGroup``, and :func:`watch_cancellation` reads ``Task.cancelling()``. On 3.10 they are
the small equivalents below, written against 3.10's asyncio only. The equivalents (the
``Fallback*`` classes) are importable on every version, and the test suite runs them on every
version too, side by side with the standard library's, so both behave the same.

3.10 tasks have no cancellation counter (``Task.cancelling()`` / ``uncancel()``), which is what
lets 3.11's task groups and timeouts tell their own cancellation of a task from somebody else's.
The equivalents keep their own count of the cancellations they request, and mark each with
:data:`CANCEL_MESSAGE`; a ``CancelledError`` that does not carry the mark (itself or, across a
task boundary, the error it was made from) is somebody else's and always propagates. One race is
left, the same one 3.10's own ``asyncio.wait_for`` has: a ``cancel()`` that reaches a task in the
same loop iteration just after ours is merged into ours by 3.10's ``Task`` and is handled as ours.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import sys
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from types import FrameType, TracebackType
from typing import Any, Generic, TypeVar, final

__all__ = [
    "CANCEL_MESSAGE",
    "TIMEOUT_ERRORS",
    "BaseExceptionGroup",
    "CancelWatch",
    "ExceptionGroup",
    "FallbackCancelWatch",
    "FallbackRunner",
    "FallbackTaskGroup",
    "FallbackTimeout",
    "Runner",
    "TaskGroup",
    "Timeout",
    "fallback_timeout",
    "fallback_timeout_at",
    "timeout",
    "timeout_at",
    "watch_cancellation",
]

T = TypeVar("T")

# The message our own cancellations carry (3.10 only; see the module docstring).
CANCEL_MESSAGE = "coalestra: cancelled by its own task group or deadline"

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup, ExceptionGroup

    # asyncio.TimeoutError and concurrent.futures.TimeoutError are TimeoutError itself.
    TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError,)
else:
    import concurrent.futures

    class BaseExceptionGroup(BaseException):
        """3.10: a minimal stand-in for the builtin (``message`` and ``exceptions``)."""

        def __init__(self, message: str, exceptions: Sequence[BaseException]) -> None:
            super().__init__(message, tuple(exceptions))
            self.message = message
            self.exceptions: tuple[BaseException, ...] = tuple(exceptions)

    class ExceptionGroup(BaseExceptionGroup, Exception):
        """3.10: a group of ``Exception`` s only, as the builtin."""

    # On 3.10 asyncio's and concurrent.futures' timeouts are not (yet) the builtin TimeoutError.
    TIMEOUT_ERRORS = (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError)


def _group_of(errors: list[BaseException]) -> BaseExceptionGroup:
    """The group 3.11's ``BaseExceptionGroup(...)`` makes: an ``ExceptionGroup`` when it can."""
    message = "unhandled errors in a TaskGroup"
    exceptions = [error for error in errors if isinstance(error, Exception)]
    if len(exceptions) == len(errors):
        return ExceptionGroup(message, exceptions)
    return BaseExceptionGroup(message, errors)


# -- cancellation bookkeeping for the fallbacks ----------------------------------------------

_requested: weakref.WeakKeyDictionary[asyncio.Task[Any], int] = weakref.WeakKeyDictionary()


def _request_cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` on our own account: counted, and marked with :data:`CANCEL_MESSAGE`."""
    _requested[task] = _requested.get(task, 0) + 1
    task.cancel(CANCEL_MESSAGE)


def _withdraw_cancel(task: asyncio.Task[Any]) -> int:
    """Take back one of our requests (``Task.uncancel()``); return how many are left."""
    # Where tasks count cancellations themselves (3.11+, where the fallbacks run in our tests
    # only), keep their count right too.
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()
    left = _requested.get(task, 0) - 1
    if left <= 0:
        _requested.pop(task, None)
        return 0
    _requested[task] = left
    return left


def _is_ours(error: BaseException | None, owner: FrameType | None) -> bool:
    """True if ``error`` is a cancellation we requested of the task running ``owner`` (the
    frame that entered the group or scope).

    A task that ends cancelled hands its awaiter a new, unmarked ``CancelledError`` made from
    (``__context__``) its own, so a mark found down that chain counts too, unless the marked
    error went through ``owner`` itself: then it was ours, was handled, and the unmarked one
    is a new cancellation from somebody else (say, during cleanup).
    """
    first = True
    while isinstance(error, asyncio.CancelledError):
        if error.args == (CANCEL_MESSAGE,):
            return first or not _went_through(error, owner)
        if error.args:
            return False  # somebody else's message
        first = False
        error = error.__context__
    return False


def _went_through(error: BaseException, frame: FrameType | None) -> bool:
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame is frame:
            return True
        tb = tb.tb_next
    return False


# -- task group ------------------------------------------------------------------------------


@final
class FallbackTaskGroup:
    """``asyncio.TaskGroup`` for 3.10 (CPython 3.11's algorithm, our cancellation count).

    The first error of a task cancels the other tasks and the body of the ``async with``; the
    group waits for every task, then raises ``KeyboardInterrupt`` / ``SystemExit`` as they
    are, or the errors in an ``ExceptionGroup``. A cancellation from outside is never lost: it
    cancels the tasks and propagates once they are done (errors of the tasks take precedence,
    as in 3.11).
    """

    __slots__ = (
        "_aborting",
        "_base_error",
        "_entered",
        "_errors",
        "_exiting",
        "_loop",
        "_on_completed",
        "_outside_cancel",
        "_owner",
        "_parent",
        "_parent_cancel_requested",
        "_tasks",
    )

    def __init__(self) -> None:
        self._entered = False
        self._exiting = False
        self._aborting = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._parent: asyncio.Task[Any] | None = None
        self._parent_cancel_requested = False
        self._outside_cancel = False
        self._owner: FrameType | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._errors: list[BaseException] = []
        self._base_error: BaseException | None = None
        self._on_completed: asyncio.Future[bool] | None = None

    async def __aenter__(self) -> FallbackTaskGroup:
        if self._entered:
            raise RuntimeError("TaskGroup has already been entered")
        self._loop = asyncio.get_running_loop()
        self._parent = asyncio.current_task(self._loop)
        if self._parent is None:
            raise RuntimeError("TaskGroup cannot determine the parent task")
        self._owner = sys._getframe(1)  # the code inside ``async with`` (see _is_ours)
        self._entered = True
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._loop is not None
        assert self._parent is not None
        self._exiting = True
        owner, self._owner = self._owner, None
        if exc is not None and _is_base_error(exc) and self._base_error is None:
            self._base_error = exc
        propagate: BaseException | None = None
        if isinstance(exc, asyncio.CancelledError):
            propagate = exc
            self._outside_cancel |= not _is_ours(exc, owner)
        if et is not None and not self._aborting:
            self._abort()  # the body failed or was cancelled: stop the tasks
        while self._tasks:
            if self._on_completed is None:
                self._on_completed = self._loop.create_future()
            try:
                await self._on_completed
            except asyncio.CancelledError as error:
                # Our parent is being cancelled while the tasks finish (again, perhaps).
                self._outside_cancel |= not _is_ours(error, owner)
                if not self._aborting:
                    propagate = error
                    self._abort()
            self._on_completed = None
        # Like 3.11's uncancel(): our own request is done with, unless another one still stands.
        if (
            self._parent_cancel_requested
            and _withdraw_cancel(self._parent) == 0
            and not self._outside_cancel
        ):
            propagate = None
        if self._base_error is not None:
            raise self._base_error
        if propagate is not None and not self._errors:
            raise propagate
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            self._errors.append(exc)
        if self._errors:
            if self._outside_cancel:
                # The errors win, but the cancellation must not be lost: deliver it again at
                # the next await (as 3.13 does).
                self._parent.cancel()
            errors, self._errors = self._errors, []
            raise _group_of(errors) from None

    def create_task(
        self, coro: Coroutine[Any, Any, T], *, name: str | None = None
    ) -> asyncio.Task[T]:
        """Start ``coro`` as a task of this group (``asyncio.TaskGroup.create_task``)."""
        if not self._entered:
            coro.close()
            raise RuntimeError("TaskGroup has not been entered")
        if self._exiting and not self._tasks:
            coro.close()
            raise RuntimeError("TaskGroup is finished")
        if self._aborting:
            coro.close()
            raise RuntimeError("TaskGroup is shutting down")
        assert self._loop is not None
        task = self._loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)
        return task

    def _abort(self) -> None:
        self._aborting = True
        for task in self._tasks:
            if not task.done():
                task.cancel()

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        assert self._loop is not None
        assert self._parent is not None
        self._tasks.discard(task)
        if self._on_completed is not None and not self._tasks and not self._on_completed.done():
            self._on_completed.set_result(True)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        self._errors.append(error)
        if _is_base_error(error) and self._base_error is None:
            self._base_error = error
        if self._parent.done():
            self._loop.call_exception_handler(
                {
                    "message": f"Task {task!r} has errored out but its parent is done",
                    "exception": error,
                    "task": task,
                }
            )
            return
        if not self._aborting and not self._parent_cancel_requested:
            # Stop whatever the body is awaiting; __aexit__ takes this request back.
            self._abort()
            self._parent_cancel_requested = True
            _request_cancel(self._parent)


def _is_base_error(error: BaseException) -> bool:
    return isinstance(error, (SystemExit, KeyboardInterrupt))


# -- deadline scope --------------------------------------------------------------------------


class _State(enum.Enum):
    CREATED = "created"
    ENTERED = "active"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    EXITED = "finished"


@final
class FallbackTimeout:
    """``asyncio.Timeout`` for 3.10: cancels the task at loop time ``when`` and turns that
    cancellation (only that one) into ``TimeoutError`` when the ``async with`` exits.

    A cancellation from outside, or one of an enclosing scope that expired as well, propagates
    as ``CancelledError``; nested scopes nest as in 3.11.
    """

    __slots__ = ("_entry_requests", "_handle", "_owner", "_state", "_task", "_when")

    def __init__(self, when: float | None) -> None:
        self._state = _State.CREATED
        self._handle: asyncio.Handle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._entry_requests = 0
        self._owner: FrameType | None = None
        self._when = when

    def when(self) -> float | None:
        """The deadline, in loop time (``None``: never)."""
        return self._when

    def reschedule(self, when: float | None) -> None:
        """Move the deadline (``None``: never); only while inside and not yet expired."""
        if self._state is not _State.ENTERED:
            if self._state is _State.CREATED:
                raise RuntimeError("Timeout has not been entered")
            raise RuntimeError(f"Cannot change state of {self._state.value} Timeout")
        self._when = when
        if self._handle is not None:
            self._handle.cancel()
        if when is None:
            self._handle = None
            return
        loop = asyncio.get_running_loop()
        if when <= loop.time():
            self._handle = loop.call_soon(self._on_timeout)
        else:
            self._handle = loop.call_at(when, self._on_timeout)

    def expired(self) -> bool:
        """True once the deadline has fired."""
        return self._state in (_State.EXPIRING, _State.EXPIRED)

    def __repr__(self) -> str:
        return f"<Timeout [{self._state.value}] when={self._when}>"

    async def __aenter__(self) -> FallbackTimeout:
        if self._state is not _State.CREATED:
            raise RuntimeError("Timeout has already been entered")
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Timeout should be used inside a task")
        self._state = _State.ENTERED
        self._task = task
        self._entry_requests = _requested.get(task, 0)
        self._owner = sys._getframe(1)  # the code inside ``async with`` (see _is_ours)
        self.reschedule(self._when)
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._state in (_State.ENTERED, _State.EXPIRING)
        assert self._task is not None
        owner, self._owner = self._owner, None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._state is _State.EXPIRING:
            self._state = _State.EXPIRED
            left = _withdraw_cancel(self._task)
            if left <= self._entry_requests and _is_ours(exc, owner):
                raise TimeoutError from exc
        elif self._state is _State.ENTERED:
            self._state = _State.EXITED

    def _on_timeout(self) -> None:
        assert self._state is _State.ENTERED
        assert self._task is not None
        _request_cancel(self._task)
        self._state = _State.EXPIRING
        self._handle = None


def fallback_timeout(delay: float | None) -> FallbackTimeout:
    """``asyncio.timeout`` for 3.10: a scope ending ``delay`` seconds from now."""
    loop = asyncio.get_running_loop()
    return FallbackTimeout(None if delay is None else loop.time() + delay)


def fallback_timeout_at(when: float | None) -> FallbackTimeout:
    """``asyncio.timeout_at`` for 3.10: a scope ending at loop time ``when``."""
    return FallbackTimeout(when)


# -- who cancelled the task? -----------------------------------------------------------------


class CancelWatch(Generic[T]):
    """Awaits ``awaitable`` and tells afterwards whether the awaiting task was asked to cancel
    meanwhile: a ``CancelledError`` that comes out although nobody cancelled us was raised by
    the awaited code itself. This one reads ``Task.cancelling()`` (3.11+)."""

    __slots__ = ("_awaitable",)

    def __init__(self, awaitable: Awaitable[T]) -> None:
        self._awaitable = awaitable

    def __await__(self) -> Generator[Any, Any, T]:
        return self._awaitable.__await__()

    def requested(self) -> bool:
        """True if the current task has a cancellation request pending."""
        task = asyncio.current_task()
        return task is None or task.cancelling() > 0  # type: ignore[attr-defined,unused-ignore]


@final
class FallbackCancelWatch(CancelWatch[T]):
    """:class:`CancelWatch` for 3.10, which has no ``cancelling()``: a task's cancellation is
    thrown into its coroutine down the chain of ``await`` s, so it passes through here on its
    way in; a ``CancelledError`` the awaited code raises by itself does not.

    Conservative where 3.10 cannot tell: a ``CancelledError`` thrown in because a future the
    call awaited was cancelled by somebody else counts as a request too (3.11 would call it the
    call's own), so it propagates as a cancellation, as it always did before 3.11.
    """

    __slots__ = ("_inner", "_thrown")

    def __init__(self, awaitable: Awaitable[T]) -> None:
        super().__init__(awaitable)
        self._thrown = False
        self._inner: Any = None

    def __await__(self) -> Generator[Any, Any, T]:
        self._inner = self._awaitable.__await__()
        return self

    def __iter__(self) -> FallbackCancelWatch[T]:
        return self

    def __next__(self) -> Any:
        return self._inner.send(None)

    def send(self, value: Any) -> Any:
        return self._inner.send(value)

    def throw(self, error: Any, value: Any = None, traceback: Any = None) -> Any:
        thrown = error if value is None else value
        if isinstance(thrown, asyncio.CancelledError) or thrown is asyncio.CancelledError:
            self._thrown = True
        if value is None and traceback is None:
            return self._inner.throw(error)
        return self._inner.throw(error, value, traceback)

    def close(self) -> None:
        self._inner.close()

    def requested(self) -> bool:
        """True if a cancellation was thrown in while awaiting."""
        return self._thrown


# -- runner ----------------------------------------------------------------------------------


@final
class FallbackRunner:
    """``asyncio.Runner`` for 3.10: one loop for several ``run()`` calls, closed (tasks
    cancelled, async generators and the default executor shut down) by :meth:`close`.

    Unlike 3.11's, it does not turn Ctrl-C into a cancellation of the main task, and each
    ``run()`` gets its own copy of the runner's context.
    """

    __slots__ = ("_closed", "_context", "_debug", "_loop", "_loop_factory", "_set_event_loop")

    def __init__(
        self,
        *,
        debug: bool | None = None,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> None:
        self._debug = debug
        self._loop_factory = loop_factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context: contextvars.Context | None = None
        self._closed = False
        self._set_event_loop = False

    def __enter__(self) -> FallbackRunner:
        self._lazy_init()
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.close()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The runner's loop (made on first use)."""
        return self._lazy_init()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to completion on the runner's loop and return its result."""
        if not asyncio.iscoroutine(coro):
            raise ValueError(f"a coroutine was expected, got {coro!r}")
        if asyncio._get_running_loop() is not None:
            raise RuntimeError("Runner.run() cannot be called from a running event loop")
        loop = self._lazy_init()
        assert self._context is not None
        task = self._context.run(loop.create_task, coro)
        return loop.run_until_complete(task)

    def close(self) -> None:
        """Cancel what is left, shut the loop down and close it. Idempotent."""
        loop, self._loop = self._loop, None
        if loop is None:
            self._closed = True
            return
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            if self._set_event_loop:
                asyncio.set_event_loop(None)
            loop.close()
            self._closed = True

    def _lazy_init(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise RuntimeError("Runner is closed")
        if self._loop is None:
            if self._loop_factory is None:
                self._loop = asyncio.new_event_loop()
                if not self._set_event_loop:  # as 3.11: only the default loop becomes current
                    asyncio.set_event_loop(self._loop)
                    self._set_event_loop = True
            else:
                self._loop = self._loop_factory()
            if self._debug is not None:
                self._loop.set_debug(self._debug)
            self._context = contextvars.copy_context()
        return self._loop


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """What ``asyncio.run`` does on the way out: cancel every task and let them finish."""
    left = asyncio.all_tasks(loop)
    if not left:
        return
    for task in left:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
    for task in left:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during Runner.close()",
                    "exception": task.exception(),
                    "task": task,
                }
            )


# -- the names the rest of the package uses ---------------------------------------------------

if sys.version_info >= (3, 11):
    from asyncio import Runner, TaskGroup, Timeout, timeout, timeout_at
else:
    Runner = FallbackRunner
    TaskGroup = FallbackTaskGroup
    Timeout = FallbackTimeout
    timeout = fallback_timeout
    timeout_at = fallback_timeout_at

if sys.version_info >= (3, 11):

    def watch_cancellation(awaitable: Awaitable[T]) -> CancelWatch[T]:
        """Wrap ``awaitable``; after a ``CancelledError``, ``.requested()`` says whether somebody
        cancelled the awaiting task (``False``: the awaited code raised it on its own)."""
        return CancelWatch(awaitable)

else:

    def watch_cancellation(awaitable: Awaitable[T]) -> CancelWatch[T]:
        """3.10: see above; the wrapper sees each cancellation on its way in."""
        return FallbackCancelWatch(awaitable)
