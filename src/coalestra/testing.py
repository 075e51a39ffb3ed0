"""Virtual time for tests of code that uses Coalestra (and for Coalestra's own tests).

:class:`VirtualTimeLoop` is an asyncio event loop whose clock jumps straight to the next timer
whenever nothing is ready to run, like trio's autojump clock: a 30-second TTL or a 5-second
deadline takes microseconds of real time and never flakes. :class:`VirtualClock` is a
:class:`~coalestra.core.Clock` reading that loop's time, to inject into builders and caches.
:class:`VirtualTimeRunner` runs coroutines on such a loop (``asyncio.Runner`` with
``loop_factory=VirtualTimeLoop``, on every supported Python: 3.10 has no ``asyncio.Runner``).

While work runs in executor threads (``asyncio.to_thread``, sync sources), virtual time stands
still: the loop waits for the threads for real, so a thread is never "timed out" by a jump.

Example::

    import asyncio
    from coalestra.testing import VirtualClock, VirtualTimeRunner

    async def main() -> None:
        clock = VirtualClock()
        start = clock.monotonic()
        await asyncio.sleep(3600)           # returns at once
        assert clock.monotonic() - start == 3600

    with VirtualTimeRunner() as runner:
        runner.run(main())
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Executor
from typing import Any, TypeVar, cast, final

from ._compat import Runner

__all__ = ["VirtualClock", "VirtualTimeLoop", "VirtualTimeRunner"]

T = TypeVar("T")

# Real seconds to wait for executor threads per loop iteration before looking again.
_THREAD_POLL_SECONDS = 0.05


class _JumpingSelector(selectors.BaseSelector):
    """Wraps a real selector: never blocks for timers, jumps the loop's virtual time instead."""

    def __init__(self, real: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._real = real
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout == 0:
            return self._real.select(0)  # callbacks are ready: never block
        if self._loop._busy_threads:
            # Threads are working in real time: wait for them, keep virtual time still.
            return self._real.select(_THREAD_POLL_SECONDS)
        events = self._real.select(0)
        if events:
            return events
        if timeout is None:
            # No timer at all: only another thread can wake us. Block for real.
            return self._real.select(None)
        self._loop._advance(timeout)
        return []


@final
class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time that jumps to the next timer when idle.

    Args:
        start: the loop's initial ``time()``.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = float(start)
        self._busy_threads = 0
        super().__init__(_JumpingSelector(selectors.DefaultSelector(), self))

    def time(self) -> float:
        """The virtual time."""
        return self._virtual_now

    def _advance(self, seconds: float) -> None:
        self._virtual_now += seconds

    def run_in_executor(  # type: ignore[override]
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        """Run ``func`` in a thread; virtual time stands still until it is done."""
        future = super().run_in_executor(executor, func, *args)
        self._busy_threads += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _future: asyncio.Future[Any]) -> None:
        self._busy_threads -= 1

    async def shutdown_default_executor(self, *args: Any) -> None:
        """Join the default executor's threads with virtual time standing still: on Python
        3.13 the join is bounded by a loop timeout, which virtual time would expire at once."""
        self._busy_threads += 1
        try:
            await super().shutdown_default_executor(*args)
        finally:
            self._busy_threads -= 1


@final
class VirtualClock:
    """A :class:`~coalestra.core.Clock` that reads the running loop's time.

    ``monotonic()`` is ``loop.time()``; ``now()`` adds ``epoch`` so wall-clock stamps look real.
    On a :class:`VirtualTimeLoop` both follow virtual time.

    Args:
        loop: the loop to read; ``None`` reads the running loop at each call.
        epoch: the wall-clock time at loop time 0.
    """

    __slots__ = ("_epoch", "_loop")

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None = None, *, epoch: float = 1_700_000_000.0
    ) -> None:
        self._loop = loop
        self._epoch = float(epoch)

    def monotonic(self) -> float:
        """The loop's time."""
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        return loop.time()

    def now(self) -> float:
        """``epoch + loop.time()``."""
        return self._epoch + self.monotonic()


@final
class VirtualTimeRunner:
    """Runs coroutines on one :class:`VirtualTimeLoop`: ``asyncio.Runner`` with
    ``loop_factory=VirtualTimeLoop``, also on Python 3.10.

    Use it as a context manager; each :meth:`run` continues on the same loop (and clock), and
    leaving the ``with`` cancels what is left and closes the loop.

    Args:
        start: the loop's initial ``time()``.
    """

    __slots__ = ("_runner",)

    def __init__(self, start: float = 0.0) -> None:
        self._runner = Runner(loop_factory=lambda: VirtualTimeLoop(start))

    def __enter__(self) -> VirtualTimeRunner:
        self._runner.get_loop()
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to completion on the loop and return its result."""
        return self._runner.run(coro)

    def get_loop(self) -> VirtualTimeLoop:
        """The runner's loop."""
        return cast("VirtualTimeLoop", self._runner.get_loop())

    def close(self) -> None:
        """Cancel the tasks left, shut the loop down and close it. Idempotent."""
        self._runner.close()
