"""``asyncio.timeout`` / ``timeout_at`` / ``Timeout`` for 3.10."""

from __future__ import annotations

import asyncio
import enum
import sys
from types import FrameType, TracebackType
from typing import Any, final

from ._cancelling import _is_ours, _request_cancel, _requested, _withdraw_cancel

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
