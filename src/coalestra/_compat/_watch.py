"""Who cancelled the task: :class:`CancelWatch` (3.11+) and its 3.10 twin."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from typing import Any, Generic, TypeVar, final

T = TypeVar("T")

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
