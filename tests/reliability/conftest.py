"""Shared helpers of the reliability suite: leak checks and suspension counting.

Test modules (and ``soak.py``) import them as ``from tests.reliability.conftest import ...``,
the way the engine tests import ``tests.orchestration.conftest``.

* :func:`leftovers` lists everything a builder left behind: capacity slots in use or waited
  for, single-flight entries, dispatch workers, background refreshes, and tasks that were not
  running before (``asyncio.all_tasks()`` against a baseline).
* :func:`thread_leftovers` lists threads that outlive the default executor's shutdown.
* :class:`SuspensionCounter` is a task factory that counts every suspension of every task
  created while it is installed, and fires a callback at the Nth one: the way the suite injects
  a cancellation (or an ``aclose()``) at each await point of a build in turn.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from coalestra.orchestration import SnapshotBuilder


async def settle(rounds: int = 30) -> None:
    """Let every ready callback run without advancing virtual time."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def task_baseline() -> set[asyncio.Task[Any]]:
    """The tasks alive now (including the caller's), to compare with later."""
    return set(asyncio.all_tasks())


async def leftovers(builder: SnapshotBuilder, baseline: set[asyncio.Task[Any]]) -> list[str]:
    """Everything ``builder`` (and the work it started) still holds, as readable problems."""
    await settle()
    problems: list[str] = []
    for name, snap in (await builder.capacity_snapshot()).items():
        if snap.in_use or snap.waiting:
            problems.append(f"capacity {name!r}: {snap.in_use} in use, {snap.waiting} waiting")
    health = await builder.health_snapshot()
    for label, count in (
        ("single-flight entries", health.singleflight_in_flight),
        ("dispatch workers", health.active_dispatch_workers),
        ("capacity waiters", health.waiting_for_capacity),
        ("background refreshes", health.background_refreshes),
    ):
        if count:
            problems.append(f"{count} {label} left")
    current = asyncio.current_task()
    extra = [
        task
        for task in asyncio.all_tasks()
        if task not in baseline and task is not current and not task.done()
    ]
    if extra:
        names = sorted(repr(task.get_coro()) for task in extra)
        problems.append(f"{len(extra)} tasks left: {names[:5]}")
    return problems


def thread_leftovers(baseline: set[threading.Thread]) -> list[str]:
    """Threads alive now that were not in ``baseline`` (call after the executor shut down)."""
    extra = [t for t in threading.enumerate() if t not in baseline and t.is_alive()]
    return [f"thread left: {thread.name}" for thread in extra]


class _Counted(Coroutine[Any, Any, Any]):
    """A coroutine that drives another one, reporting each suspension to the counter first.

    The task runs this object directly, so a callback that cancels the running task at that
    moment makes ``Task`` cancel the very future being yielded: the cancellation lands exactly
    at this await. (Not an ``async def`` wrapper: one cancelled before its first step would
    leave the wrapped coroutine never awaited.)
    """

    __slots__ = ("_coro", "_counter")

    def __init__(self, coro: Coroutine[Any, Any, Any], counter: SuspensionCounter) -> None:
        self._coro = coro
        self._counter = counter

    def send(self, value: Any) -> Any:
        yielded = self._coro.send(value)
        self._counter.tick()
        return yielded

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        error = typ if val is None else val
        yielded = self._coro.throw(error)
        self._counter.tick()
        return yielded

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield from self._coro.__await__())

    def __repr__(self) -> str:
        return repr(self._coro)


class SuspensionCounter:
    """A task factory counting every suspension of every task created while installed.

    Args:
        fire_at: the suspension (1-based) at which ``action`` runs; ``None``: never.
        action: what to do then (e.g. cancel the build's task).
    """

    def __init__(self, fire_at: int | None = None, action: Callable[[], None] | None = None):
        self.count = 0
        self.fired = False
        self._fire_at = fire_at
        self._action = action
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Any = None

    def tick(self) -> None:
        self.count += 1
        if self.count == self._fire_at and self._action is not None and not self.fired:
            self.fired = True
            self._action()

    def _factory(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any],
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[Any]:
        if context is None:  # Python 3.10's Task takes no context (nor passes one)
            return asyncio.Task(_Counted(coro, self), loop=loop)
        return asyncio.Task(_Counted(coro, self), loop=loop, context=context)

    def __enter__(self) -> SuspensionCounter:
        loop = asyncio.get_running_loop()
        self._loop, self._previous = loop, loop.get_task_factory()
        loop.set_task_factory(self._factory)  # type: ignore[arg-type]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        self._loop.set_task_factory(self._previous)
