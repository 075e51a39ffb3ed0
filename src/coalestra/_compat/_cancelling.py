"""Exception groups, timeout error types, and the bookkeeping that tells our own cancellations
from somebody else's on 3.10 (see the package docstring)."""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections.abc import Sequence
from types import FrameType
from typing import Any

# The message our own cancellations carry (3.10 only; see the module docstring).
CANCEL_MESSAGE = "coalestra: cancelled by its own task group or deadline"

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup as BaseExceptionGroup  # re-exported
    from builtins import ExceptionGroup as ExceptionGroup  # re-exported

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
