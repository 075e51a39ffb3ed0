"""``asyncio.TaskGroup`` for 3.10."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from types import FrameType, TracebackType
from typing import Any, TypeVar, final

from ._cancelling import (
    _group_of,
    _is_ours,
    _request_cancel,
    _withdraw_cancel,
)

T = TypeVar("T")

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
