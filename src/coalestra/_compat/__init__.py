"""Python 3.10 support: the asyncio pieces that arrived in 3.11, in one place.

On 3.11 and newer the public names here are the standard library's own: ``TaskGroup``,
``timeout`` / ``timeout_at`` / ``Timeout``, ``Runner``, ``BaseExceptionGroup`` /
``ExceptionGroup``, and :func:`watch_cancellation` reads ``Task.cancelling()``. On 3.10 they are
the small equivalents in this package's modules (``_taskgroup``, ``_timeout``, ``_watch``,
``_runner``, sharing ``_cancelling``), written against 3.10's asyncio only. The equivalents (the
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

import sys
from collections.abc import Awaitable
from typing import TypeVar

from ._cancelling import (
    CANCEL_MESSAGE,
    TIMEOUT_ERRORS,
    BaseExceptionGroup,
    ExceptionGroup,
)
from ._cancelling import (
    _group_of as _group_of,  # the suite checks 3.10 group construction
)
from ._runner import FallbackRunner
from ._taskgroup import FallbackTaskGroup
from ._timeout import FallbackTimeout, fallback_timeout, fallback_timeout_at
from ._watch import CancelWatch, FallbackCancelWatch

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
