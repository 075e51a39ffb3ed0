"""``asyncio.Runner`` for 3.10."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, final

T = TypeVar("T")

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
