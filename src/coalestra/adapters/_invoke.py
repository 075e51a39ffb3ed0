"""Calling user functions: async or sync (in a worker thread or inline), decided once."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, TypeAlias, final

from ..core._values import SourcePayload, wrap_payload

UserFunction: TypeAlias = Callable[..., object]


def is_async_callable(function: object) -> bool:
    """True for ``async def`` functions (also bound, or wrapped in ``functools.partial``) and for
    objects whose ``__call__`` is ``async def``."""
    if inspect.iscoroutinefunction(function):
        return True
    if not callable(function):
        return False
    # Calls go through the type's __call__: a slot wrapper for plain functions and classes,
    # the user's (possibly async) method for callable objects.
    return inspect.iscoroutinefunction(type(function).__call__)


def check_call_shape(name: str, function: UserFunction, shape: tuple[str, ...]) -> None:
    """Reject ``function`` now when it cannot be called with ``len(shape)`` positional
    arguments, instead of failing (and being retried, and tripping the breaker) at build time.

    A function whose signature cannot be read (some builtins) is accepted as it is.

    Raises:
        TypeError: ``"<name> must accept (<shape>); <function>(<its parameters>) cannot: ..."``.
    """
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*shape)
    except TypeError as error:
        label = getattr(function, "__qualname__", None) or type(function).__name__
        raise TypeError(
            f"{name} must accept ({', '.join(shape)}); {label}{signature} cannot: {error}"
        ) from None


def discard_awaitable(result: object) -> None:
    """Close ``result`` if it is a coroutine a caller will never await (no "never awaited"
    warning on top of the error being raised)."""
    if inspect.iscoroutine(result):
        result.close()


@final
class Invoker:
    """Calls one user function the way its kind requires, chosen once at construction.

    Async functions are awaited on the loop. Sync functions run in a worker thread via
    ``asyncio.to_thread`` (context variables included), or inline on the loop when
    ``run_sync_in_thread`` is False: only for non-blocking local reads. A sync function that
    returns an awaitable (a lambda returning a coroutine, say) has that awaitable awaited.

    Args:
        function: the user function.
        run_sync_in_thread: offload a sync ``function`` to a worker thread.
    """

    __slots__ = ("_function", "_is_async", "_offload")

    def __init__(self, function: UserFunction, *, run_sync_in_thread: bool) -> None:
        self._function = function
        self._is_async = is_async_callable(function)
        self._offload = run_sync_in_thread and not self._is_async

    @property
    def is_async(self) -> bool:
        """True when the function was recognised as asynchronous."""
        return self._is_async

    @property
    def offloaded(self) -> bool:
        """True when calls run in a worker thread."""
        return self._offload

    async def __call__(self, *args: object) -> object:
        """Call the function with ``args`` and return its (awaited) result."""
        if self._offload:
            result = await asyncio.to_thread(self._function, *args)
        else:
            result = self._function(*args)
        if inspect.isawaitable(result):
            result = await result
        return result


def to_payload(result: object) -> SourcePayload[Any]:
    """Return ``result`` if it is a :class:`SourcePayload`; wrap anything else as one."""
    if isinstance(result, SourcePayload):
        return result
    return wrap_payload(result)  # SourcePayload(result), minus the checks: nothing to check
